"""ComfyUI entry point of the Janus-R1 node pack (V3 schema).

Cheap to import: nothing here touches torch, ComfyUI or the model until ComfyUI calls ``comfy_entrypoint``.
The engine lives in ``janus_r1/`` (a normal package that never imports ComfyUI, shipped next to ``nodes/``); the
nodes import it plainly. If it cannot import (a dependency of requirements.txt missing from ComfyUI's Python),
the pack fails to load the way ComfyUI packs do: ComfyUI's start-up log names the missing module and the install
command, and lists the pack as "(IMPORT FAILED)", which ComfyUI-Manager shows too; no Janus-R1 node registers.
"""

from pathlib import Path

WEB_DIRECTORY = "./web"
REQUIREMENTS = Path(__file__).resolve().parent / "requirements.txt"


async def comfy_entrypoint():
    """Called by ComfyUI's custom-node loader; returns the extension that lists the nodes."""
    try:
        from .nodes import JanusR1Extension
    except ImportError as e:
        missing = getattr(e, "name", None) or str(e)
        raise ImportError(
            f"Janus-R1 cannot import its engine: {type(e).__name__}: {e}. Install the pack's requirements into "
            f"ComfyUI's Python: python -m pip install -r {REQUIREMENTS}",
            name=missing,
        ) from e

    return JanusR1Extension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
