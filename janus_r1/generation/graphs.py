"""Capture a fixed-shape decode step once per phase with ``torch.cuda.CUDAGraph`` and replay it.

A 7B decode step is ~1,200 small kernels; launched one by one from Python they, not the weights' bandwidth, set
the pace. Replaying a captured graph launches them all at once. The step body keeps its whole state in
persistent device buffers (the KV cache, the position, the validity bits, the last token, the output columns)
and advances the position itself, so every replay is the next step.

Rules: the first call runs eagerly (it doubles as the warm-up: lazy cuBLAS handles, workspace allocation); the
second call captures and replays; later calls replay. Capture is attempted on CUDA only; anywhere else, or after
any capture error (logged once), the same body runs eagerly -- the same tokens and the same generator state,
because a capture records kernels without running them and the generator is restored from its snapshot.
A custom ``torch.Generator`` must be registered with the graph so each replay advances its Philox offset
exactly as the eager launches would (``CUDAGraph.register_generator_state``, torch >= 2.4); a torch without it
falls back to eager.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass
class CaptureStats:
    """What the benchmark reports: captures made, failures, and the last capture's wall time."""

    captures: int = 0
    failures: int = 0
    last_capture_s: float | None = None


stats = CaptureStats()


def can_capture(device: torch.device) -> bool:
    """Whether steps on ``device`` may be captured (CUDA only; tests patch this to route CPU through capture)."""
    return device.type == "cuda"


def _is_default(generator: torch.Generator) -> bool:
    return any(generator is g for g in torch.cuda.default_generators)


def capture(fn: Callable[[], None], generator: torch.Generator | None):
    """Record ``fn`` into a new ``torch.cuda.CUDAGraph`` (nothing runs); returns an object with ``replay()``."""
    graph = torch.cuda.CUDAGraph()
    if generator is not None and not _is_default(generator):
        register = getattr(graph, "register_generator_state", None)
        if register is None:
            raise RuntimeError("this torch cannot register a custom generator with a CUDA graph")
        register(generator)
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        fn()
    return graph


class GraphedStep:
    """``fn`` (no arguments, results in persistent buffers) run eagerly once, then captured once and replayed."""

    def __init__(self, fn: Callable[[], None], device: torch.device, generator: torch.Generator | None) -> None:
        self.fn, self.generator = fn, generator
        self.eager = not can_capture(device)
        self.calls = 0
        self.graph = None

    def __call__(self) -> None:
        self.calls += 1
        if self.eager or self.calls == 1:
            self.fn()
            return
        if self.graph is None and not self._capture():
            self.fn()
            return
        self.graph.replay()

    def _capture(self) -> bool:
        saved = self.generator.get_state() if self.generator is not None else None
        start = time.perf_counter()
        try:
            self.graph = capture(self.fn, self.generator)
        except Exception as err:  # any capture failure: the same body, eagerly, from the same state
            if saved is not None:
                self.generator.set_state(saved)
            self.eager, self.graph = True, None
            stats.failures += 1
            log.warning("CUDA graph capture failed (%s: %s); this phase decodes eagerly", type(err).__name__, err)
            return False
        stats.captures += 1
        stats.last_capture_s = time.perf_counter() - start
        return True


class Stepper:
    """One decode step ``body(at)``: with an ``int`` step index (eager runners) or, for a fixed-shape runner, a
    device position that the step advances itself -- captured as a CUDA graph when ``graph`` is true."""

    def __init__(self, body: Callable[[int | torch.Tensor], None], fixed: bool, graph: bool,
                 device: torch.device, generator: torch.Generator | None) -> None:
        self.body = body
        self.at = torch.zeros(1, dtype=torch.long, device=device) if fixed else None
        self.graphed = GraphedStep(self._fixed, device, generator) if fixed and graph else None

    def _fixed(self) -> None:
        self.body(self.at)
        self.at.add_(1)

    def close(self) -> None:
        """Drop the graph (and with it its memory pool) now, not at the next garbage collection."""
        self.graphed = None

    def __call__(self, t: int) -> None:
        """Run step ``t`` (steps come in order 0, 1, 2, ... within a phase)."""
        if self.at is None:
            self.body(t)
        elif self.graphed is not None:
            self.graphed()
        else:
            self._fixed()
