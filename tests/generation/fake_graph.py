"""A stand-in for a CUDA graph, shared by the graph tests (``fake_capture`` in conftest.py): capture records the
function without running it, replay runs it."""

from __future__ import annotations


class FakeGraph:
    made: list[FakeGraph] = []

    def __init__(self, fn, generator, device=None) -> None:
        self.fn, self.generator, self.replays = fn, generator, 0
        FakeGraph.made.append(self)

    def replay(self) -> None:
        self.replays += 1
        self.fn()
