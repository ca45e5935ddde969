"""Sharded checkpoints through ``torch.distributed.checkpoint`` (DCP): every rank writes its own shard, in parallel,
in the background, and a checkpoint resumes on any number of processes and under any engine.

Why: gathering the full fp32 weights (29.6 GB at 7B) and AdamW state (~56 GB) onto rank 0 and writing them through
safetensors single-threaded peaked at ~140 GB on rank 0 and kept the other ranks at a barrier for minutes per save.
Here nothing is gathered:

* FSDP2 saves its DTensor shards (``get_model_state_dict`` / ``get_optimizer_state_dict`` without
  ``full_state_dict``); DCP records each chunk's offsets, so a load on another world size (or into full tensors)
  reads exactly the chunks it needs.
* ZeRO-2/3 (zero.py) owns no DTensors: each weight is gathered through DeepSpeed's fragment API one at a time and
  kept only by the rank that owns it (a size-balanced split), so each rank writes ~1/world of the state.
* One replica per process (DDP): every rank offers the same tensors and DCP's planner writes each once, spread over
  the ranks.

Keys are engine-neutral: ``weights.<name>`` (``model.state_dict()`` names) and ``optim.<policy param name>.<k>``
(``exp_avg``, ``exp_avg_sq``, ``step``). Non-tensor optimizer values, the parameter groups (by name), the scheduler
and the step live in ``state.json``; each rank's RNG in ``rng-rank<r>.safetensors``; ``model/`` holds config and
tokenizer so :mod:`export` can turn the checkpoint into a model folder alone. DCP writes one ``__<r>_0.distcp``
per rank (tensors serialised by ``torch.save``, read back with ``torch.load(weights_only=True)``) and a
``.metadata`` file that torch pickles itself; it is only ever read through DCP's own API.

Saves are asynchronous where ``dcp.async_save`` exists (torch >= 2.4; 2.13 and 2.14 have it): the shard is staged
to host memory, the step continues, and a background thread writes on its own gloo group. The checkpoint directory
is renamed into place (and ``latest`` updated) as soon as DCP's coordinator has written the metadata, i.e. once every
rank's shard is on disk, and the files' checksums are written (checksums.py), so a kill at any moment leaves the
previous complete checkpoint, and a complete one is the resume point at once.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import warnings
from pathlib import Path

import torch

from ..errors import JanusR1Error
from .atomic import _fsync_dir, dir_bytes, fsync_tree, publish, write_failure
from .checksums import write_checksums

logger = logging.getLogger("janus_r1.training")
W, OPT = "weights.", "optim."
DIR = "dcp"


def _dcp():
    import torch.distributed.checkpoint as dcp

    return dcp


def is_sharded_checkpoint(path: Path) -> bool:
    return (Path(path) / DIR / ".metadata").is_file()


def tensor_specs(path: Path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """``{key: (shape, dtype)}`` of every tensor in the checkpoint, from DCP's metadata (no tensor data read)."""
    from torch.distributed.checkpoint import FileSystemReader

    md = FileSystemReader(str(Path(path) / DIR)).read_metadata()
    return {k: (tuple(m.size), m.properties.dtype) for k, m in md.state_dict_metadata.items() if hasattr(m, "size")}


def read_full(path: Path, keys: list[str], specs: dict | None = None) -> dict[str, torch.Tensor]:
    """Full tensors of ``keys`` on this process alone (no collective): DCP reads only the chunks holding them."""
    specs = specs or tensor_specs(path)
    sd = {k: torch.empty(specs[k][0], dtype=specs[k][1]) for k in keys}
    if sd:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.simplefilter("ignore", UserWarning)
            _dcp().load(sd, checkpoint_id=str(Path(path) / DIR), no_dist=True)
    return sd


def iter_full(path: Path, prefix: str, budget_bytes: int = 1 << 30, specs: dict | None = None):
    """``(key without prefix, full tensor)`` in sorted order, read in groups of at most ``budget_bytes`` (one
    tensor when a single one is bigger): the whole state is never in memory."""
    specs = specs or tensor_specs(path)
    keys = sorted(k for k in specs if k.startswith(prefix))
    group: list[str] = []
    size = 0
    for n, k in enumerate(keys):
        group.append(k)
        size += _nbytes(*specs[k])
        if size >= budget_bytes or n == len(keys) - 1:
            for key, t in read_full(path, group, specs).items():
                yield key.removeprefix(prefix), t
            group, size = [], 0


def _nbytes(shape, dtype) -> int:
    n = 1
    for s in shape:
        n *= s
    return n * torch.empty((), dtype=dtype).element_size()


def checkpoint_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    """Every weight of a checkpoint of either format, in full (small models: tests, tools)."""
    if is_sharded_checkpoint(ckpt):
        return dict(iter_full(ckpt, W))
    from safetensors.torch import load_file

    return load_file(str(Path(ckpt) / "model.safetensors"))


class _Lazy:
    """``weights[name]``, ``named["state"][name][k]`` read when used (ZeRO resume: one full tensor at a time)."""

    def __init__(self, path: Path, prefix: str, specs: dict) -> None:
        self.path, self.prefix, self.specs = path, prefix, specs

    def __getitem__(self, key: str) -> torch.Tensor:
        return read_full(self.path, [self.prefix + key], self.specs)[self.prefix + key]


class Deferred:
    def __init__(self, lazy: _Lazy, key: str) -> None:
        self.lazy, self.key = lazy, key

    def load(self) -> torch.Tensor:
        return self.lazy[self.key]


def flatten(model_sd: dict, optim_sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Engine state dicts -> DCP's flat tensor dict and the JSON part (param groups, non-tensor values)."""
    tensors = {W + k.removeprefix("model."): v for k, v in model_sd.items()}  # Policy's keys: "model." + name
    meta = {"param_groups": optim_sd.get("param_groups", []), "scalars": {}}
    for name, st in optim_sd.get("state", {}).items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{OPT}{name}.{k}"] = v
            else:
                meta["scalars"][f"{name}.{k}"] = v
    return tensors, meta


class Saver:
    """Writes checkpoints (every rank calls :meth:`save`); at most one asynchronous save in flight.

    A background save is published as soon as its write completes: a finisher thread waits for DCP's future,
    then (rank 0) hashes the files (checksums.py), renames the folder into place and updates ``latest``. Before,
    that happened only in :meth:`wait` at the next save, so a crash resumed up to ``2 * save_every - 1`` steps
    back. :meth:`poll` (every step end) re-raises a failure of the background write at once."""

    def __init__(self, root: Path, acc, use_async: bool) -> None:
        import torch.distributed as dist

        self.root, self.acc = Path(root), acc
        self.dist = dist.is_available() and dist.is_initialized()
        self.use_async = use_async and hasattr(_dcp(), "async_save")
        # the background writer's collectives must never interleave with the training's on one group
        self.group = dist.new_group(backend="gloo") if self.dist and self.use_async else None
        self.pending: threading.Thread | None = None
        self.error: BaseException | None = None
        self.seconds = 0.0  # time the training waited on checkpoints (blocking part), for the log
        self.hashed = (0, 0.0)  # bytes hashed and seconds spent on the checksums (rank 0), for the docs' figure

    def save(self, step: int, tensors: dict, write_small, on_done=None) -> None:
        """``tensors``: this rank's DCP state; ``write_small(tmp)``: the JSON / RNG / model files (every rank,
        before the shards); ``on_done(final)``: rank 0, once the checkpoint is complete (pruning)."""
        t0 = time.perf_counter()
        self.wait()
        ckdir, name = self.root / "checkpoints", f"step-{step:08d}"
        tmp = ckdir / f".tmp-{name}"
        need = self._need(ckdir, tensors)
        if self.acc.is_main_process:
            ckdir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            (tmp / DIR).mkdir(parents=True)
        self.acc.wait_for_everyone()
        kw = {"checkpoint_id": str(tmp / DIR), "no_dist": not self.dist}
        try:
            write_small(tmp)
            if self.use_async:
                fut = _dcp().async_save(tensors, process_group=self.group, **kw)
                fut = getattr(fut, "upload_completion", fut)  # AsyncSaveResponse (staging + upload) on newer torch
                self.written_at = None
                self.pending = threading.Thread(target=self._finish, args=(fut, tmp, ckdir / name, on_done, t0, need),
                                                name="janus-r1-checkpoint", daemon=True)
                self.pending.start()
            else:
                _dcp().save(tensors, **kw)
                self._finalize(tmp, ckdir / name, on_done, t0)
        except BaseException as e:  # DCP's CheckpointException is a BaseException
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            err = write_failure(e, tmp, need)
            if err is e:
                raise
            raise err from e
        self.seconds += time.perf_counter() - t0

    def _need(self, ckdir: Path, tensors: dict) -> int:
        """About how many bytes a checkpoint takes: the last complete one's size, else this rank's tensors times
        the number of ranks (for the disk-full message)."""
        latest = ckdir / "latest"
        if latest.is_file():
            size = dir_bytes(ckdir / latest.read_text().strip())
            if size:
                return size
        world = self.acc.num_processes
        return world * sum(t.numel() * t.element_size() for t in tensors.values() if torch.is_tensor(t))

    def _finish(self, fut, tmp: Path, final: Path, on_done, t0: float, need: int) -> None:
        """The finisher thread: wait for the background write, then publish (rank 0); a failure is kept for
        :meth:`poll` / :meth:`wait` to raise on the training thread."""
        try:
            fut.result()
            self.written_at = time.perf_counter()
            self._finalize(tmp, final, on_done, t0)
        except BaseException as e:  # noqa: BLE001 -- re-raised on the training thread
            self.error = write_failure(e, tmp, need)
            if self.error is not e:
                self.error.__cause__ = e

    def poll(self) -> None:
        """Step end: raise a failed background save now; forget a finished one."""
        if self.pending is not None and not self.pending.is_alive():
            self.pending.join()
            self.pending = None
        if self.error is not None:
            e, self.error = self.error, None
            raise e

    def wait(self) -> None:
        """Block until the save in flight is complete and published (rank 0)."""
        if self.pending is not None:
            self.pending.join()
            self.pending = None
        self.poll()

    def _finalize(self, tmp: Path, final: Path, on_done, t0: float) -> None:
        """Rank 0 only, and without a barrier: DCP's coordinator (rank 0) returns after every rank's write result
        reached it and the metadata is written, so the directory is complete. The checksums are written before
        the rename, so a published checkpoint always has them."""
        from .memtrace import mark_shard_written

        rank, done = self.acc.process_index, (getattr(self, "written_at", None) if self.use_async else None)
        mark_shard_written(tmp / DIR / f"__{rank}_0.distcp", rank, (done or time.perf_counter()) - t0)
        if not self.acc.is_main_process:
            return
        h0 = time.perf_counter()
        n = write_checksums(tmp)
        self.hashed = (self.hashed[0] + n, self.hashed[1] + time.perf_counter() - h0)
        fsync_tree(tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.replace(final)
        _fsync_dir(final.parent)
        publish(final)
        if on_done is not None:
            on_done(final)


def check_sharded_compatible(path: Path, own_shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """Shape / name differences between a sharded checkpoint's weights and the model (for check_compatible)."""
    specs = tensor_specs(path)
    theirs = {k.removeprefix(W): s for k, (s, _) in specs.items() if k.startswith(W)}
    return _diffs(own_shapes, theirs)


def _diffs(mine: dict, theirs: dict) -> list[str]:
    shapes = [f"{k}: {list(theirs[k])} in the checkpoint vs {list(v)} now" for k, v in mine.items()
              if k in theirs and tuple(theirs[k]) != tuple(v)]
    missing, unexpected = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
    diffs = shapes[:3] + ([f"{len(shapes)} tensors differ in shape"] if len(shapes) > 3 else [])
    if missing or unexpected:
        diffs.append(f"{len(missing)} weights missing from the checkpoint (e.g. {missing[:2]}), "
                     f"{len(unexpected)} unknown to the model (e.g. {unexpected[:2]})")
    return diffs


def load_weights(path: Path, root: torch.nn.Module, sharded: bool) -> None:
    """The checkpoint's weights into ``root.model`` (collective when ``sharded``: each rank reads its chunks)."""
    dcp = _dcp()
    if sharded:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            set_model_state_dict,
        )

        sd = get_model_state_dict(root, options=StateDictOptions())
        flat = {W + k.removeprefix("model."): v for k, v in sd.items()}
        dcp.load(flat, checkpoint_id=str(Path(path) / DIR))
        set_model_state_dict(root, {"model." + k.removeprefix(W): v for k, v in flat.items()},
                             options=StateDictOptions(strict=True))
        return
    own = root.model.state_dict()  # views of the parameters: DCP copies into them
    flat = {W + k: v for k, v in own.items()}
    with torch.no_grad():
        dcp.load(flat, checkpoint_id=str(Path(path) / DIR), no_dist=True)


def optimizer_named(path: Path, root: torch.nn.Module, meta: dict, sharded: bool) -> dict:
    """The name-keyed optimizer state (``sharding.load_optimizer_state``'s input): tensors laid out like each
    parameter (this rank's DTensor shard under FSDP2), read in one collective DCP load."""
    specs = tensor_specs(path)
    params = dict(root.named_parameters())
    targets: dict[str, torch.Tensor] = {}
    state: dict[str, dict] = {}
    for key, (shape, dtype) in specs.items():
        if not key.startswith(OPT):
            continue
        name, k = key.removeprefix(OPT).rsplit(".", 1)
        if name not in params:
            raise JanusR1Error(f"checkpoint {path}: optimizer state for {name!r}, which the model does not have")
        p = params[name]
        like = torch.empty_like(p, dtype=dtype) if tuple(shape) == tuple(p.shape) else torch.empty(shape, dtype=dtype)
        targets[key] = like
        state.setdefault(name, {})[k] = like
    if targets:
        _dcp().load(targets, checkpoint_id=str(Path(path) / DIR), no_dist=not sharded)
    for key, v in meta["scalars"].items():
        name, k = key.rsplit(".", 1)
        state.setdefault(name, {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def zero_sources(path: Path, meta: dict):
    """Lazy full weights and optimizer states for :meth:`zero.Zero.load` (each read when asked)."""
    specs = tensor_specs(path)
    weights = _Lazy(path, W, specs)
    optim = _Lazy(path, OPT, specs)
    state: dict[str, dict] = {}
    for key in specs:
        if key.startswith(OPT):
            name, k = key.removeprefix(OPT).rsplit(".", 1)
            state.setdefault(name, {})[k] = Deferred(optim, f"{name}.{k}")
    for key, v in meta["scalars"].items():
        name, k = key.rsplit(".", 1)
        state.setdefault(name, {})[k] = v
    return weights, {"state": state, "param_groups": meta["param_groups"]}


def owners(sizes: dict[str, int], world: int) -> dict[str, int]:
    """A size-balanced assignment of tensors to ranks (largest first onto the least-loaded rank)."""
    load = [0] * world
    out = {}
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        r = min(range(world), key=lambda i: (load[i], i))
        out[name] = r
        load[r] += sizes[name]
    return out
