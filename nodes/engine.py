"""The engine import: the ``janus_r1`` copy shipped next to this folder, else a pip-installed one."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path


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


def engine_defaults():
    """The engine's ``janus_r1/defaults.py`` (the paper's defaults), read without importing the engine: node
    schemas are built when ComfyUI starts, and a pack whose engine cannot import must still register its nodes
    (the error then comes when a node runs). The module has no imports of its own, so loading it alone is safe."""
    here = Path(__file__).resolve().parent.parent / "janus_r1" / "defaults.py"
    if not here.is_file():  # a pip-installed engine: locate the package without executing it
        spec = importlib.util.find_spec("janus_r1")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("Janus-R1 cannot find its engine (janus_r1); install the pack's requirements.")
        here = Path(list(spec.submodule_search_locations)[0]) / "defaults.py"
    spec = importlib.util.spec_from_file_location("janus_r1_defaults", here)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
