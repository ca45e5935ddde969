"""Per-phase peak host (and GPU) memory of a training process, for bench/train_memory.py and bench/train_step.py
(``JANUS_R1_MEMORY_TRACE=DIR``).

Linux keeps a process's peak resident set (``VmHWM`` in ``/proc/self/status``) and lets the process reset it
(``5`` into ``/proc/self/clear_refs``), so the peak of each phase (loading, the reference, a training step, a
checkpoint) is read at the phase's end and the counter reset for the next one. Each rank appends JSON lines to
``DIR/rank<r>.jsonl``; nothing here runs unless the variable is set.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_gpu_bytes(reset: bool) -> int | None:
    """The CUDA allocator's peak since the last reset (None without an initialised GPU)."""
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return None
    peak = torch.cuda.max_memory_allocated()
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return int(peak)


def mark(directory: Path, rank: int, phase: str, reset: bool = True, **extra) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rec = {"rank": rank, "phase": phase, "peak_rss": peak_rss_bytes(), "rss": rss_bytes(),
           "peak_gpu": peak_gpu_bytes(reset), "time": time.time(), **extra}
    with open(directory / f"rank{rank}.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")
    if reset:
        reset_peak()


def mark_shard_written(shard: Path, rank: int, seconds: float) -> None:
    """bench/train_memory.py: when this rank's checkpoint shard was on disk, and how big it is."""
    trace = os.environ.get("JANUS_R1_MEMORY_TRACE")
    if trace:
        mark(Path(trace), rank, "checkpoint-written", reset=False, seconds=seconds,
             bytes=shard.stat().st_size if shard.is_file() else 0)
