"""Save Reasoning: a STRING (the reasoning or a report) as a UTF-8 text file in ComfyUI's output folder, beside the
PNGs -- ComfyUI 0.3.75 has no core node that saves text."""

from __future__ import annotations

import os
import tempfile

import folder_paths
from comfy_api.latest import io

from . import widgets


def write_text(text: str, filename_prefix: str) -> tuple[str, str]:
    """Write ``text`` as ``<prefix>_<counter>_.txt`` (Save Image's naming and counter, so it sorts beside the
    PNGs of the same prefix folder), atomically (a temp file renamed into place); returns (file, subfolder)."""
    out_dir = folder_paths.get_output_directory()
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, out_dir)
    os.makedirs(folder, exist_ok=True)
    file = f"{name}_{counter:05}_.txt"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".janus_r1_", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, os.path.join(folder, file))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return file, subfolder


class SaveText(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return widgets.schema(
            node_id="JanusR1SaveText",
            display_name="Janus-R1 Save Reasoning",
            category=widgets.CATEGORY_SAVE,
            description="Save a text (the reasoning of CoT Generate / Regenerate, the report of Judge / Best of "
            "N) as a .txt file in the output folder, next to the images. The PNGs that Save Image writes "
            "already carry the verdicts, scores and reflections in a 'janus_r1' text chunk.",
            search_aliases=["save text", "save reasoning", "write text file"],
            is_output_node=True,
            inputs=[
                io.String.Input("text", force_input=True, tooltip="The text to save, e.g. the reasoning output."),
                io.String.Input(
                    "filename_prefix",
                    default="janus_r1/reasoning",
                    tooltip="File name prefix inside the output folder; a counter and .txt are added, as Save "
                    "Image does. Use the Save Image prefix's folder to keep the text beside the picture.",
                ),
            ],
            outputs=[],
        )

    @classmethod
    def validate_inputs(cls, filename_prefix=None):
        if filename_prefix is not None and not str(filename_prefix).strip():
            return "filename_prefix is empty; type a name such as janus_r1/reasoning."
        return True

    @classmethod
    def execute(cls, text, filename_prefix="janus_r1/reasoning") -> io.NodeOutput:
        if isinstance(text, (list, tuple)):  # a STRING list output (one text per image): one file
            text = "\n\n".join(str(t) for t in text)
        if not isinstance(text, str):
            raise ValueError(f"Janus-R1: text must be a STRING, got {type(text).__name__}.")
        file, subfolder = write_text(text, filename_prefix)
        return io.NodeOutput(ui={"text": (os.path.join(subfolder, file),)})


NODES = [SaveText]
