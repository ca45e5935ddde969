"""Write tiny random Janus model directories in either checkpoint layout (tests, demos, ``janus-r1 make-tiny``).

The DeepSeek-layout directories mimic the released repos file by file (config.json with the five sub-configs,
tokenizer files with ``pad_token: null`` plus special_tokens_map.json, processor configs, DeepSeek tensor names
including the unused ``attn_pool.*`` / ``codebook_used`` tensors), so the loader is exercised on what it will meet
in the wild, without downloading 15 GB. Writing is atomic: a reader never sees a half-written directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import JanusR1Error
from .deepseek_config import deepseek_config_from_janus
from .deepseek_keys import janus_state_dict_to_deepseek
from .released_style import released_config, write_released_tokenizer_files
from .tiny import GEOMETRIES, build_tiny_model
from .vocabulary import ADDITIONAL_SPECIAL_TOKENS, BOS, EOS, IMAGE_PLACEHOLDER, PAD

_README = """# Tiny random Janus model ({layout} layout, {geometry} geometry, seed {seed})

**These weights are random noise.** The directory has the real Janus-Pro topology (SigLIP tower, VQ-16 tokenizer,
LLaMA with both heads) at a tiny size, so every code path of `janus_r1` runs, but the images it draws are noise
and its judgements mean nothing. It exists for tests, demos and CI. Written by `janus_r1.model.tiny_files`.
"""


def _shard_groups(keys: list[str], sizes: Mapping[str, int], shards: int) -> list[list[str]]:
    """Split keys (in order) into ``shards`` non-empty groups of roughly equal byte size."""
    if shards < 1 or shards > len(keys):
        raise JanusR1Error(f"shards must be between 1 and {len(keys)}, got {shards}.")
    total = sum(sizes[k] for k in keys)
    groups: list[list[str]] = [[] for _ in range(shards)]
    acc = 0
    for i, key in enumerate(keys):
        idx = min(acc * shards // max(total, 1), shards - 1)
        # never leave a later shard empty: the last (shards - idx - 1) keys must be kept for the later groups
        idx = max(idx, shards - (len(keys) - i))
        groups[idx].append(key)
        acc += sizes[key]
    return groups


def _write_weights(out: Path, state_dict: dict[str, torch.Tensor], weights: str, shards: int) -> None:
    """``model.safetensors`` / ``pytorch_model.bin``, or n shards plus the HF-style index with its weight_map."""
    if weights not in ("safetensors", "bin"):
        raise JanusR1Error(f"weights must be 'safetensors' or 'bin', got {weights!r}.")
    from safetensors.torch import save_file

    state_dict = {k: v.detach().contiguous() for k, v in state_dict.items()}
    keys = list(state_dict)
    sizes = {k: v.numel() * v.element_size() for k, v in state_dict.items()}

    def save(part: dict[str, torch.Tensor], name: str) -> None:
        if weights == "safetensors":
            save_file(part, str(out / name), metadata={"format": "pt"})
        else:
            torch.save(part, str(out / name))

    if shards == 1:
        save(state_dict, "model.safetensors" if weights == "safetensors" else "pytorch_model.bin")
        return
    weight_map: dict[str, str] = {}
    for i, group in enumerate(_shard_groups(keys, sizes, shards), start=1):
        name = (
            f"model-{i:05d}-of-{shards:05d}.safetensors"
            if weights == "safetensors"
            else f"pytorch_model-{i:05d}-of-{shards:05d}.bin"
        )
        save({k: state_dict[k] for k in group}, name)
        weight_map.update({k: name for k in group})
    index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map}
    index_name = (
        "model.safetensors.index.json" if weights == "safetensors" else "pytorch_model.bin.index.json"
    )
    _write_json(out / index_name, index)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_deepseek_tokenizer_files(out: Path, tokenizer, n_image_tokens: int, image_size: int) -> None:
    """Tokenizer and processor files shaped like deepseek-ai/Janus-Pro-7B's (janus-pro-r1.md §1.6)."""
    tokenizer.save_pretrained(str(out))
    _write_json(
        out / "tokenizer_config.json",
        {
            "bos_token": BOS,
            "clean_up_tokenization_spaces": False,
            "eos_token": EOS,
            "model_max_length": 16384,
            "pad_token": None,
            "tokenizer_class": "LlamaTokenizer",
            "unk_token": None,
            "use_default_system_prompt": True,
        },
    )
    _write_json(
        out / "special_tokens_map.json",
        {
            "additional_special_tokens": list(ADDITIONAL_SPECIAL_TOKENS),
            "bos_token": BOS,
            "eos_token": EOS,
            "pad_token": PAD,
        },
    )
    _write_json(
        out / "processor_config.json",
        {
            "add_special_token": False,
            "ignore_id": -100,
            "image_tag": IMAGE_PLACEHOLDER,
            "mask_prompt": True,
            "num_image_tokens": n_image_tokens,
            "processor_class": "VLChatProcessor",
            "sft_format": "deepseek",
        },
    )
    _write_json(
        out / "preprocessor_config.json",
        {
            "background_color": [127, 127, 127],
            "do_normalize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_processor_type": "VLMImageProcessor",
            "image_size": image_size,
            "image_std": [0.5, 0.5, 0.5],
            "min_size": 14,
            "processor_class": "VLChatProcessor",
            "rescale_factor": 1 / 255,
        },
    )


def write_tiny(
    out_dir: str | Path,
    layout: str = "deepseek",
    geometry: str = "micro",
    seed: int = 0,
    weights: str = "safetensors",
    shards: int = 1,
    *,
    overwrite: bool = False,
    released_style: bool = False,
) -> Path:
    """Write ``build_tiny_model(geometry, seed)`` as a model directory and return its path.

    ``layout="deepseek"`` writes DeepSeek's multi_modality format (what Janus-Pro-R1 ships); ``"transformers"``
    writes transformers' own Janus format. ``shards>1`` splits the weights into ``model-0000i-of-0000n`` files plus
    an index. The directory is assembled next to ``out_dir`` and renamed into place, so an interrupted write leaves
    nothing behind; an existing ``out_dir`` is only replaced with ``overwrite=True``. ``released_style`` (DeepSeek
    layout only) writes config.json and the tokenizer files the way the released Janus-Pro-R1-7B folder has them
    (:mod:`.released_style`): transformers 4.50's re-serialised config, no BOS post-processor, LlamaTokenizerFast.
    """
    if released_style and layout != "deepseek":
        raise JanusR1Error("released_style applies to the DeepSeek layout only.")
    if layout not in ("deepseek", "transformers"):
        raise JanusR1Error(f"layout must be 'deepseek' or 'transformers', got {layout!r}.")
    if geometry not in GEOMETRIES:
        raise JanusR1Error(f"geometry must be one of {sorted(GEOMETRIES)}, got {geometry!r}.")
    if weights not in ("safetensors", "bin"):
        raise JanusR1Error(f"weights must be 'safetensors' or 'bin', got {weights!r}.")
    out = Path(out_dir).expanduser()
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise JanusR1Error(f"{out} already exists; pass overwrite=True or choose another directory.")
    out.parent.mkdir(parents=True, exist_ok=True)

    model, tokenizer = build_tiny_model(geometry, seed)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        if layout == "deepseek":
            cfg = deepseek_config_from_janus(model.config)
            cfg["torch_dtype"] = "float32"
            cfg["language_config"]["torch_dtype"] = "float32"
            _write_json(tmp / "config.json", cfg)
            vision = model.config.vision_config
            _write_deepseek_tokenizer_files(tmp, tokenizer, vision.num_image_tokens, vision.image_size)
            if released_style:
                _write_json(tmp / "config.json", released_config(cfg))
                write_released_tokenizer_files(tmp)
            _write_weights(tmp, janus_state_dict_to_deepseek(model.state_dict()), weights, shards)
        else:
            model.config.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            _write_weights(tmp, dict(model.state_dict()), weights, shards)
        (tmp / "README.md").write_text(
            _README.format(layout=layout, geometry=geometry, seed=seed), encoding="utf-8"
        )
        _move_into_place(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _move_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished directory onto ``out``; with ``overwrite`` an existing one is moved aside and removed.

    Without ``overwrite`` a directory that appeared meanwhile (another process writing the same model) is left
    alone and reported, so a reader of that directory never sees it swapped under its feet.
    """
    old = None
    if out.exists():
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        elif not overwrite:
            raise JanusR1Error(f"{out} already exists; pass overwrite=True or choose another directory.")
        else:
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError as e:
        if old is not None:
            os.replace(old, out)
        raise JanusR1Error(f"Could not move the written model into {out}: {e}.") from e
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
