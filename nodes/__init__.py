"""The ComfyUI face of Janus-R1: one small V3 node class per task, every one calling the engine (``janus_r1``).

Importing this package needs ComfyUI (``comfy_api``, ``folder_paths``) but does no model work.
"""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import edit, generate, judge, loader


def node_list() -> list[type[io.ComfyNode]]:
    return [*loader.NODES, *generate.NODES, *judge.NODES, *edit.NODES]


class JanusR1Extension(ComfyExtension):
    async def on_load(self) -> None:  # called by newer ComfyUI only; registration below does not rely on it
        loader.register_folder()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return node_list()


loader.register_folder()
