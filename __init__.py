"""ComfyUI entry point of the Janus-R1 node pack (V3 schema).

Cheap to import: nothing here touches torch, ComfyUI or the model until ComfyUI calls ``comfy_entrypoint``.
The engine lives in ``janus_r1/`` (a normal package that never imports ComfyUI); the nodes in ``nodes/``.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    """Called by ComfyUI's custom-node loader; returns the extension that lists the nodes."""
    from .nodes import JanusR1Extension

    return JanusR1Extension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
