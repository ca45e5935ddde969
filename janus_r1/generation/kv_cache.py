"""A preallocated K/V cache for one decode phase (gpt-fast's ``KVCache``, one object for every layer).

Allocated once per phase at its full length (context + new tokens), so a step never concatenates or reallocates
and a CUDA graph captured over it reads and writes the same addresses on every replay.
"""

from __future__ import annotations

import torch


class KVCache:
    """Per-layer key/value buffers (rows, kv_heads, total, head_dim) for positions ``0 .. total-1``."""

    def __init__(self, layers: int, rows: int, kv_heads: int, total: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        shape = (rows, kv_heads, total, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]

    def update(self, layer: int, at: int | torch.Tensor, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k``/``v`` (rows, kv_heads, q, head_dim) at position ``at``; return what attention reads.

        ``at`` an ``int``: positions ``at .. at+q`` are written by slicing and the cache *up to there* is returned
        (prefill and the eager step). ``at`` a 1-element device tensor: the new position is written with
        ``index_copy_`` and the *whole* buffer is returned, to be read under a validity mask -- the fixed-shape
        step, whose position never leaves the device."""
        ks, vs = self.k[layer], self.v[layer]
        if isinstance(at, torch.Tensor):
            ks.index_copy_(2, at, k)
            vs.index_copy_(2, at, v)
            return ks, vs
        end = at + k.shape[2]
        ks[:, :, at:end] = k
        vs[:, :, at:end] = v
        return ks[:, :, :end], vs[:, :, :end]
