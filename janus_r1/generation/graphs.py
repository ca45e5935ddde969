"""Capture a fixed-shape decode step once per phase with ``torch.cuda.CUDAGraph`` and replay it.

A 7B decode step is ~1,200 small kernels; launched one by one from Python they, not the weights' bandwidth, set
the pace. Replaying a captured graph launches them all at once. The step body keeps its whole state in
persistent device buffers (the KV cache, the position, the validity bits, the last token, the output columns)
and advances the position itself, so every replay is the next step.

Rules:
  * The first ``eager_steps`` calls run eagerly (the first doubles as the warm-up: lazy cuBLAS handles, workspace
    allocation). Text phases use :data:`TEXT_EAGER_STEPS`, so a judgement that ends after "Yes" + EOS never pays
    for a capture.
  * A capture is attempted only while at least :data:`MIN_STEPS_TO_CAPTURE` steps remain: capturing costs about
    one synchronisation plus one step's host time, and each replay saves most of one step's launch overhead, so a
    few replays pay it back; below the threshold the phase stays eager.
  * Capture happens under the model's device (``torch.cuda.device``) on a side stream *of that device*: with the
    model on ``cuda:1`` a stream of the current device (``cuda:0``) would record nothing while the kernels ran
    eagerly on ``cuda:1``, and every replay would do nothing. A device counter that the captured body increments
    proves it: it must read 0 after the capture (nothing ran) and 1 after the first replay (the step ran), else
    the graph is refused.
  * Any capture error, or a refused graph, is logged once with its cause and the phase runs eagerly -- the same
    tokens and the same generator state, because a capture records kernels without running them and the
    generator is restored from its snapshot.
  * A custom ``torch.Generator`` is registered with the graph (``CUDAGraph.register_generator_state``, torch 2.4
    to 2.13) so each replay advances its Philox offset exactly as the eager launches would -- under the model's
    device, since before torch 2.13 the graph-safe seed/offset tensors are allocated on the *current* device (a
    model on ``cuda:1`` would read its RNG state from ``cuda:0``). torch 2.14 tracks generator state per capture
    and deprecates the method: a torch without it has nothing to register.
  * Captures happen only on torch >= :data:`MIN_CAPTURE_TORCH` (:func:`capture_supported`). On torch 2.4-2.12 a
    capture that fails half-way leaves the device's generators marked "capturing": the eager fallback and every
    later random draw on that device (in any ComfyUI node) raise, and no public API restores them. There the
    ``graph`` runner decodes with the eager static step instead, with one warning saying why.
  * One side stream per device, made once and reused by every capture: a new stream per capture pins a cuBLAS
    workspace per stream on older torch (up to ~1 GiB over a long ComfyUI session).
  * Models whose layers synchronise with the host (bitsandbytes 8-bit, accelerate's offload hooks) are never
    captured (:func:`host_sync_reason`).

:class:`Pacer` keeps the host a few steps ahead of the device when progress hooks are set, so a progress bar, a
live preview and Cancel follow the real work instead of a queue of replays.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

MIN_CAPTURE_TORCH = (2, 13)  # the first torch whose failed capture leaves the generators usable
MIN_STEPS_TO_CAPTURE = 8  # steps left (this one included) below which a capture cannot pay for itself
TEXT_EAGER_STEPS = 4  # a text phase runs this many steps eagerly first: most judgements end by then
PACE_STEPS = 6  # with hooks set, the host stays at most this many steps ahead of the device


@dataclass
class CaptureStats:
    """What the benchmark reports: captures made, failures, and the last capture's wall time."""

    captures: int = 0
    failures: int = 0
    last_capture_s: float | None = None


stats = CaptureStats()


def torch_version() -> tuple[int, int]:
    """(major, minor) of the running torch (tests patch ``torch.__version__``)."""
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


_WARNED: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """Log ``message`` as a warning the first time ``key`` is seen in this process (a feature that is off)."""
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(message)


def capture_supported() -> bool:
    """Whether this torch may capture CUDA graphs (:data:`MIN_CAPTURE_TORCH`, module docstring); warns once if not."""
    if torch_version() >= MIN_CAPTURE_TORCH:
        return True
    warn_once("capture", f"CUDA graphs are off: torch {torch.__version__} is older than "
                         f"{'.'.join(map(str, MIN_CAPTURE_TORCH))}, where a failed capture leaves the GPU's random "
                         "generators unusable; decoding eagerly (slower per token, the same tokens). Upgrade torch "
                         "to get CUDA graphs.")
    return False


def can_capture(device: torch.device) -> bool:
    """Whether steps on ``device`` may be captured (CUDA only; tests patch this to route CPU through capture)."""
    return device.type == "cuda"


def host_sync_reason(model) -> str | None:
    """Why ``model``'s decoder cannot be captured, or ``None``: layers that read values back to the host or move
    weights in hooks (bitsandbytes' ``Linear8bitLt`` outlier handling, accelerate's offload hooks) would break
    a capture or record a graph that is wrong on replay."""
    if getattr(model, "hf_device_map", None):
        return "its layers are offloaded (accelerate hooks)"
    for module in model.model.language_model.modules():
        if type(module).__name__ == "Linear8bitLt":
            return "bitsandbytes 8-bit layers synchronise with the host"
        if getattr(module, "_hf_hook", None) is not None:
            return "its layers are offloaded (accelerate hooks)"
    return None


def _is_default(generator: torch.Generator) -> bool:
    return any(generator is g for g in torch.cuda.default_generators)


def register_generator(graph, generator: torch.Generator | None) -> bool:
    """Register a custom generator with ``graph`` where this torch asks for it; ``False`` when there is nothing
    to register (no generator, a default one, or a torch that tracks generator state per capture by itself)."""
    if generator is None or _is_default(generator):
        return False
    register = getattr(graph, "register_generator_state", None)
    if register is None:  # removed after its deprecation in torch 2.14: state is tracked per capture
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        register(generator)
    return True


_STREAMS: dict[torch.device, object] = {}  # one capture side stream per device, reused by every capture


def side_stream(device: torch.device):
    """The capture side stream of ``device``, made on first use (a stream per capture pins a cuBLAS workspace
    each on older torch)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    stream = _STREAMS.get(device)
    if stream is None:
        stream = _STREAMS[device] = torch.cuda.Stream(device=device)
    return stream


def capture(fn: Callable[[], None], generator: torch.Generator | None, device: torch.device):
    """Record ``fn`` into a new ``torch.cuda.CUDAGraph`` on ``device``'s side stream (nothing runs).

    Everything, the generator's registration included, happens under ``device`` (module docstring). The stream
    context is our own, so a body that raises ends the capture and leaves the stream before the original error
    propagates (``capture_end`` after a failed body raises its own, less useful error: ignored).
    """
    with torch.cuda.device(device):
        graph = torch.cuda.CUDAGraph()
        register_generator(graph, generator)
        current = torch.cuda.current_stream(device)
        side = side_stream(device)
        side.wait_stream(current)
        current.synchronize()
        with torch.cuda.stream(side):
            graph.capture_begin(capture_error_mode="thread_local")
            try:
                fn()
            except BaseException:
                with contextlib.suppress(Exception):
                    graph.capture_end()
                raise
            graph.capture_end()
        current.wait_stream(side)
    return graph


class GraphRefused(RuntimeError):
    """The capture succeeded but the graph does not run the step (e.g. recorded on another device's stream)."""


class GraphedStep:
    """``fn`` (no arguments, results in persistent buffers) run eagerly ``eager_steps`` times, then captured once
    -- if enough steps remain -- and replayed."""

    def __init__(self, fn: Callable[[], None], device: torch.device, generator: torch.Generator | None,
                 eager_steps: int = 1) -> None:
        self.fn, self.device, self.generator = fn, device, generator
        self.eager = not (can_capture(device) and capture_supported())
        self.eager_steps = max(1, eager_steps)
        self.calls = 0
        self.graph = None
        self.ran = torch.zeros(1, dtype=torch.int32, device=device)  # incremented by the captured body

    def _marked(self) -> None:
        self.fn()
        self.ran.add_(1)

    def __call__(self, remaining: int = MIN_STEPS_TO_CAPTURE) -> None:
        """Run one step; ``remaining``: steps left in the phase, this one included."""
        self.calls += 1
        if self.graph is not None:
            self.graph.replay()
            return
        if self.eager or self.calls <= self.eager_steps:
            self.fn()
            return
        if remaining < MIN_STEPS_TO_CAPTURE:
            self.eager = True  # fewer steps left than a capture needs to pay off; it only gets worse
            self.fn()
            return
        self._capture_and_replay()

    def _refuse(self, why: str, saved) -> None:
        if saved is not None:
            self.generator.set_state(saved)
        self.eager, self.graph = True, None
        stats.failures += 1
        log.warning("CUDA graph capture failed (%s); this phase decodes eagerly", why)

    def _capture_and_replay(self) -> None:
        """Capture, check, replay once (this call's step); on any failure run the step eagerly instead."""
        saved = self.generator.get_state() if self.generator is not None else None
        start = time.perf_counter()
        self.ran.zero_()
        try:
            graph = capture(self._marked, self.generator, self.device)
            if int(self.ran.item()) != 0:  # the body ran outside the graph: this step is done, the graph is empty
                self.eager, self.graph = True, None
                stats.failures += 1
                log.warning("CUDA graph capture failed (%s); this phase decodes eagerly",
                            "GraphRefused: the step ran during capture, outside the graph (device mismatch?)")
                return
            graph.replay()
            if int(self.ran.item()) != 1:
                raise GraphRefused(f"the captured graph is empty: a replay did not run the step on {self.device}")
        except Exception as err:  # any capture failure: the same body, eagerly, from the same state
            self._refuse(f"{type(err).__name__}: {err}", saved)
            self.fn()
            return
        self.graph = graph
        stats.captures += 1
        stats.last_capture_s = time.perf_counter() - start


class Stepper:
    """One decode step ``body(at)``: with an ``int`` step index (eager runners) or, for a fixed-shape runner, a
    device position that the step advances itself -- captured as a CUDA graph when ``graph`` is true.
    ``steps``: how many steps the phase has at most (decides whether a capture pays)."""

    def __init__(self, body: Callable[[int | torch.Tensor], None], fixed: bool, graph: bool,
                 device: torch.device, generator: torch.Generator | None, steps: int = 1 << 30,
                 eager_steps: int = 1) -> None:
        self.body, self.steps = body, steps
        self.at = torch.zeros(1, dtype=torch.long, device=device) if fixed else None
        self.graphed = GraphedStep(self._fixed, device, generator, eager_steps) if fixed and graph else None

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
            self.graphed(self.steps - t)
        else:
            self._fixed()


def new_event(device: torch.device):
    """A CUDA event recorded on ``device``'s current stream (tests patch this to pace on the CPU). Blocking: the
    host sleeps in ``synchronize`` instead of spinning a CPU core for the whole decode."""
    event = torch.cuda.Event(blocking=True)
    event.record(torch.cuda.current_stream(device))
    return event


def can_pace(device: torch.device) -> bool:
    """Whether the host can run ahead of ``device`` at all (CUDA: kernels are queued, not run)."""
    return device.type == "cuda"


class Pacer:
    """Keeps the host at most ``ahead`` steps in front of the device while someone watches (progress hooks).

    Without it nothing waits per token and the loop queues a whole phase of replays in milliseconds: ComfyUI's
    progress bar jumps to the end, the live preview appears at the end, Cancel is seen when the phase is over.
    Each step records an event and waits on the one recorded ``ahead`` steps earlier, which has long finished in
    steady state, so the device never starves (the cost is one event per step).
    """

    def __init__(self, device: torch.device, active: bool, ahead: int = PACE_STEPS) -> None:
        self.device, self.ahead = device, max(1, ahead)
        self.on = active and can_pace(device)
        self.pending: deque = deque()
        self.waited = 0

    def tick(self) -> None:
        """After a step is queued: record it; wait for the step ``ahead`` steps back."""
        if not self.on:
            return
        self.pending.append(new_event(self.device))
        if len(self.pending) > self.ahead:
            self.pending.popleft().synchronize()
            self.waited += 1
