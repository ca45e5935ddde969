"""Kernels per decode step, from an operator log: what the tests bound and what ``bench/device_check.py`` prints.

A decode step is bandwidth-bound only once its kernels are few: every kernel is a launch (a graph node on CUDA),
and every elementwise kernel re-reads its input. :func:`step_kernels` runs a short image phase on the fixed-shape
step and logs the ATen operators of one step (a ``TorchDispatchMode``, so it works on any device, CPU included),
once with every decoder layer and once with the first layer only, which splits the count into *per layer* and
*per step* (embedding, heads, sampler, bookkeeping).

What counts as a kernel: every operator except views and allocations (they launch nothing). ``F.rms_norm`` counts
as one where this torch has the fused CUDA kernel (``aten._fused_rms_norm``, torch 2.8 on; on the CPU it still
decomposes into six, which ``cpu_ops`` shows); on an older torch CUDA runs the same decomposition, so each of its
operators counts (:func:`rms_norm_is_one_kernel`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from .numerics import rms_norm_fused

NOT_KERNELS = ("aten._unsafe_view.", "aten.empty.", "aten.empty_like.", "aten.empty_strided.", "aten.detach.",
               "aten.lift_fresh.", "aten._reshape_alias.", "aten.alias.", "aten.set_.")
FUSED_ON_CUDA = (F.rms_norm,)


def rms_norm_is_one_kernel() -> bool:
    """Whether this torch runs ``F.rms_norm`` on CUDA as one fused kernel (:func:`.numerics.rms_norm_fused`)."""
    return rms_norm_fused()


class OpLog(TorchDispatchMode):
    """Every ATen call: name, input shapes and devices (a cross-device copy shows as a device change), and
    whether it launches a kernel. Calls inside an op of ``FUSED_ON_CUDA`` are logged as that one op."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple] = []
        self.kernel: list[bool] = []
        self.cpu_ops = 0
        self.inside = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        launches = not func.is_view and not name.startswith(NOT_KERNELS)
        self.cpu_ops += launches
        if not self.inside:
            flat = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            devices = {str(a.device) for a in flat} | ({str(kwargs["device"])} if kwargs.get("device") else set())
            self.ops.append((name, tuple(tuple(a.shape) for a in flat), tuple(sorted(devices))))
            self.kernel.append(launches)
        return func(*args, **kwargs)

    def kernels(self) -> list[str]:
        return [op[0] for op, k in zip(self.ops, self.kernel) if k]


class _Fused(TorchFunctionMode):
    """Log a call of ``FUSED_ON_CUDA`` as one kernel, whatever it decomposes into on this device."""

    def __init__(self, log: OpLog) -> None:
        super().__init__()
        self.log = log

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func not in FUSED_ON_CUDA or (func is F.rms_norm and not rms_norm_is_one_kernel()):
            return func(*args, **(kwargs or {}))
        self.log.ops.append((f"fused.{func.__name__}", (), ()))
        self.log.kernel.append(True)
        self.log.inside += 1
        try:
            return func(*args, **(kwargs or {}))
        finally:
            self.log.inside -= 1


class logged:  # noqa: N801 - used like a function: ``with logged() as log:``
    """``with logged() as log:`` -- an :class:`OpLog` with ``FUSED_ON_CUDA`` ops collapsed to one kernel."""

    def __enter__(self) -> OpLog:
        self.log = OpLog()
        self.fused = _Fused(self.log)
        self.fused.__enter__()
        self.log.__enter__()
        return self.log

    def __exit__(self, *exc) -> None:
        self.log.__exit__(*exc)
        self.fused.__exit__(*exc)


def _one_step_log(model, ctx, sampling, generator) -> OpLog:
    from . import graphs
    from .decode import decode_image

    logs: list[OpLog] = []
    original = graphs.Stepper._fixed

    def spy(self):
        with logged() as log:
            original(self)
        logs.append(log)

    graphs.Stepper._fixed = spy
    try:
        decode_image(model, ctx, 3, 5.0, sampling, generator, runner="fixed")
    finally:
        graphs.Stepper._fixed = original
    return logs[-1]


@torch.no_grad()
def step_kernels(model, ctx, sampling, generator_fn) -> dict:
    """Kernels of one fixed-shape image step (CFG pair rows of ``ctx``): ``per_layer``, ``per_step`` (outside
    the layers), ``total`` at this depth, and the CPU's own operator count of the step (``cpu_ops``)."""
    lm = model.model.language_model
    full = _one_step_log(model, ctx, sampling, generator_fn())
    layers = lm.layers
    lm.layers = torch.nn.ModuleList(list(layers)[:1])
    try:
        one = _one_step_log(model, ctx, sampling, generator_fn())
    finally:
        lm.layers = layers
    n = len(layers)
    per_layer = (len(full.kernels()) - len(one.kernels())) // max(n - 1, 1)
    return {"per_layer": per_layer, "per_step": len(one.kernels()) - per_layer, "total": len(full.kernels()),
            "layers": n, "cpu_ops": full.cpu_ops}
