"""How far a node's run is, as one bar that only moves forward. No ComfyUI or engine import: tests load it alone.

The engine reports steps per decode phase (``image``: the image tokens of one drawing; ``text``: one judgement or
answer, which may stop early at its EOS), each counted from 1. A CoT run is several phases (image 1, judge 1,
image 2, ...); a bar that restarted with each phase made ComfyUI's "Total" stall and jump back (issue 25). Here
the node says up front how many phases of each kind its run may take (:class:`Work`); each phase fills its own
slot of the one bar, and a run that ends early (accepted in round 1) is brought to the end by ``finish``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Work:
    """The most a node's run may decode: ``images`` image phases and ``texts`` text phases of ``text_steps``
    tokens each (the image phases' length comes from the model)."""

    images: int = 0
    texts: int = 0
    text_steps: int = 1


class WorkBar:
    """``value`` / ``total`` over a whole run; ``value`` never goes back and never passes ``total``."""

    def __init__(self, work: Work, image_steps: int):
        self.slots = {"image": max(int(image_steps), 1), "text": max(int(work.text_steps), 1)}
        self.total = max(work.images * self.slots["image"] + work.texts * self.slots["text"], 1)
        self.offset = 0  # the slots of finished phases
        self.slot = 0  # the current phase's slot (0 = no phase open)
        self.kind = ""
        self.last = 0
        self.value = 0

    def phase(self) -> None:
        """A phase ends (the engine names the next one): its whole slot counts as done."""
        self.offset += self.slot
        self.slot = 0

    def step(self, kind: str, step: int, total: int) -> int:
        """Step ``step`` of ``total`` of a ``kind`` phase; a phase that starts without being named (its steps
        restart, or its kind changes) closes the previous one."""
        if self.slot and (kind != self.kind or step < self.last):
            self.phase()
        if not self.slot:
            self.slot, self.kind = self.slots.get(kind, max(int(total), 1)), kind
        self.last = step
        done = self.offset + self.slot * min(max(step, 0), max(total, 1)) // max(total, 1)
        self.value = max(self.value, min(done, self.total))
        return self.value

    def finish(self) -> int:
        self.value = self.total
        return self.value
