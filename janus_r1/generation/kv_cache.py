"""A preallocated K/V cache for one decode phase (gpt-fast's ``KVCache``, one object for every layer).

Allocated once per phase at its full length (context + new tokens), so a step never concatenates or reallocates
and a CUDA graph captured over it reads and writes the same addresses on every replay. Each layer's keys and
values share one buffer ``(2, rows, kv_heads, total, head_dim)``: the step computes the rotated keys and the
values as adjacent slices of one tensor, so writing both is one copy, not two.
"""

from __future__ import annotations

import torch


class KVCache:
    """Per-layer key/value buffers for positions ``0 .. total-1``; ``k[i]``/``v[i]`` are views of ``kv[i]``."""

    def __init__(self, layers: int, rows: int, kv_heads: int, total: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        shape = (2, rows, kv_heads, total, head_dim)
        self.kv = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.k = [buf[0] for buf in self.kv]
        self.v = [buf[1] for buf in self.kv]

    def write(self, layer: int, at: int | torch.Tensor, kv: torch.Tensor, offset: int = 0) -> None:
        """Store ``kv`` (2, rows, kv_heads, q, head_dim) at positions ``offset + at ..``.

        ``at`` an ``int``: a slice assignment (prefill and the eager step). ``at`` a device tensor of ``q`` step
        indices: an ``index_copy_`` of the new positions -- the fixed-shape step (one index) and the fixed-shape
        Jacobi window (``q`` of them), whose positions never leave the device.
        """
        buf = self.kv[layer]
        if isinstance(at, torch.Tensor):
            (buf[:, :, :, offset:] if offset else buf).index_copy_(3, at, kv)
        else:
            buf[:, :, :, offset + at:offset + at + kv.shape[3]] = kv

    def read(self, layer: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of positions ``0 .. end-1`` (views, no copy)."""
        buf = self.kv[layer][:, :, :, :end]
        return buf[0], buf[1]
