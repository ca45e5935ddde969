"""Atomic checkpoints (model, optimizer, scheduler, RNG, data position) in safetensors + JSON, and the export.

Layout: ``OUT/checkpoints/step-00000042/{model,optimizer,rng-rank<r>}.safetensors + state.json`` and
``OUT/checkpoints/latest`` (the name of the newest complete checkpoint). A checkpoint is written into a hidden
temporary directory and renamed into place only when complete, so a run killed at any moment leaves either the
previous or the new checkpoint, never half of one. Nothing is pickled; loading never runs code.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import JanusR1Error


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def optimizer_tensors(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into flat tensors and JSON metadata."""
    tensors, meta = {}, {"param_groups": sd["param_groups"], "scalars": {}}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                meta["scalars"][f"{idx}.{k}"] = v
    return tensors, meta


def optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict = {}
    for name, v in tensors.items():
        _, idx, k = name.split(".", 2)
        state.setdefault(int(idx), {})[k] = v
    for name, v in meta["scalars"].items():
        idx, k = name.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_tensors() -> tuple[dict[str, torch.Tensor], list]:
    t = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            t[f"cuda.{i}"] = s
    return t, list(random.getstate()[1])


def save_checkpoint(root: Path, step: int, model, optimizer, scheduler, extra: dict, acc) -> Path:
    """All ranks call this; rank 0 writes model/optimizer/state, every rank its RNG state."""
    ckdir = root / "checkpoints"
    name = f"step-{step:08d}"
    tmp = ckdir / f".tmp-{name}"
    if acc.is_main_process:
        ckdir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    acc.wait_for_everyone()
    rng, py = rng_tensors()
    save_file(rng, str(tmp / f"rng-rank{acc.process_index}.safetensors"), metadata={"python": json.dumps(py)})
    if acc.is_main_process:
        sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(sd, str(tmp / "model.safetensors"))
        ot, ometa = optimizer_tensors(optimizer.state_dict())
        save_file(ot, str(tmp / "optimizer.safetensors"))
        sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
        write_json(tmp / "state.json", {"step": step, "optimizer": ometa, "scheduler": sched, **extra})
    acc.wait_for_everyone()
    if acc.is_main_process:
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        final = ckdir / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _fsync_dir(ckdir)
        (ckdir / ".latest.tmp").write_text(name)
        os.replace(ckdir / ".latest.tmp", ckdir / "latest")
        _fsync_dir(ckdir)
    acc.wait_for_everyone()
    return ckdir / name


def prune(root: Path, keep: int) -> None:
    ck = sorted((root / "checkpoints").glob("step-*"))
    for d in ck[: max(len(ck) - keep, 0)]:
        shutil.rmtree(d, ignore_errors=True)


def find_checkpoint(root: Path, resume: str | None) -> Path | None:
    """``auto``: the latest complete checkpoint under ``root`` if any; a path: that checkpoint; None: none."""
    if not resume or resume == "none":
        return None
    if resume == "auto":
        latest = root / "checkpoints" / "latest"
        return root / "checkpoints" / latest.read_text().strip() if latest.is_file() else None
    p = Path(resume)
    if not (p / "state.json").is_file():
        raise JanusR1Error(f"{p} is not a checkpoint directory (no state.json)")
    return p


def load_checkpoint(path: Path, model, optimizer, scheduler, rank: int) -> dict:
    state = json.loads((path / "state.json").read_text())
    sd = load_file(str(path / "model.safetensors"))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise JanusR1Error(f"checkpoint {path} does not match the model (missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]})")
    optimizer.load_state_dict(optimizer_state(load_file(str(path / "optimizer.safetensors")), state["optimizer"]))
    scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None] * len(optimizer.param_groups)})
    rng_file = path / f"rng-rank{rank}.safetensors"
    if rng_file.is_file():
        from safetensors import safe_open

        t = load_file(str(rng_file))
        torch.set_rng_state(t["torch"])
        with safe_open(str(rng_file), framework="pt") as f:
            py = json.loads(f.metadata()["python"])
        random.setstate((3, tuple(py), None))
    return state


def export_model(model, vocab, target: Path) -> Path:
    """A transformers-layout model directory (safetensors + config + tokenizer) the engine loader opens."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        vocab.tokenizer.save_pretrained(str(tmp))
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
