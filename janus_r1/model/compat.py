"""The few places where transformers 4.5x and 5.x spell the same thing differently.

Janus exists in transformers from 4.52.1; many ComfyUI installs still run 4.x and installing this pack must not
upgrade them. Everything version-dependent is decided here, once, so the rest of the engine reads as 5.x.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def transformers_major_minor() -> tuple[int, int]:
    import transformers

    major, minor = transformers.__version__.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def dtype_kwargs(dtype: torch.dtype | str | None) -> dict:
    """``from_pretrained``'s dtype keyword: ``dtype`` from 4.56 on, ``torch_dtype`` before."""
    key = "dtype" if transformers_major_minor() >= (4, 56) else "torch_dtype"
    return {key: dtype}


def enable_checkpointing(model) -> None:
    """Activation (gradient) checkpointing of every decoder layer, non-reentrant: ``activation_checkpointing_enable``
    where transformers has it (5.x deprecates ``gradient_checkpointing_enable``, which warns), else the old name."""
    new = getattr(model, "activation_checkpointing_enable", None)
    if new is not None:
        new(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def is_checkpointing(model) -> bool:
    """Whether activation checkpointing is on, under either transformers name."""
    if hasattr(type(model), "is_activation_checkpointing"):
        return bool(model.is_activation_checkpointing)
    return bool(model.is_gradient_checkpointing)
