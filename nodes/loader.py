"""Loader node: a model folder from ComfyUI's ``janus`` model folder -> JANUS_R1_MODEL (managed by ComfyUI)."""

from __future__ import annotations

import logging
import os

import folder_paths
from comfy_api.latest import io

from ..janus_r1 import JanusR1, JanusR1Error
from ..janus_r1.model import devices, sources
from . import widgets
from .handle import JanusModelHandle, make_patcher

log = logging.getLogger("janus_r1.comfy")

FOLDER = "janus"
# where the other Janus packs (CY-CHENYUE/ComfyUI-Janus-Pro and its forks, CaptionThis, Janus_Wrapper...) keep
# models: models/Janus-Pro/<name>, registered by some of them as the folder name "Janus-Pro"
OTHER_PACKS_FOLDER = "Janus-Pro"
KNOWN_REPOS = {
    "Janus-Pro-R1-7B": "midbee/Janus-Pro-R1-7B",
    "Janus-Pro-7B": "deepseek-ai/Janus-Pro-7B",
    "Janus-Pro-1B": "deepseek-ai/Janus-Pro-1B",
}
DTYPES = ["auto", "bf16", "fp16", "fp32"]
QUANTIZE = ["none", "4bit", "int4", "nf4", "8bit"]


def register_folder() -> None:
    """``models/janus`` as the ``janus`` folder (first: the download target), then ``models/Janus-Pro`` so a
    model the other Janus packs' users already have is found without a copy; idempotent, keeps folders from
    extra_model_paths.yaml."""
    folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER))
    folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, OTHER_PACKS_FOLDER))


def janus_dirs() -> list[str]:
    """Every folder that may hold model folders: the ``janus`` paths, then any ``Janus-Pro`` paths another
    pack or extra_model_paths.yaml registered."""
    found: list[str] = []
    for name in (FOLDER, OTHER_PACKS_FOLDER):
        try:
            paths = folder_paths.get_folder_paths(name)
        except Exception:  # not registered (Janus-Pro only exists where another pack or a yaml adds it)
            continue
        found += [p for p in paths if p not in found]
    return found


DOWNLOAD_MARK = " (download)"


def model_folders() -> list[str]:
    """Sub-folders of every registered ``janus`` path, the known model names first."""
    found: list[str] = []
    for base in janus_dirs():
        if not os.path.isdir(base):
            continue
        for entry in sorted(os.listdir(base)):
            if not entry.startswith(".") and os.path.isdir(os.path.join(base, entry)) and entry not in found:
                found.append(entry)
    return sorted(found, key=lambda n: (n not in KNOWN_REPOS, n))


def model_names() -> list[str]:
    """The loader's list: folders on disk by name, then known models not on disk as downloadable hub ids,
    marked, e.g. ``midbee/Janus-Pro-R1-7B (download)``."""
    folders = model_folders()
    return folders + [f"{repo}{DOWNLOAD_MARK}" for name, repo in KNOWN_REPOS.items() if name not in folders]


def folder_name(choice: str) -> str:
    """The folder a list entry names. Accepts the marked hub entry, a bare hub id, and the bare folder name
    that workflows saved before the marks used (``Janus-Pro-R1-7B``)."""
    choice = choice.removesuffix(DOWNLOAD_MARK)
    by_repo = {repo: name for name, repo in KNOWN_REPOS.items()}
    return by_repo.get(choice, choice)


def find_model_dir(name: str) -> str | None:
    for base in janus_dirs():
        path = os.path.join(base, name)
        if os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json")):
            return path
    return None


def download(name: str) -> str:
    """Snapshot the known hub repo ``name`` into the first ``janus`` folder (only when asked to)."""
    repo = KNOWN_REPOS.get(name)
    dirs = janus_dirs()
    if repo is None:
        raise ValueError(
            f"Janus-R1: '{name}' is not one of the downloadable models ({', '.join(KNOWN_REPOS)}); put its files "
            f"into {os.path.join(dirs[0] if dirs else 'models/janus', name)} yourself."
        )
    target = os.path.join(dirs[0], name)
    log.info("Janus-R1: downloading %s into %s", repo, target)
    try:  # the engine's one download: same files, HF_HUB_OFFLINE honoured, one clear error
        sources.download(repo, local_dir=target)
    except JanusR1Error as e:
        raise ValueError(f"Janus-R1: {e}") from e
    return target


def resolve_dtype(choice: str):
    import comfy.model_management as mm
    import torch

    if choice == "auto":
        dev = mm.get_torch_device()
        if mm.should_use_bf16(dev):
            return torch.bfloat16
        return torch.float32
    return devices.parse_dtype(choice)


class Loader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return widgets.schema(
            node_id="JanusR1Loader",
            display_name="Janus-R1 Loader",
            category=widgets.CATEGORY_LOADERS,
            description="Load a Janus-Pro / Janus-Pro-R1 model folder from models/janus (or models/Janus-Pro, "
            "where other Janus packs keep them). ComfyUI's memory manager "
            "moves it to the GPU when a Janus-R1 node runs and offloads it when others need room.",
            search_aliases=["janus", "janus pro", "janus r1", "load janus"],
            inputs=[
                io.Combo.Input(
                    "model_name",
                    options=model_names(),
                    default=model_names()[0],
                    tooltip="A folder inside models/janus or models/Janus-Pro (or any 'janus' path from "
                    "extra_model_paths.yaml) holding config.json, tokenizer.json and weights. Entries marked "
                    "'(download)' are known models not on disk yet: tick download_if_missing to fetch them.",
                ),
                io.Combo.Input(
                    "dtype",
                    options=DTYPES,
                    default="auto",
                    tooltip="Weight precision. auto = bf16 where the device supports it, else fp32.",
                ),
                io.Boolean.Input(
                    "download_if_missing",
                    default=False,
                    tooltip="If the folder is missing and the name is a known model (Janus-Pro-R1-7B, "
                    "Janus-Pro-7B, Janus-Pro-1B), download it from Hugging Face into "
                    "models/janus/<name> (about 15 GB for the 7B models).",
                ),
                io.Combo.Input(
                    "quantize",
                    options=QUANTIZE,
                    default="none",
                    tooltip="Language model only, so the 7B model fits small cards (~6 GB in 4-bit). 4bit = int4 on "
                    "torch's own kernels where the device has one (CUDA sm80+, CPU), else NF4; int4 forces int4; "
                    "nf4 and 8bit need bitsandbytes (pip install bitsandbytes). SigLIP, the VQ model and the heads "
                    "stay in bf16. none = full precision.",
                ),
            ],
            outputs=[
                widgets.JanusModel.Output(
                    "model", display_name="model", tooltip="The loaded model, for every other Janus-R1 node."
                )
            ],
        )

    @classmethod
    def validate_inputs(cls, model_name=None):
        # only model_name: ComfyUI reports a validator's message once per input the validator takes
        if model_name is None:
            return True
        name = folder_name(model_name)
        if name in KNOWN_REPOS or name in model_folders():
            return True
        return f"Janus-R1: model folder '{model_name}' not found in {janus_dirs()}; choose one of {model_names()}"

    @classmethod
    def execute(
        cls, model_name: str, dtype: str, download_if_missing: bool, quantize: str = "none"
    ) -> io.NodeOutput:
        import comfy.model_management as mm

        # combos are checked here: ComfyUI 0.3.75 does not check V3 combo values (newer versions do)
        if dtype not in DTYPES:
            raise ValueError(f"Janus-R1: dtype must be one of {DTYPES}, got {dtype!r}.")
        if quantize not in QUANTIZE:
            raise ValueError(f"Janus-R1: quantize must be one of {QUANTIZE}, got {quantize!r}.")
        model = folder_name(model_name)
        path = find_model_dir(model)
        if path is None:
            if not download_if_missing:
                where = janus_dirs() or [os.path.join(folder_paths.models_dir, FOLDER)]
                hint = (
                    f" or enable download_if_missing to fetch {KNOWN_REPOS[model]}"
                    if model in KNOWN_REPOS
                    else ""
                )
                raise ValueError(
                    f"Janus-R1: no model folder '{model}' with a config.json in {where}. Put the model files into "
                    f"{os.path.join(where[0], model)}{hint}."
                )
            path = download(model)
        torch_dtype = resolve_dtype(dtype)
        try:
            jr = JanusR1.from_pretrained(
                path,
                device=str(mm.unet_offload_device()),
                dtype=torch_dtype,
                progress=False,
                quantize=quantize,
            )
        except JanusR1Error as e:  # one line; a message that names a file in the folder already says where
            where = "" if str(e).startswith(str(path)) else f"cannot load {path}: "
            raise ValueError(f"Janus-R1: {where}{e}") from None
        patcher = make_patcher(jr.model)
        return io.NodeOutput(JanusModelHandle(jr=jr, patcher=patcher, name=model, dtype=torch_dtype))


NODES = [Loader]
