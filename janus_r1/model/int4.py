"""Weight-only int4 linear layers on core torch's own kernels (no extra dependency).

Quantisation is group-wise and asymmetric, as in gpt-fast's ``WeightOnlyInt4Linear``: every ``group_size`` inputs
of an output row share a scale ``s`` and a zero ``z``, and a 4-bit value ``q`` in 0..15 stands for
``(q - 8) * s + z``. Three kernels compute the same math on the same quantised weights:

* ``"cuda"``: ``torch.ops.aten._weight_int4pack_mm`` (tinygemm, sm80+), a fused dequantise-and-multiply that reads
  4 bits per weight -- the reason 4-bit can be faster than bf16 at batch 1, where a decode step only streams
  weights. Since torch 2.5 its packer takes ``uint8 [N, K/2]`` (two values per byte, the even column in the high
  nibble); before, ``int32 [N, K]``;
* ``"cpu"``: ``_weight_int4pack_mm_for_cpu`` (torch >= 2.6), so CI runs the int4 path on the CPU;
* ``"reference"``: dequantise to the activation dtype, then ``F.linear`` -- any device, any torch.

The *canonical* form, ``uint8 [N, K/2]`` in the high-nibble-first order above plus ``scales_and_zeros``
``[K / group_size, N, 2]``, is what the quantiser produces and what the reference kernel reads; the fast kernels
re-pack it into their own tiled layouts. Moving a layer to another device unpacks and re-packs (``_apply``), so a
ComfyUI model can go CPU <-> GPU like any other.
"""

from __future__ import annotations

import functools
import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import JanusR1Error

log = logging.getLogger(__name__)

GROUP_SIZES = (256, 128, 64, 32)  # what both fused kernels accept
DEFAULT_GROUP_SIZE = 128
_ROWS = 1024  # rows quantised at a time: bounds the fp32 temporaries to a few MB per chunk


def _torch_at_least(major: int, minor: int) -> bool:
    parts = torch.__version__.split("+")[0].split(".")
    return (int(parts[0]), int(parts[1])) >= (major, minor)


_WARNED_OLD_TORCH = False


def _old_torch(device: torch.device) -> None:
    """Say once, as a warning, that int4 runs the slow reference kernel because this torch lacks the fused one."""
    global _WARNED_OLD_TORCH
    if not _WARNED_OLD_TORCH:
        _WARNED_OLD_TORCH = True
        need = "2.6" if device.type == "cpu" else "2.4"
        log.warning("int4 on %s runs the slow reference kernel: torch %s has no fused int4 kernel for it "
                    "(torch >= %s has one)", device.type, torch.__version__, need)


def has_op(name: str) -> bool:
    """Whether this torch has ``torch.ops.aten.<name>`` (tests patch it to play an older torch)."""
    return hasattr(torch.ops.aten, name)


def fast_kernel(device: torch.device) -> str | None:
    """``"cuda"`` or ``"cpu"`` where torch has a fused int4 kernel for ``device``, else None."""
    device = torch.device(device)
    if device.type == "cuda":
        if torch.version.hip or not torch.cuda.is_available():
            return None
        if not has_op("_weight_int4pack_mm"):
            _old_torch(device)
            return None
        return "cuda" if torch.cuda.get_device_capability(device) >= (8, 0) else None
    if device.type == "cpu":
        ok = has_op("_weight_int4pack_mm_for_cpu") and has_op("_convert_weight_to_int4pack_for_cpu")
        if not ok:
            _old_torch(device)
        return "cpu" if ok else None
    return None


def pick_group_size(in_features: int, requested: int = DEFAULT_GROUP_SIZE) -> int:
    """``requested`` when it divides ``in_features``, else the largest smaller supported size that does."""
    if requested not in GROUP_SIZES:
        raise JanusR1Error(f"int4 group_size must be one of {GROUP_SIZES}, got {requested!r}.")
    for g in GROUP_SIZES:
        if g <= requested and in_features % g == 0:
            return g
    raise JanusR1Error(
        f"int4 needs input widths divisible by {GROUP_SIZES[-1]}; this layer has {in_features} inputs. "
        "Use quantize='8bit' or 'none' for this model."
    )


def _inner_k_tiles(in_features: int) -> int | None:
    return next((t for t in (8, 4, 2) if in_features % (t * 16) == 0), None)


def layer_kernel(device: torch.device, in_features: int, out_features: int) -> str:
    """The kernel one layer runs on ``device``: the fused one where its shape constraints hold, else reference."""
    kernel = fast_kernel(device)
    if kernel == "cuda" and (out_features % 8 or _inner_k_tiles(in_features) is None):
        return "reference"
    if kernel == "cpu" and out_features % 16:
        return "reference"
    return kernel or "reference"


def scale_dtype(kernel: str, compute_dtype: torch.dtype) -> torch.dtype:
    """tinygemm reads bf16 scales; the CPU kernel wants the activation dtype; reference: the compute dtype."""
    return torch.bfloat16 if kernel == "cuda" else compute_dtype


@torch.no_grad()
def quantize_weight(w: torch.Tensor, group_size: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``w [N, K]`` -> canonical ``(uint8 [N, K/2], scales_and_zeros [K/g, N, 2] in dtype)``, on w's device.

    Scale and zero are rounded to their storage dtype *before* the weights are rounded against them, so the
    stored numbers are exactly the ones every kernel dequantises with.
    """
    n, k = w.shape
    q = torch.empty(n, k // 2, dtype=torch.uint8, device=w.device)
    sz = torch.empty(k // group_size, n, 2, dtype=dtype, device=w.device)
    for r in range(0, n, _ROWS):
        g = w[r:r + _ROWS].float().view(-1, k // group_size, group_size)
        lo, hi = g.amin(-1), g.amax(-1)
        scale = ((hi - lo).clamp(min=1e-6) / 15).to(dtype)
        zero = (lo + 8 * scale.float()).to(dtype)
        s, z = scale.float()[..., None], zero.float()[..., None]
        v = ((g - (z - 8 * s)) / s).round_().clamp_(0, 15).to(torch.uint8).view(-1, k)
        q[r:r + _ROWS] = (v[:, ::2] << 4) | v[:, 1::2]
        sz[:, r:r + _ROWS, 0] = scale.T
        sz[:, r:r + _ROWS, 1] = zero.T
    return q, sz


def unpack_values(q: torch.Tensor) -> torch.Tensor:
    """Canonical ``uint8 [N, K/2]`` -> the 4-bit values ``uint8 [N, K]``."""
    return torch.stack((q >> 4, q & 15), -1).view(q.shape[0], -1)


def dequantize(q: torch.Tensor, scales_and_zeros: torch.Tensor, group_size: int) -> torch.Tensor:
    """The float32 weight ``[N, K]`` the canonical form stands for: ``(q - 8) * s + z`` per group."""
    v = unpack_values(q).float()
    n, k = v.shape
    s = scales_and_zeros[..., 0].T.float()[..., None]
    z = scales_and_zeros[..., 1].T.float()[..., None]
    return ((v.view(n, k // group_size, group_size) - 8) * s + z).view(n, k)


def pack(q: torch.Tensor, kernel: str) -> torch.Tensor:
    """Canonical ``q`` (on the target device) -> the layout ``kernel`` reads."""
    if kernel == "reference":
        return q.contiguous()
    if kernel == "cpu":
        return torch.ops.aten._convert_weight_to_int4pack_for_cpu(unpack_values(q).to(torch.int32).contiguous(), 1)
    tiles = _inner_k_tiles(q.shape[1] * 2)
    src = q.contiguous() if _torch_at_least(2, 5) else unpack_values(q).to(torch.int32).contiguous()
    return torch.ops.aten._convert_weight_to_int4pack(src, tiles)


def _mm(kernel: str, x: torch.Tensor, packed: torch.Tensor, group_size: int, sz: torch.Tensor) -> torch.Tensor:
    op = torch.ops.aten._weight_int4pack_mm if kernel == "cuda" else torch.ops.aten._weight_int4pack_mm_for_cpu
    return op(x, packed, group_size, sz)


@torch.no_grad()
def unpack(packed: torch.Tensor, kernel: str, out_features: int, in_features: int) -> torch.Tensor:
    """Kernel layout -> canonical ``q``, on the same device (the inverse of :func:`pack`)."""
    if kernel == "reference":
        return packed
    if kernel == "cpu":
        return _unpack_cpu(packed, out_features, in_features)
    return _unpack_by_identity(packed, out_features, in_features)


def _unpack_by_identity(packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """Read the values back through the kernel itself: with scale 1 and zero 8, ``I @ W.T`` is ``q.T`` exactly
    (integers 0..15 are exact in bf16). Costs a K x K x N matmul: fine on a GPU, used for the tiled CUDA layout."""
    g = pick_group_size(k, GROUP_SIZES[0])
    ones = torch.ones(k // g, n, 1, dtype=torch.bfloat16, device=packed.device)
    sz = torch.cat((ones, 8 * ones), -1)
    values = torch.empty(n, k, dtype=torch.uint8, device=packed.device)
    for k0 in range(0, k, 512):
        rows = min(512, k - k0)
        eye = torch.zeros(rows, k, dtype=torch.bfloat16, device=packed.device)
        eye[torch.arange(rows), torch.arange(k0, k0 + rows)] = 1
        values[:, k0:k0 + rows] = _mm("cuda", eye, packed, g, sz).T.round().to(torch.uint8)
    return (values[:, ::2] << 4) | values[:, 1::2]


def _learn_cpu_layout(n: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Where the CPU packer puts row ``r``: learned from packing probes of shape ``[n, 2]`` (cheap), as
    (nibble shift, byte offset within its block's run of bytes for one k, block height).

    The packer tiles rows into blocks (64 or 32 rows by CPU ISA); inside a block each k is one run of bytes. The
    probes give, for every row, its byte at k=0 and k=1.
    """
    rows = torch.arange(n)
    digits = max(1, math.ceil(math.log(max(n, 2), 16)))
    at = torch.zeros(n * 2, dtype=torch.long)  # nibble position -> row
    for d in range(digits):
        probe = ((rows >> (4 * d)) & 15).to(torch.int32)[:, None].expand(n, 2).contiguous()
        nib = unpack_nibbles_lo_hi(torch.ops.aten._convert_weight_to_int4pack_for_cpu(probe, 1))
        at |= nib.long() << (4 * d)
    marker = torch.tensor([0, 1], dtype=torch.int32).expand(n, 2).contiguous()
    kbit = unpack_nibbles_lo_hi(torch.ops.aten._convert_weight_to_int4pack_for_cpu(marker, 1)).long()
    pos = torch.empty(n, 2, dtype=torch.long)
    pos[at, kbit] = torch.arange(n * 2)
    byte0, byte1 = pos[:, 0] // 2, pos[:, 1] // 2
    block = int((byte1 - byte0).max()) * 2
    return (pos[:, 0] % 2) * 4, byte0 % block, block


@functools.lru_cache(maxsize=64)
def _cpu_layout(n: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """:func:`_learn_cpu_layout`, checked once per row count on random values (a layout this reading does not
    understand is refused rather than misread)."""
    probe = torch.randint(0, 16, (n, 64), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    try:
        layout = _learn_cpu_layout(n)
        ok = torch.equal(_read_cpu(torch.ops.aten._convert_weight_to_int4pack_for_cpu(probe, 1), layout, n, 64),
                         probe.to(torch.uint8))
    except (RuntimeError, IndexError, ZeroDivisionError):
        ok = False
    if not ok:
        raise JanusR1Error(
            "this torch build packs int4 weights for the CPU in a layout janus_r1 cannot read back, so the model "
            "cannot be moved off the CPU; load it directly on its target device (e.g. device='cuda')."
        )
    return layout


def unpack_nibbles_lo_hi(packed: torch.Tensor) -> torch.Tensor:
    """Flat nibbles of a byte tensor, low nibble first (the CPU packer's order within a byte)."""
    flat = packed.reshape(-1)
    return torch.stack((flat & 15, flat >> 4), -1).reshape(-1)


def _read_cpu(packed: torch.Tensor, layout: tuple[torch.Tensor, torch.Tensor, int], n: int, k: int) -> torch.Tensor:
    """The 4-bit values ``uint8 [n, k]`` of a CPU-packed weight."""
    shift, offset, block = layout
    flat, shift = packed.reshape(-1), shift.to(torch.uint8)
    parts, full = [], n // block * block
    # every full block has the same layout, then comes the tail block (if any)
    for start, width, count in ((0, block, n // block), (full, n - full, 1)):
        if not width or not count:
            continue
        runs = flat[start * k // 2:(start + count * width) * k // 2].view(count, k, width // 2)
        v = (runs[:, :, offset[start:start + width]] >> shift[start:start + width]) & 15
        parts.append(v.transpose(1, 2).reshape(count * width, k))
    return torch.cat(parts)


def _unpack_cpu(packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
    values = _read_cpu(packed, _cpu_layout(n), n, k)
    return (values[:, ::2] << 4) | values[:, 1::2]


class Int4Linear(nn.Module):
    """``nn.Linear`` with int4 weights (group-wise, asymmetric) on the fastest kernel the device has.

    Build it with :meth:`from_linear`, which quantises on the target device, one layer at a time: a loader that
    calls it per layer never holds more than one bf16 weight on the GPU. The forward pass has no host sync, so a
    CUDA-graph capture or ``torch.compile`` sees one fused op per layer.
    """

    def __init__(self, in_features: int, out_features: int, group_size: int, kernel: str,
                 packed: torch.Tensor, scales_and_zeros: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.group_size, self.kernel = group_size, kernel
        self.register_buffer("weight_packed", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros)
        self.register_buffer("bias", bias)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, device: torch.device | str,
                    group_size: int = DEFAULT_GROUP_SIZE, compute_dtype: torch.dtype | None = None) -> Int4Linear:
        """Quantise ``linear`` on ``device`` (its weight is copied there alone, then dropped)."""
        device = torch.device(device)
        n, k = linear.out_features, linear.in_features
        g = pick_group_size(k, group_size)
        compute_dtype = compute_dtype or linear.weight.dtype
        kernel = layer_kernel(device, k, n)
        q, sz = quantize_weight(linear.weight.data.to(device), g, scale_dtype(kernel, compute_dtype))
        bias = None if linear.bias is None else linear.bias.data.to(device, compute_dtype)
        return cls(k, n, g, kernel, pack(q, kernel), sz, bias)

    def canonical(self) -> torch.Tensor:
        """The weights in the canonical ``uint8 [N, K/2]`` form, on this layer's device."""
        return unpack(self.weight_packed, self.kernel, self.out_features, self.in_features)

    def dequantized(self) -> torch.Tensor:
        """The float32 weight these int4 numbers stand for (what every kernel multiplies by)."""
        return dequantize(self.canonical(), self.scales_and_zeros, self.group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        if self.kernel == "reference":
            w = dequantize(self.weight_packed, self.scales_and_zeros, self.group_size).to(x.dtype)
            y = F.linear(x2, w)
        else:
            dtype = self.scales_and_zeros.dtype
            y = _mm(self.kernel, x2.to(dtype).contiguous(), self.weight_packed, self.group_size,
                    self.scales_and_zeros).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.view(*shape[:-1], self.out_features)

    @torch.no_grad()
    def repack(self, device: torch.device, dtype: torch.dtype, kernel: str | None = None) -> None:
        """Unpack here, move to ``device``, pack for its kernel (``dtype``: the compute dtype for its scales)."""
        q = self.canonical().to(device)
        self.kernel = kernel or layer_kernel(device, self.in_features, self.out_features)
        self.weight_packed = pack(q, self.kernel)
        self.scales_and_zeros = self.scales_and_zeros.to(device, scale_dtype(self.kernel, dtype))

    def _apply(self, fn, recurse: bool = True):
        """Device moves re-pack (each kernel has its own layout); dtype casts leave the scales' dtype alone."""
        sz = self.scales_and_zeros
        probe = fn(torch.zeros(1, dtype=sz.dtype, device=sz.device))
        if probe.device != sz.device:
            self.repack(probe.device, probe.dtype)
        elif probe.dtype != sz.dtype and self.kernel == "reference":
            self.scales_and_zeros = sz.to(probe.dtype)
        if self.bias is not None:
            self.bias = fn(self.bias)
        return self

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"group_size={self.group_size}, kernel={self.kernel!r}")
