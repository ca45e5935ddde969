"""The ComfyUI face of Janus-R1: one small V3 node class per task, each a schema and an ``execute`` that calls
the engine (``janus_r1``) through :func:`run.run_task`.

Helpers, one job each: ``engine`` (the engine import), ``widgets`` (categories, defaults, shared inputs),
``handle`` (the model socket and ComfyUI's patcher), ``progress`` (progress bar, preview, streamed text,
interrupt), ``run`` (the shared execute path), ``images`` (IMAGE <-> PIL), ``outputs`` and ``text`` (what the
nodes return and show). Importing this package needs ComfyUI (``comfy_api``, ``folder_paths``) but does no
model work.
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
