"""Atomic checkpoints (model, optimizer, scheduler, RNG, data position) in safetensors + JSON, and the export.

Layout: ``OUT/checkpoints/step-00000042/{model,optimizer,rng-rank<r>}.safetensors + state.json`` and
``OUT/checkpoints/latest`` (the name of the newest complete checkpoint). A checkpoint is written into a hidden
temporary directory and renamed into place only when complete, so a run killed at any moment leaves either the
previous or the new checkpoint, never half of one. Every published checkpoint carries the SHA-256 of each file
(``checksums.sha256``, checksums.py), checked before a resume or an export reads it. Nothing is pickled; loading
never runs code.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import JanusR1Error
from . import dcp_checkpoint as DC
from .atomic import _fsync_dir, fsync_tree, publish, replaced_folder, write_failure
from .checksums import CheckpointDamaged, newest_verified, verify, write_checksums

logger = logging.getLogger("janus_r1.training")


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def optimizer_tensors(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split a name-keyed optimizer state dict (``sharding.optimizer_state``) into flat tensors and JSON."""
    tensors, meta = {}, {"param_groups": sd["param_groups"], "scalars": {}}
    for name, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{name}.{k}"] = v.detach().cpu().contiguous()
            else:
                meta["scalars"][f"{name}.{k}"] = v
    return tensors, meta


def optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict = {}
    for key, v in tensors.items():
        name, k = key.removeprefix("state.").rsplit(".", 1)
        state.setdefault(name, {})[k] = v
    for key, v in meta["scalars"].items():
        name, k = key.rsplit(".", 1)
        state.setdefault(name, {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


class Deferred:
    """A tensor of an open safetensors file, read when used: a resuming rank holds one full optimizer tensor at a
    time and keeps only its shard of it."""

    def __init__(self, f, key: str) -> None:
        self.f, self.key = f, key

    def load(self) -> torch.Tensor:
        return self.f.get_tensor(self.key)


class _Lazy:
    """``weights[name]`` read from an open safetensors file when asked (one full tensor at a time)."""

    def __init__(self, f) -> None:
        self.f = f

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.f.get_tensor(key)


def rng_tensors() -> tuple[dict[str, torch.Tensor], list]:
    t = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            t[f"cuda.{i}"] = s
    return t, list(random.getstate()[1])


def write_rng(directory: Path, rank: int) -> None:
    rng, py = rng_tensors()
    save_file(rng, str(directory / f"rng-rank{rank}.safetensors"), metadata={"python": json.dumps(py)})


def write_model_files(model, vocab, directory: Path) -> None:
    """config.json (+ generation_config.json) and the tokenizer: what the export needs besides the weights."""
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(str(directory))
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.save_pretrained(str(directory))
    vocab.tokenizer.save_pretrained(str(directory))


def save_checkpoint(root: Path, step: int, states: tuple[dict, dict], scheduler, extra: dict, acc) -> Path:
    """All ranks call this; rank 0 writes the full model and optimizer ``states`` (``Run.full_state``: full weights,
    name-keyed optimizer state) and the scheduler, every rank its RNG state. Rank 0 hashes the files
    (checksums.py) before the checkpoint is renamed into place; a full disk is one line (atomic.write_failure)."""
    model_sd, opt_sd = states
    ckdir = root / "checkpoints"
    name = f"step-{step:08d}"
    tmp = ckdir / f".tmp-{name}"
    if acc.is_main_process:
        ckdir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    acc.wait_for_everyone()
    try:
        write_rng(tmp, acc.process_index)
        if acc.is_main_process:
            save_file({k: v.contiguous() for k, v in model_sd.items()}, str(tmp / "model.safetensors"))
            ot, ometa = optimizer_tensors(opt_sd)
            save_file(ot, str(tmp / "optimizer.safetensors"))
            sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
            write_json(tmp / "state.json", {"step": step, "optimizer": ometa, "scheduler": sched, **extra})
    except BaseException as e:
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        need = 3 * sum(t.numel() * t.element_size() for t in model_sd.values())  # weights + AdamW's two moments
        err = write_failure(e, tmp, need)
        if err is e:
            raise
        raise err from e
    acc.wait_for_everyone()
    if acc.is_main_process:
        write_checksums(tmp)
        fsync_tree(tmp)
        final = ckdir / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _fsync_dir(ckdir)
        publish(final)
    acc.wait_for_everyone()
    return ckdir / name


def prune(root: Path, keep: int) -> None:
    ck = sorted((root / "checkpoints").glob("step-*"))
    for d in ck[: max(len(ck) - keep, 0)]:
        shutil.rmtree(d, ignore_errors=True)


def find_checkpoint(root: Path, resume: str | None, acc=None) -> Path | None:
    """``auto``: the latest checkpoint under ``root`` that verifies (checksums.py), falling back to the newest
    earlier one that does, and saying so; a path: that checkpoint, which must verify; None: none. The main process
    reads and hashes; the others get its answer (or its error), so a run never hashes its checkpoint once per
    rank."""
    main = acc is None or acc.is_main_process
    answer: list = [None]
    if main:
        try:
            answer = [("ok", _find_verified(root, resume))]
        except JanusR1Error as e:
            answer = [("error", str(e))]
    if acc is not None and acc.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(answer, from_process=0)
    kind, value = answer[0]
    if kind == "error":
        raise (CheckpointDamaged if main else JanusR1Error)(value)
    return value


def _find_verified(root: Path, resume: str | None) -> Path | None:
    if not resume or resume == "none":
        return None
    if resume == "auto":
        ckdir = root / "checkpoints"
        latest = ckdir / "latest"
        if not latest.is_file() and not any(ckdir.glob("step-*")):
            return None
        found, failed = newest_verified(ckdir, latest.read_text().strip() if latest.is_file() else None)
        if found is None:
            raise CheckpointDamaged(f"{failed[0]}; no checkpoint in {ckdir} verifies: --resume none starts over")
        for msg in failed:
            logger.warning(f"{msg}; --resume auto falls back to {found.name}, the newest checkpoint that verifies")
        return found
    p = Path(resume)
    if not (p / "state.json").is_file():
        raise JanusR1Error(f"{p} is not a checkpoint directory (no state.json)")
    verify(p)
    return p


def check_compatible(path: Path, model, stage: str, cfg: dict) -> None:
    """A clear error when a checkpoint is another model's run (instead of a raw "size mismatch" later)."""
    from safetensors import safe_open

    state = json.loads((path / "state.json").read_text())
    old = state.get("config", {})
    diffs = []
    if state.get("stage", stage) != stage:
        diffs.append(f"it is a {state['stage']} run, this is {stage}")
    for key in ("model", "task"):
        if key in old and old[key] != cfg.get(key):
            diffs.append(f"{key} {old[key]!r} in the checkpoint vs {cfg.get(key)!r} now")
    mine = {k: tuple(v.shape) for k, v in own_shapes(model).items()}
    if DC.is_sharded_checkpoint(path):
        diffs += DC.check_sharded_compatible(path, mine)
    elif (path / "model.safetensors").is_file():
        with safe_open(str(path / "model.safetensors"), framework="pt") as f:
            diffs += DC._diffs(mine, {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
    else:
        raise JanusR1Error(f"{path} holds neither a sharded checkpoint (dcp/.metadata) nor model.safetensors: it "
                           "is incomplete or not a janus-r1 checkpoint; --resume none starts over")
    if diffs:
        raise JanusR1Error(f"--out holds another run: checkpoint {path} does not match ({'; '.join(diffs)}); "
                           "use another --out, or --resume none to start over there")


def own_shapes(model) -> dict:
    """``{name: tensor}`` of the unsharded model's state dict, shapes global (a sharded policy's DTensors report
    their full shape)."""
    return model.state_dict()


def load_model_weights(path: Path, model) -> dict:
    """Load a checkpoint's weights into the (unsharded) model, one tensor at a time (every rank does this: a
    second full copy of a 7B model per rank would cost ~30 GB of host memory each); returns its state.json."""
    from safetensors import safe_open

    state = json.loads((path / "state.json").read_text())
    own = model.state_dict()
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        missing, unexpected = sorted(set(own) - keys), sorted(keys - set(own))
        if missing or unexpected:
            raise JanusR1Error(f"checkpoint {path} does not match the model (missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]})")
        with torch.no_grad():
            for k in sorted(keys):
                own[k].copy_(f.get_tensor(k))
    return state


def load_training_state(path: Path, policy, optimizer, scheduler, rank: int, zero=None, sharded: bool = False) -> None:
    """Optimizer (each rank its shard), scheduler and this rank's RNG state, after the model is sharded; under
    DeepSpeed (``zero``, zero.py) also the exact fp32 master weights. Either checkpoint format."""
    from safetensors import safe_open

    from .sharding import load_optimizer_state

    state = json.loads((path / "state.json").read_text())
    if DC.is_sharded_checkpoint(path):
        if zero is not None:
            zero.load(*DC.zero_sources(path, state["optimizer"]))
        else:
            load_optimizer_state(policy, optimizer, DC.optimizer_named(path, policy, state["optimizer"], sharded))
    else:
        with safe_open(str(path / "optimizer.safetensors"), framework="pt") as f:  # read tensor by tensor
            named = optimizer_state({k: Deferred(f, k) for k in f.keys()}, state["optimizer"])
            if zero is not None:
                with safe_open(str(path / "model.safetensors"), framework="pt") as m:
                    zero.load(_Lazy(m), named)
            else:
                load_optimizer_state(policy, optimizer, named)
    groups = scheduler.optimizer.param_groups
    scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None] * len(groups)})
    # One schedule drives every group, but engines cut the groups differently (ZeRO-3 sub-groups), and DeepSpeed's
    # AdamW gets no optimizer state dict that would carry the current rate: set it on every group from the schedule.
    lr = scheduler.get_last_lr()[0]
    scheduler.base_lrs = [scheduler.base_lrs[0]] * len(groups)
    scheduler._last_lr = [lr] * len(groups)
    for g in groups:
        g["lr"] = lr
    rng_file = path / f"rng-rank{rank}.safetensors"
    if rng_file.is_file():
        t = load_file(str(rng_file))
        torch.set_rng_state(t["torch"])
        with safe_open(str(rng_file), framework="pt") as f:
            py = json.loads(f.metadata()["python"])
        random.setstate((3, tuple(py), None))


def export_model(model, vocab, target: Path) -> Path:
    """A transformers-layout model directory (safetensors + config + tokenizer) the engine loader opens."""
    with replaced_folder(target) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        vocab.tokenizer.save_pretrained(str(tmp))
    return Path(target)
