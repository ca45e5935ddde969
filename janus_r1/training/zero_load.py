"""ZeRO-3 weights partitioned from the start (``sharding: zero3``, ``load_sharded: true``): no rank ever holds the
whole model.

Why: before, every rank loaded the full model in the run's dtype and ``deepspeed.initialize`` partitioned it
afterwards -- at 7B, 8 x ~30 GB of host memory at once before anything was sharded. Here the policy is the meta
skeleton of :func:`materialise.skeleton` and the weights come one full tensor at a time (the model's safetensors
through ``safe_open``, the DeepSeek layout converted per tensor, :func:`materialise.source_tensors`; or a sharded
checkpoint through DCP): each tensor becomes a real parameter in the dtype DeepSpeed would have cast it to, is
turned into a ZeRO-3 parameter with DeepSpeed's own partitioning (``param.ds_tensor`` keeps this rank's slice of the
flattened, padded tensor: offset ``rank * ceil(numel / world)``) and the full tensor is freed before the next one is
read. ``deepspeed.initialize`` then finds every parameter already partitioned (a "zero.Init model") and builds the
fp32 masters from the partitions -- the same values as before (the bf16 cast of the loaded weights in bf16 mode).

Peak host memory per rank while loading: its partitions + one full tensor (+ the frozen encoders' exact values on
the main process, below). What stays as before: the frozen SigLIP / VQ weights and buffers have no fp32 master,
so their exact values (the run's ``dtype``) are kept on the main process for checkpoints and the export -- a full
copy of the frozen encoders only (~0.4 B parameters at 7B, 1.6 GB in fp32 on one rank; the language model, the
bulk, is never whole anywhere).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..errors import JanusR1Error


def _init(mixed_precision: str, grad_clip: float, dtype: torch.dtype, persist_numel: int):
    """A ``deepspeed.zero.Init`` that is never entered: its partitioning of single parameters is used. Built with an
    (empty) module like DeepSpeed's engine builds its own for an unpartitioned model, so that it also swaps in
    ZeRO-3's memory-efficient ``F.linear`` exactly as the full-load path does (same arithmetic, same results)."""
    from .zero import _deepspeed, _one_process_group, ds_config

    deepspeed = _deepspeed()
    _one_process_group()
    init = deepspeed.zero.Init(module=torch.nn.Module(), config_dict_or_path=ds_config(3, mixed_precision, grad_clip,
                                                                                        persist_numel),
                               dtype=dtype)
    if not hasattr(init, "_convert_to_deepspeed_param"):
        raise JanusR1Error(f"DeepSpeed {deepspeed.__version__} no longer partitions single parameters the way "
                           "zero_load.py expects; set load_sharded: false (a full copy per rank) or use sharding: fsdp")
    return init


@torch.no_grad()
def partition_from(model: torch.nn.Module, tensors: Iterable[tuple[str, torch.Tensor]], dtype: torch.dtype,
                   keep: torch.dtype, mixed_precision: str, grad_clip: float, main: bool,
                   source: str, persist_numel: int) -> dict[str, torch.Tensor]:
    """Fill ``model``'s (meta or real) parameters from ``tensors`` (``(state-dict name, full tensor)``), each
    partitioned at once in ``dtype``; buffers are copied. Returns the frozen parameters' and buffers' exact values
    in ``keep`` (the loaded dtype) on the ``main`` process, ``{}`` elsewhere. Strict like the loader: every
    parameter and persistent buffer exactly once."""
    init = _init(mixed_precision, grad_clip, dtype, persist_numel)
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    expected = set(model.state_dict())
    frozen: dict[str, torch.Tensor] = {}
    seen: set[str] = set()
    for key, full in tensors:
        if key not in expected or key in seen:
            raise JanusR1Error(f"{source}: the weight files hold {key} "
                               f"{'twice' if key in seen else 'which this model does not have'}")
        t = params.get(key, buffers.get(key))
        if tuple(t.shape) != tuple(full.shape):
            raise JanusR1Error(f"{source}: {key} has shape {list(full.shape)}, the model expects {list(t.shape)}")
        floating = full.is_floating_point() and t.is_floating_point()
        if key in buffers:
            t.copy_(full.to(t.dtype))
        else:
            if main and not t.requires_grad:
                frozen[key] = full.to(keep if floating else t.dtype, copy=True)
            q = torch.nn.Parameter(full.to(device=init.local_device, dtype=dtype if floating else t.dtype,
                                           copy=True).contiguous(), requires_grad=t.requires_grad)  # as DeepSpeed
            owner, _, leaf = key.rpartition(".")
            model.get_submodule(owner)._parameters[leaf] = q
            init._convert_to_deepspeed_param(q)
            q.partition()  # keeps this rank's slice in q.ds_tensor and frees the full tensor
        seen.add(key)
        del full
    missing = expected - seen
    if missing:
        raise JanusR1Error(f"{source}: the weight files lack {len(missing)} tensor(s), e.g. {sorted(missing)[:3]}")
    # DeepSpeed numbers parameters as it converts them (file order here); ZeRO-3 reduces gradients in that order,
    # so number them in module order like its own conversion does: the same sums, bit for bit
    ids = sorted(p.ds_id for p in model.parameters())
    for i, p in zip(ids, model.parameters(), strict=True):
        p.ds_id = i
    if main:
        frozen.update({k: b.detach().clone() for k, b in model.state_dict(keep_vars=True).items()
                       if k in buffers})
    return frozen
