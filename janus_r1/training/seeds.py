"""Seeds derived from a run's seed and named parts, so every random stream (data order, tasks, rollouts) is
reproducible on any number of processes and workers, and a resumed run draws what it would have drawn."""

from __future__ import annotations

import hashlib


def derive_seed(*parts) -> int:
    """A 62-bit seed from ``repr(parts)`` (stable across processes, unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 2
