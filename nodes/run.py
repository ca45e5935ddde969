"""The one place a node's engine call meets ComfyUI: the node readies the model, then calls the engine's method by
name inside :func:`running`, which hands it the hooks (progress bar, live preview, streamed text, interrupt) and
turns the engine's ``Cancelled`` and ``JanusR1Error`` into what ComfyUI expects::

    jr = model.ready("generate", batch=..., rounds=..., reflection=..., prompt_tokens=...)
    with running(cls, jr, Work(images=max_rounds, texts=max_rounds, text_steps=max_reflection)) as hooks:
        results = jr.generate(prompt, ..., hooks=hooks)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .. import janus_r1
from ..janus_r1 import JanusR1, Sampling
from .progress import RunHooks, for_comfy
from .work import Work


def node_id(cls) -> str | None:
    hidden = getattr(cls, "hidden", None)
    return getattr(hidden, "unique_id", None) if hidden is not None else None


@contextlib.contextmanager
def running(cls, jr: JanusR1, work: Work) -> Iterator[janus_r1.Hooks]:
    """The engine's :class:`~janus_r1.Hooks` for one execution of node ``cls``, with one progress bar over
    ``work`` (the node's whole run: every image and text phase it may decode). On the way out: an interrupt ->
    ComfyUI's ``InterruptProcessingException`` (the prompt ends as interrupted), an engine input error -> one
    ``ValueError`` that ComfyUI shows on the node, success -> the bar at its end (a run that stops early, e.g. an
    image accepted in round 1, still finishes at 100 %)."""
    import comfy.model_management as mm

    bridge = RunHooks(jr, node_id(cls), work)
    try:
        yield bridge.hooks
    except janus_r1.Cancelled:
        mm.throw_exception_if_processing_interrupted()
        raise mm.InterruptProcessingException() from None
    except janus_r1.JanusR1Error as e:
        raise ValueError(f"Janus-R1: {for_comfy(str(e))}") from None
    bridge.finish()


def sampling(cfg, temperature, top_k, top_p, decoding="ar", jacobi_window=16) -> dict:
    """The image-sampling widgets as the engine's keyword arguments: ``cfg`` and one ``image_sampling``."""
    made = Sampling(temperature=float(temperature), top_k=int(top_k), top_p=float(top_p), decoding=str(decoding),
                    window=int(jacobi_window))
    return dict(cfg=float(cfg), image_sampling=made)


def text_sampling(text_top_k) -> Sampling:
    """The reflection's top-k widget as the engine's ``text_sampling`` (temperature 1, no top-p: the paper's)."""
    return Sampling(top_k=int(text_top_k))
