"""Turn a training checkpoint (sharded or the old gathered format) into a model folder the engine loads:
``config.json``, tokenizer, and safetensors written tensor by tensor.

Why a writer of our own: ``safetensors.save_file`` (and so ``save_pretrained``) builds the whole file in memory
first -- 29.6 GB at 7B in fp32 on top of the weights themselves. The format is simple (an 8-byte header length, a
JSON header of names, dtypes, shapes and byte offsets, then the raw bytes), so the header is computed from the
checkpoint's metadata and each tensor is read, written and dropped in turn; files are cut at ``max_shard_bytes``
with transformers' ``model.safetensors.index.json``. ``janus-r1 train-export CKPT --out DIR`` runs it alone (no
GPU, one process); the trainer runs it on rank 0 for ``OUT/final``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from ..errors import JanusR1Error
from . import dcp_checkpoint as DC
from .atomic import replaced_folder
from .checksums import verify

DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64",
          torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
          torch.bool: "BOOL"}


def _nbytes(shape, dtype) -> int:
    return DC._nbytes(shape, dtype)


def plan_files(specs: dict[str, tuple], max_shard_bytes: int) -> list[list[str]]:
    """Sorted names cut into files of at most ``max_shard_bytes`` (a bigger tensor gets a file of its own)."""
    files: list[list[str]] = [[]]
    size = 0
    for name in sorted(specs):
        n = _nbytes(*specs[name])
        if files[-1] and size + n > max_shard_bytes:
            files.append([])
            size = 0
        files[-1].append(name)
        size += n
    return files


def write_streaming(path: Path, names: list[str], specs: dict, tensors: Iterable[tuple[str, torch.Tensor]],
                    on_tensor: Callable | None = None) -> None:
    """One safetensors file from ``tensors`` (in ``names`` order), holding one tensor in memory at a time."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in names:
        shape, dtype = specs[name]
        n = _nbytes(shape, dtype)
        header[name] = {"dtype": DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        expected = iter(names)
        for name, t in tensors:
            if name != next(expected, None) or tuple(t.shape) != tuple(specs[name][0]) or t.dtype != specs[name][1]:
                raise JanusR1Error(f"export: {name} is not the tensor the header announced")
            data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
            f.write(memoryview(data))
            if on_tensor is not None:
                on_tensor(name, data)
        f.flush()
        os.fsync(f.fileno())


def _source(ckpt: Path):
    """``(specs, iterator factory)`` over the checkpoint's weights in sorted order, either format."""
    if DC.is_sharded_checkpoint(ckpt):
        all_specs = DC.tensor_specs(ckpt)
        specs = {k.removeprefix(DC.W): v for k, v in all_specs.items() if k.startswith(DC.W)}
        return specs, lambda names: DC.iter_full(ckpt, DC.W, specs=all_specs)
    f = ckpt / "model.safetensors"
    if not f.is_file():
        raise JanusR1Error(f"{ckpt} is not a checkpoint: no dcp/.metadata and no model.safetensors")
    from safetensors import safe_open

    with safe_open(str(f), framework="pt") as h:
        specs = {k: (tuple(h.get_slice(k).get_shape()), _dtype(h.get_slice(k).get_dtype())) for k in h.keys()}

    def tensors(names):
        with safe_open(str(f), framework="pt") as h:
            for k in names:
                yield k, h.get_tensor(k)

    return specs, tensors


def _dtype(name: str) -> torch.dtype:
    return {v: k for k, v in DTYPES.items()}[name]


def resolve_checkpoint(path: str | Path) -> Path:
    """A step directory, or a run directory (its ``checkpoints/latest``); it must verify (checksums.py): an export
    of a damaged checkpoint is one line naming the file, never a model with corrupted tensors."""
    p = Path(path)
    latest = p / "checkpoints" / "latest"
    if latest.is_file():
        p = p / "checkpoints" / latest.read_text().strip()
    if not (p / "state.json").is_file():
        raise JanusR1Error(f"{path} is neither a checkpoint directory (with state.json) nor a run directory "
                           "(with checkpoints/latest)")
    verify(p)
    return p


def export_checkpoint(ckpt: str | Path, target: str | Path, max_shard_bytes: int = 5 << 30,
                      model_files: Path | None = None) -> tuple[Path, int]:
    """Write the checkpoint's weights (as stored: fp32 masters) + config + tokenizer to ``target`` atomically;
    returns the folder and the weights' digest (``run.weights_digest`` of the same tensors)."""
    ckpt = resolve_checkpoint(ckpt)
    files_dir = model_files or ckpt / "model"
    with tempfile.TemporaryDirectory(prefix="janus-r1-export-files-") as scratch:
        if not (files_dir / "config.json").is_file():
            files_dir = _base_model_files(ckpt, Path(scratch))
        return _export(ckpt, Path(target), files_dir, max_shard_bytes)


def _export(ckpt: Path, target: Path, files_dir: Path, max_shard_bytes: int) -> tuple[Path, int]:
    specs, tensors = _source(ckpt)
    h = hashlib.sha256()

    def digest(name: str, data) -> None:
        h.update(name.encode())
        h.update(memoryview(data))

    with replaced_folder(target) as tmp:
        for f in files_dir.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
        plan = plan_files(specs, max_shard_bytes)
        stream = iter(tensors(sorted(specs)))
        names = [f"model-{i + 1:05d}-of-{len(plan):05d}.safetensors" for i in range(len(plan))]
        if len(plan) == 1:
            names = ["model.safetensors"]
        for fname, group in zip(names, plan):
            write_streaming(tmp / fname, group, specs, (next(stream) for _ in group), digest)
        if len(plan) > 1:
            index = {"metadata": {"total_size": sum(_nbytes(*v) for v in specs.values())},
                     "weight_map": {n: fname for fname, group in zip(names, plan) for n in group}}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    return target, int.from_bytes(h.digest()[:8], "little") >> 2


def _base_model_files(ckpt: Path, out: Path) -> Path:
    """Config and tokenizer for a checkpoint of the old format (which did not keep them): from the base model
    named in its state.json, built without weights, into ``out`` (a scratch folder the export removes)."""
    from .checkpoint import write_model_files
    from .materialise import skeleton

    name = json.loads((ckpt / "state.json").read_text()).get("config", {}).get("model")
    if not name:
        raise JanusR1Error(f"{ckpt}/state.json names no base model; cannot write config.json for the export")
    model, vocab = skeleton(name, torch.float32)
    write_model_files(model, vocab, out)
    return out


def cmd_train_export(args) -> int:
    if not args.max_shard_gb > 0:
        raise JanusR1Error(f"--max-shard-gb must be > 0 (got {args.max_shard_gb})")
    target, _ = export_checkpoint(args.checkpoint, args.out, max_shard_bytes=int(args.max_shard_gb * (1 << 30)))
    print(f"exported {target}")
    return 0


def add_export_command(sub) -> None:
    e = sub.add_parser("train-export", help="turn a training checkpoint into a model folder (safetensors + config)")
    e.add_argument("checkpoint", help="a checkpoint (OUT/checkpoints/step-N) or a run directory (its latest)")
    e.add_argument("--out", required=True, help="the model folder to write (replaced atomically)")
    e.add_argument("--max-shard-gb", type=float, default=5.0, help="cut the safetensors files at this size")
    e.set_defaults(func=cmd_train_export)
