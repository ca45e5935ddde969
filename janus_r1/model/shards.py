"""Checkpoint weight files: which files hold the weights, and reading one without unpickling anything else.

safetensors (mmap) is preferred to pickled ``.bin``, like transformers; ``.bin`` is read with ``weights_only=True``
and ``mmap=True``, so a 10 GB shard stays on disk until a tensor is touched and a file that pickles Python objects
is refused with a reason. Every failure names the file.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from ..errors import JanusR1Error

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
BIN_INDEX = "pytorch_model.bin.index.json"
BIN_SINGLE = "pytorch_model.bin"
_SHARD_GLOBS = ("model-*-of-*.safetensors", "pytorch_model-*-of-*.bin")


def _index_files(model_dir: Path, index_name: str) -> list[Path]:
    index = model_dir / index_name
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        weight_map = data["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise JanusR1Error(
            f"Cannot read the shard index {index}: {e}. It needs a 'weight_map' object."
        ) from e
    files = [model_dir / n for n in names]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise JanusR1Error(
            f"{index} lists shard(s) that are not in {model_dir}: {missing[:5]}. The download is incomplete; "
            "fetch the missing files again."
        )
    return files


def weight_files(model_dir: str | Path) -> list[Path]:
    """The checkpoint's weight files in load order, from the index when there is one.

    Preference: safetensors (index, then single file) before pickled ``.bin`` (index, then single file), like
    transformers. Unindexed ``model-0000i-of-0000n`` shards are accepted too, sorted by name.
    """
    d = Path(model_dir)
    if (d / SAFETENSORS_INDEX).is_file():
        return _index_files(d, SAFETENSORS_INDEX)
    if (d / SAFETENSORS_SINGLE).is_file():
        return [d / SAFETENSORS_SINGLE]
    if (d / BIN_INDEX).is_file():
        return _index_files(d, BIN_INDEX)
    if (d / BIN_SINGLE).is_file():
        return [d / BIN_SINGLE]
    for pattern in _SHARD_GLOBS:
        shards = sorted(d.glob(pattern))
        if shards:
            return shards
    found = sorted(p.name for p in d.iterdir()) if d.is_dir() else []
    raise JanusR1Error(
        f"No weights in {d}: expected model.safetensors, model-0000i-of-0000n.safetensors + "
        f"{SAFETENSORS_INDEX}, pytorch_model.bin or pytorch_model-0000i-of-0000n.bin + {BIN_INDEX}. "
        f"Found: {found[:20]}."
    )


def read_shard(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of one weight file, without unpickling anything but tensors.

    safetensors through ``safe_open`` (mmap); ``.bin`` through ``torch.load(weights_only=True, mmap=True)`` so even
    a 10 GB pickle shard stays on disk until a tensor is touched. Any failure names the file.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:
                return {k: f.get_tensor(k) for k in f.keys()}
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            # Legacy (non-zip) torch.save format cannot be mmapped; still weights_only.
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except JanusR1Error:
        raise
    except pickle.UnpicklingError:  # torch's weights_only unpickler met a non-tensor object
        raise JanusR1Error(
            f"Refused to load weight file {path}: besides tensors it pickles Python objects, and unpickling those "
            "could run arbitrary code, so janus-r1 never does. If you trust where the file comes from, convert it "
            "to safetensors there (safetensors.torch.save_file(state_dict, 'model.safetensors')) and load that."
        ) from None
    except Exception as e:  # safetensors, zipfile and unpickler errors have no common base class
        from ..out_of_memory import OutOfMemory, recognise

        oom = recognise(e)
        if oom is not None:  # mmap or a copy failed for want of memory: the file is fine (issue 24)
            raise OutOfMemory(f"weight file {path}: {oom}") from e
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise JanusR1Error(
            f"Cannot read weight file {path} ({type(e).__name__}: {first}). The file is corrupt or truncated, or "
            "(for .bin) pickles objects other than tensors, which are never unpickled; download it again."
        ) from e
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise JanusR1Error(f"Weight file {path} does not hold a flat {{name: tensor}} state dict.")
    return dict(obj)


def iter_deepseek_shards(model_dir: str | Path) -> Iterator[dict[str, torch.Tensor]]:
    """Yield the raw (DeepSeek-named) tensors one weight file at a time, never the whole checkpoint at once."""
    for path in weight_files(model_dir):
        yield read_shard(path)


def file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of one weight file without reading tensor data (safetensors header, or the mmapped pickle)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    return {k: tuple(t.shape) for k, t in read_shard(path).items()}  # mmap: no tensor data is read


def check_readable(path: Path) -> None:
    """Name a corrupt or truncated weight file here, before transformers hides it in a traceback."""
    if path.suffix != ".safetensors":
        read_shard(path)  # weights_only + mmap: reads the pickle's index, not the tensor data
        return
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as e:
        from ..out_of_memory import OutOfMemory, recognise

        if recognise(e) is not None:  # mapping the file failed for want of memory: the file is fine
            raise OutOfMemory(f"weight file {path}: {recognise(e)}") from e
        raise JanusR1Error(
            f"Cannot read weight file {path}: {type(e).__name__}: {e}. The file is corrupt or truncated; "
            "download it again."
        ) from e
