"""One GEMM for q/k/v and one for gate/up: a decoder layer reads its weights in 4 matrix products, not 7.

Concatenating along the output rows computes each output element as the same dot product, but in a GEMM of
another shape, for which a BLAS may pick another kernel and accumulation order (cuBLAS does; MKL on an AVX-512 CPU
differs by 1 ulp). So only the fast numerics (:mod:`.numerics`, CUDA's default) fuse; the exact ones call
transformers' own projections (:func:`separate_linear`), and tests bound fused against separate outputs, never
compare them bit for bit.

* Float weights: the fused ``(N_q+N_k+N_v, K)`` tensor *is* the storage. It is built once by concatenation, then
  each projection's ``Parameter`` is re-pointed (``.data``) at its own rows. No second copy exists, the modules
  keep working for transformers' forward, an in-place update (an optimizer step, a LoRA patch) lands in both,
  and nothing but the parameters holds the storage: a device move or dtype cast, which replaces each ``.data``,
  simply leaves the rows non-adjacent, which :func:`fused_linear` notices (storage check) and fuses again.
* int4 (:class:`~janus_r1.model.int4.Int4Linear`): the canonical 4-bit values are concatenated and packed once
  for the layer's kernel, so the fused GEMM is still one ``_weight_int4pack_mm``. It is used only if unpacking
  the fused buffer gives back exactly the concatenated values (the kernel reads the weights we meant) and each
  projection's packed bytes are found verbatim inside it (the kernels' tiled layouts keep whole row blocks
  together): then the projection's buffer becomes a view of it, and no second copy of the 4-bit weights exists.
  Else the projections run one by one: a fused copy beside them would cost ~2 GB at 7B, and one whose layout
  does not split by rows would compute other weights. The outcome (fused or not) is cached per first
  projection's buffer object, for as long as that object lives (a re-pack, e.g. on a device move, replaces it
  and drops the entry).
* Anything else (bitsandbytes layers): the projections are called one by one and concatenated.
* Weights whose storage a sharding engine owns -- FSDP2 (the training rollouts run under ``full_params``, on the
  all-gathered copies FSDP2 frees and refills) or DeepSpeed ZeRO (flat buffers the optimizer writes into) -- are
  never re-pointed: that would detach them from the engine's buffers, so the next forward would train on stale
  weights (caught by the 2-process FSDP2 GRPO tests). They are fused only when already adjacent, else called one
  by one.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import weakref
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

BORROWED = "_janus_r1_borrowed_weights"  # set on a model whose weights' storage someone else owns

log = logging.getLogger(__name__)
_INT4: dict[int, tuple[list[weakref.ref], nn.Module | None]] = {}  # id(first packed buffer) -> fused or None


def adjacent_rows(tensors: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The ``(sum N, K)`` tensor over ``tensors`` if they are consecutive row blocks of one storage, else None."""
    first = tensors[0]
    if first.device.type == "meta":
        return None
    ptr, offset = first.untyped_storage().data_ptr(), first.storage_offset()
    for t in tensors:
        same = t.dim() == first.dim() and t.shape[1:] == first.shape[1:] and t.dtype == first.dtype
        if not (same and t.is_contiguous() and t.device == first.device
                and t.untyped_storage().data_ptr() == ptr and t.storage_offset() == offset):
            return None
        offset += t.numel()
    rows = sum(t.shape[0] for t in tensors)
    shape = (rows, *first.shape[1:])
    return first.detach().as_strided(shape, torch.empty(shape, device="meta").stride())


@torch.no_grad()
def _fuse_params(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate, then point every parameter at its rows of the result (in place: same Parameter objects)."""
    fused = torch.cat([p.detach() for p in params])
    for p, rows in zip(params, fused.split([p.shape[0] for p in params])):
        p.data = rows
    return fused


@contextlib.contextmanager
def borrowed_weights(model: nn.Module):
    """While inside, the static runners never re-point ``model``'s weights (they fuse only adjacent ones).

    For a trainer's rollouts: its optimizer or its engine's buffers (DDP, FSDP2, DeepSpeed ZeRO's flat bf16
    buffers, which carry no marker :func:`sharded_by_an_engine` could see) own the storage the next update writes."""
    before = getattr(model, BORROWED, False)
    setattr(model, BORROWED, True)
    try:
        yield
    finally:
        setattr(model, BORROWED, before)


def sharded_by_an_engine(module: nn.Module) -> bool:
    """Whether FSDP2 (``fully_shard`` makes the module an ``FSDPModule``) or DeepSpeed ZeRO (``ds_id`` on its
    parameters) owns the storage of ``module``'s parameters."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch < 2.6: fully_shard still names the class FSDP<cls>
        FSDPModule = None
    if (FSDPModule is not None and isinstance(module, FSDPModule)) or type(module).__name__.startswith("FSDP"):
        return True
    return any(hasattr(p, "ds_id") for p in module.parameters())


def _float_fused(mods: Sequence[nn.Linear], inplace: bool) -> Callable[[torch.Tensor], torch.Tensor] | None:
    weight = adjacent_rows([m.weight for m in mods])
    bias = None if mods[0].bias is None else adjacent_rows([m.bias for m in mods])
    if not inplace and (weight is None or (mods[0].bias is not None and bias is None)):
        return None
    if weight is None:
        weight = _fuse_params([m.weight for m in mods])
    if mods[0].bias is not None and bias is None:
        bias = _fuse_params([m.bias for m in mods])
    return functools.partial(F.linear, weight=weight, bias=bias)


def _is_int4(m: nn.Module) -> bool:
    return type(m).__name__ == "Int4Linear" and hasattr(m, "weight_packed")


@torch.no_grad()
def _build_int4(mods: Sequence[nn.Module]) -> nn.Module | None:
    """The fused layer, its projections' buffers re-pointed at its rows; None where that cannot be exact and
    shared (module docstring): the caller then runs the projections one by one."""
    from ..model.int4 import Int4Linear, pack, unpack

    first = mods[0]
    canonical = torch.cat([m.canonical() for m in mods])
    packed = pack(canonical, first.kernel)
    if not torch.equal(unpack(packed, first.kernel, canonical.shape[0], first.in_features), canonical):
        log.info("int4 q/k/v and gate/up stay separate GEMMs: the %s kernel's fused layout does not unpack to "
                 "the same weights", first.kernel)
        return None
    flat, views, at = packed.view(-1), [], 0
    for m in mods:  # share the bytes where each projection's packed form sits verbatim inside the fused one
        own = m.weight_packed
        view = flat[at:at + own.numel()].view(own.shape) if at + own.numel() <= flat.numel() else None
        if view is None or own.dtype != packed.dtype or not torch.equal(view, own):
            log.info("int4 q/k/v and gate/up stay separate GEMMs: the %s kernel's layout does not split by rows "
                     "(a fused copy would double the 4-bit weights)", first.kernel)
            return None
        views.append(view)
        at += own.numel()
    sz = torch.cat([m.scales_and_zeros for m in mods], dim=1).contiguous()
    bias = None if first.bias is None else torch.cat([m.bias for m in mods])
    fused = Int4Linear(first.in_features, canonical.shape[0], first.group_size, first.kernel, packed, sz, bias)
    for m, view in zip(mods, views):
        m.weight_packed = view
    return fused


def _int4_fused(mods: Sequence[nn.Module]) -> nn.Module | None:
    hit = _INT4.get(id(mods[0].weight_packed))
    if hit is not None and all(r() is m.weight_packed for r, m in zip(hit[0], mods)):
        return hit[1]  # the fused layer, or None: checked before, stays separate
    same = {(m.in_features, m.group_size, m.kernel, m.scales_and_zeros.dtype, m.bias is None) for m in mods}
    if len(same) != 1:
        return None
    fused = _build_int4(mods)
    key = mods[0].weight_packed  # (a view of the fused buffer now, if shared): the entry lives as long as it does
    _INT4[id(key)] = ([weakref.ref(m.weight_packed) for m in mods], fused)
    weakref.finalize(key, _INT4.pop, id(key), None)
    return fused


def separate_linear(mods: Sequence[nn.Module], inplace: bool = True) -> Callable[[torch.Tensor], torch.Tensor]:
    """``cat([m(x) for m in mods], -1)`` with each module's own GEMM, at the shape transformers runs it: what the
    exact numerics use (:mod:`.numerics`). ``inplace`` is accepted for :func:`fused_linear`'s signature; nothing is
    re-pointed here."""
    return lambda x: torch.cat([m(x) for m in mods], dim=-1)


def fused_linear(mods: Sequence[nn.Module], inplace: bool = True) -> Callable[[torch.Tensor], torch.Tensor]:
    """One callable computing ``cat([m(x) for m in mods], -1)`` with as few GEMMs as the layers allow.

    Modules with forward hooks are called as they are (a fused GEMM would skip the hook). ``inplace=False``: the
    parameters' storage belongs to someone else (:func:`sharded_by_an_engine`); fuse only weights that are already
    adjacent, never re-point them."""
    if any(m._forward_hooks or m._forward_pre_hooks for m in mods):
        return mods[0] if len(mods) == 1 else lambda x: torch.cat([m(x) for m in mods], dim=-1)
    if all(type(m) is nn.Linear and m.weight.is_floating_point() for m in mods):
        fused = _float_fused(mods, inplace or len(mods) == 1)
        if fused is not None:
            return fused
        return lambda x: torch.cat([m(x) for m in mods], dim=-1)
    if len(mods) == 1:
        return mods[0]
    if all(_is_int4(m) for m in mods):
        fused = _int4_fused(mods)
        if fused is not None:
            return fused
    return lambda x: torch.cat([m(x) for m in mods], dim=-1)
