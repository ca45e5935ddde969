"""Shared fixtures: tiny random models built by our own code (micro geometry: 16 image tokens)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def micro():
    """(JanusR1, tokenizer) on a micro random model, shared by the session (tests must not mutate weights)."""
    from janus_r1 import JanusR1
    from janus_r1.model.tiny import build_tiny_model
    from janus_r1.model.vocabulary import Vocabulary

    model, tok = build_tiny_model("micro", seed=0)
    return JanusR1(model, Vocabulary(tok), source="micro")


@pytest.fixture
def force_verdict(micro):
    """Context manager factory: make every forced first token (and all text) prefer a given id."""
    import contextlib

    @contextlib.contextmanager
    def _force(token: str, boost: float = 100.0):
        ids = micro.vocab.ids
        target = {"Yes": ids.yes, "No": ids.no, "EOS": ids.eos}[token]

        def hook(_m, _i, out):
            out[..., target] += boost
            return out

        h = micro.model.lm_head.register_forward_hook(hook)
        try:
            yield
        finally:
            h.remove()

    return _force


@pytest.fixture
def launch_report():
    """For a failed multi-process launch: from the first traceback or C++ abort on, then the tail. A rank's own
    error comes long before torchrun's summary, which alone would fill a plain ``stderr[-3000:]``."""

    def report(p) -> str:
        err = p.stderr
        starts = [i for i in (err.find("Traceback"), err.find("terminate called"), err.find("Error:")) if i >= 0]
        head = err[min(starts) : min(starts) + 3000] if starts else ""
        return f"rc {p.returncode}\n{head}\n...\n{err[-1500:]}"

    return report
