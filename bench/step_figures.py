"""Per-step figures that do not mislead, for ``device_check.py`` and ``decode_speed.py``.

* :func:`ms_per_step`: decode the *same* context to two lengths and divide the difference by the extra steps: the
  prefill, the context building, the first (eager warm-up) step cancel out, and the time spent capturing CUDA
  graphs in between (one capture per attention bucket) is measured and subtracted.
* :func:`capture_clock`: total wall time spent in ``graphs.capture`` inside a block. The device is synchronised
  *before* each capture's clock starts: a capture begins by waiting out the replays the previous bucket queued
  (nothing paces the host without hooks), and that wait is decode time, not capture time. Counted as capture
  time, it was subtracted from the long run (more bucket boundaries) more than from the short one, and the step
  came out far too fast or negative.
* :func:`copy_gbps`: the card's achievable bandwidth, from a large device-to-device copy (read + write bytes).
* :func:`implausible_step`: a step cannot beat the bytes it reads at the card's measured copy rate; a figure
  that does is reported as such (null, with the reason), never printed as a speed.
* ``teacher_forced`` (from :mod:`janus_r1.generation.logit_check`): logits of the fixed-shape step (what a CUDA graph
  replays) against transformers' own forward (the ``dynamic`` runner) on the same image tokens.
"""

from __future__ import annotations

import contextlib
import time

import torch

from janus_r1.generation import graphs
from janus_r1.generation.context import Context


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def capture_clock():
    """Yields a one-element list holding the seconds spent capturing graphs so far inside the block."""
    spent, real = [0.0], getattr(graphs, "capture", None)
    if real is None:  # nothing to time on a graphs module without it
        yield spent
        return

    def timed(*args, **kwargs):
        device = kwargs.get("device", args[2] if len(args) > 2 else None)
        if device is not None:
            sync(torch.device(device))  # queued replays of the previous bucket: decode time, not capture time
        t = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t

    graphs.capture = timed
    try:
        yield spent
    finally:
        graphs.capture = real


def ms_per_step(run_n, device: torch.device, n_short: int, n_long: int, repeats: int = 3) -> float:
    """``run_n(n)`` decodes ``n`` tokens from the same context; ms per step from the difference of the best
    time of each length (best of ``repeats``), capture time subtracted."""
    run_n(n_short)  # warm-up: lazy handles, allocator
    best = {n_short: float("inf"), n_long: float("inf")}
    for _ in range(repeats):
        for n in (n_short, n_long):  # alternated, so both lengths see the same load
            with capture_clock() as cap:
                sync(device)
                t = time.perf_counter()
                run_n(n)
                sync(device)
                best[n] = min(best[n], time.perf_counter() - t - cap[0])
    return (best[n_long] - best[n_short]) * 1e3 / (n_long - n_short)


def implausible_step(ms: float | None, bytes_per_step: int, gbps: float | None, slack: float = 0.9) -> str | None:
    """Why ``ms`` per step cannot be true, or None: not positive, or faster than reading ``bytes_per_step`` at
    ``gbps`` (the card's measured copy rate; ``slack`` allows for the copy figure's own error)."""
    if ms is None:
        return None
    if ms <= 0:
        return f"{ms:.4g} ms per step is not positive"
    if gbps:
        floor = bytes_per_step / (gbps * 1e9) * 1e3
        if ms < slack * floor:
            return (f"{ms:.4g} ms per step beats reading its {bytes_per_step / 1e9:.3g} GB at the measured "
                    f"{gbps:.4g} GB/s ({floor:.4g} ms)")
    return None


def copy_gbps(device: torch.device, gib: float = 2.0) -> float | None:
    """Achievable device bandwidth (GB/s) of a large copy, counting bytes read plus bytes written."""
    if device.type != "cuda":
        return None
    src = torch.empty(int(gib * 2**30) // 2, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync(device)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - t)
    del src, dst
    return 2 * gib * 2**30 / best / 1e9


def long_context(ctx: Context, positions: int) -> Context:
    """The context repeated along the sequence up to about ``positions`` (a round-3 regeneration is ~2,300)."""
    k = max(1, positions // ctx.embeds.shape[1])
    return Context(ctx.embeds.repeat(1, k, 1), ctx.mask.repeat(1, k))
