"""The ComfyUI face of Janus-R1: one small V3 class per task, each a schema and an ``execute`` that readies the
model and calls the engine's method by name (``jr.generate(...)``) inside :func:`run.running`.

Helpers, one job each: ``widgets`` (categories, defaults, shared inputs), ``handle`` (the model socket and
ComfyUI's patcher), ``run`` (the one place a run meets ComfyUI: hooks, interrupt, errors), ``progress`` (progress
bar, preview, streamed text), ``work`` (one bar over a whole run), ``throttle`` (when the preview decodes),
``images`` (IMAGE <-> PIL), ``outputs`` and ``text`` (what the nodes return and show). The engine is imported
plainly from the copy next to this folder (``from ..janus_r1 import ...``); importing this package needs it and
ComfyUI (``comfy_api``, ``folder_paths``) but does no model work.
"""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import ask, edit, generate, judge, loader, save_text


def node_list() -> list[type[io.ComfyNode]]:
    return [*loader.NODES, *generate.NODES, *judge.NODES, *edit.NODES, *ask.NODES, *save_text.NODES]


class JanusR1Extension(ComfyExtension):
    async def on_load(self) -> None:  # called by newer ComfyUI only; registration below does not rely on it
        loader.register_folder()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return node_list()


loader.register_folder()
