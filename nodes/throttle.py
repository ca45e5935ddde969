"""When the live preview decodes a partial image. No ComfyUI or engine import: tests load it on its own."""

from __future__ import annotations

import time

PREVIEW_INTERVAL_S = 0.5  # at most one live preview per half second (issue 8: never slow the loop) ...
PREVIEW_MAX_SHARE = 0.1  # ... and at most ~10% of the wall time where one VQ decode is slow


class PreviewThrottle:
    """When to decode a partial image: by wall-clock time, never by token count, plus the phase's last step.

    The gap after a preview is ``max(PREVIEW_INTERVAL_S, cost * (1 / PREVIEW_MAX_SHARE - 1))``: a decode that
    takes ``cost`` seconds is followed by enough decoding time that previews cost at most that share."""

    def __init__(self, interval: float = PREVIEW_INTERVAL_S, clock=time.monotonic):
        self.interval, self.clock = interval, clock
        self.next_at = clock() + interval

    def restart(self) -> None:
        self.next_at = self.clock() + self.interval

    def due(self, step: int, total: int) -> bool:
        return step >= total or self.clock() >= self.next_at

    def done(self, started: float) -> None:
        now = self.clock()
        self.next_at = now + max(self.interval, (now - started) * (1 / PREVIEW_MAX_SHARE - 1))
