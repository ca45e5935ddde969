"""The engine import: the ``janus_r1`` copy shipped next to this folder, else a pip-installed one."""

from __future__ import annotations

import importlib


def engine():
    """The ``janus_r1`` package, or one clear error naming the missing dependency and how to install it."""
    try:
        from .. import janus_r1 as jr  # cloned into custom_nodes/: the engine sits next to nodes/

        return jr
    except ImportError:
        try:
            import janus_r1 as jr

            return jr
        except ImportError as e:
            raise RuntimeError(
                f"Janus-R1 cannot import its engine ({type(e).__name__}: {e}). Install the pack's dependencies "
                "into ComfyUI's Python: `python -m pip install -r custom_nodes/<this pack>/requirements.txt`."
            ) from e


def engine_module(name: str):
    """A submodule (``"model.memory"``) of whichever ``janus_r1`` :func:`engine` found."""
    return importlib.import_module(f"{engine().__name__}.{name}")
