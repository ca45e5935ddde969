"""Fixtures of the generation tests."""

from __future__ import annotations

import pytest
from fake_graph import FakeGraph

from janus_r1.generation import graphs


@pytest.fixture
def fake_capture(monkeypatch):
    """Every capture made through a :class:`FakeGraph` (the list of them), as if a GPU could capture."""
    FakeGraph.made = []
    monkeypatch.setattr(graphs, "can_capture", lambda device: True)
    monkeypatch.setattr(graphs, "capture", FakeGraph)
    return FakeGraph.made
