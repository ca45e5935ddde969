"""Learning-rate schedules (spec C.7 / Table 5) as factors of the peak LR for ``torch.optim.lr_scheduler.LambdaLR``.

``LambdaLR`` evaluates the factor at ``step`` = the number of optimizer steps already taken, so the update of step
``s + 1`` uses ``factor(s)``. The warm-up is counted in updates: update ``n`` (1-based) of the warm-up uses
``start + (peak - start) n / warmup`` -- the first update is never a no-op at LR 0, and update ``warmup`` is at the
peak.
"""

from __future__ import annotations

import math


def _warmup(step: int, warmup: int, start: float, peak: float) -> float:
    return start + (peak - start) * (step + 1) / warmup


class SFTSchedule:
    """Linear warm-up from ``start`` (exclusive) to ``peak`` over ``warmup`` updates, cosine to ``minimum`` at
    ``total``."""

    def __init__(self, peak: float, warmup: int, total: int, start: float = 0.0, minimum: float = 0.0) -> None:
        self.peak, self.warmup, self.total, self.start, self.minimum = peak, warmup, total, start, minimum

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return _warmup(step, self.warmup, self.start, self.peak) / self.peak
        span = max(self.total - self.warmup, 1)
        t = min((step - self.warmup) / span, 1.0)
        return (self.minimum + (self.peak - self.minimum) * 0.5 * (1 + math.cos(math.pi * t))) / self.peak


class GRPOSchedule:
    """Warm-up 0 (exclusive) -> ``peak`` over ``warmup`` updates, linear to ``convert`` at ``convert_steps``, then
    linear (code) or cosine (paper) to ``minimum`` at ``total``."""

    def __init__(self, peak, warmup, convert, convert_steps, minimum, total, decay="cosine") -> None:
        self.peak, self.warmup, self.convert, self.convert_steps = peak, warmup, convert, convert_steps
        self.minimum, self.total, self.decay = minimum, total, decay

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            lr = _warmup(step, self.warmup, 0.0, self.peak)
        elif step < self.convert_steps:
            lr = self.peak + (self.convert - self.peak) * (step - self.warmup) / (self.convert_steps - self.warmup)
        else:
            t = min((step - self.convert_steps) / max(self.total - self.convert_steps, 1), 1.0)
            w = t if self.decay == "linear" else 0.5 * (1 - math.cos(math.pi * t))
            lr = self.convert + (self.minimum - self.convert) * w
        return lr / self.peak
