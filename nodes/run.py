"""The one path every node takes: ready the model for the task -> progress/interrupt hooks -> engine call."""

from __future__ import annotations

from .engine import engine
from .progress import RunHooks


def node_id(cls) -> str | None:
    hidden = getattr(cls, "hidden", None)
    return getattr(hidden, "unique_id", None) if hidden is not None else None


def run_task(cls, model, task: str, *args, need: dict, **kwargs):
    """``model.jr.<task>(*args, **kwargs)`` after ComfyUI has loaded the model with the memory the engine says
    ``task`` needs (``need``: batch, rounds, reflection, prompt_tokens; for ``ask``: batch, images, max_new_tokens,
    question -- see ``JanusR1.memory_needed``), with this node's progress bar, preview, streamed text and
    interrupt."""
    jr = model.ready(task, **need)
    return RunHooks(jr, node_id(cls)).run(getattr(jr, task), *args, **kwargs)


def sampling(cfg, temperature, top_k, top_p) -> dict:
    """The image-sampling widgets as the engine's keyword arguments: ``cfg`` and one ``image_sampling``."""
    made = engine().Sampling(temperature=float(temperature), top_k=int(top_k), top_p=float(top_p))
    return dict(cfg=float(cfg), image_sampling=made)


def text_sampling(text_top_k):
    """The reflection's top-k widget as the engine's ``text_sampling`` (temperature 1, no top-p: the paper's)."""
    return engine().Sampling(top_k=int(text_top_k))
