"""Which numerics the static runners use: exact (transformers' own GEMMs at its shapes and its roundings, the CPU's
default: the eager runner's logits equal transformers' on any CPU) or fast (concatenated q/k/v and gate/up GEMMs,
:mod:`.fused`, and the two one-rounding fusions of :mod:`.layers`: norm weight inside ``F.rms_norm``, RoPE as one
``addcmul``), CUDA's default, where any change of GEMM shape already costs bit identity. :mod:`.logit_check`
bounds the difference.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from ..errors import JanusR1Error

NUMERICS_ENV = "JANUS_R1_NUMERICS"


def fast_numerics(device: torch.device) -> bool:
    """Whether the static runners use the fused GEMMs and one-rounding fusions (module docstring): ``JANUS_R1_NUMERICS`` if
    set (``exact`` or ``fast``), else on CUDA only."""
    choice = os.environ.get(NUMERICS_ENV, "").strip().lower()
    if choice not in ("", "exact", "fast"):
        raise JanusR1Error(f"{NUMERICS_ENV} must be 'exact' or 'fast' (got {choice!r}); unset, it is fast on CUDA "
                           "and exact elsewhere")
    return choice == "fast" if choice else device.type == "cuda"


@contextlib.contextmanager
def numerics(mode: str | None) -> Iterator[None]:
    """Runners built inside use ``mode`` (``exact`` / ``fast``; None: the device's default)."""
    saved = os.environ.pop(NUMERICS_ENV, None)
    if mode is not None:
        os.environ[NUMERICS_ENV] = mode
    try:
        yield
    finally:
        os.environ.pop(NUMERICS_ENV, None)
        if saved is not None:
            os.environ[NUMERICS_ENV] = saved


def rms_norm_fused() -> bool:
    """Whether this torch has the fused CUDA kernel of ``F.rms_norm`` (``aten._fused_rms_norm``, torch 2.8 on);
    before it CUDA runs the decomposition too (more kernels, the same numbers)."""
    return hasattr(torch.ops.aten, "_fused_rms_norm")
