"""Run logs: ``OUT/log.jsonl`` (always) plus accelerate's experiment trackers (TensorBoard, Weights & Biases).

``log_with``: ``auto`` (TensorBoard when ``tensorboard`` is installed, else the JSONL only), ``none``, or a comma
list of ``tensorboard`` / ``wandb`` (asking for one that is not installed is an error, not a silent no-op).
TensorBoard writes to ``OUT/tensorboard/<sft|grpo>``; W&B uses project ``janus-r1`` and the run name.

Resuming from the checkpoint of step k continues the log instead of repeating it: lines of ``log.jsonl`` with
step > k (written after that checkpoint by the run that died) are dropped before appending, and TensorBoard is
opened with ``purge_step = k + 1`` so its viewer discards the dead run's later points too.

Scalars: every numeric field of a step record -- SFT ``loss`` and the per-task ``loss_t2i`` / ``loss_judge`` /
``loss_regen`` / ``loss_edit``, GRPO ``reward`` / ``reward_std`` / ``yes_rate`` / ``aha_rate`` / ``kl`` /
``clip_frac``, ``lr``, ``grad_norm``, data and evaluation counters.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

from ..errors import JanusR1Error

TRACKERS = ("tensorboard", "wandb")


def continue_log(path: Path, step: int) -> int:
    """Keep the lines of ``path`` with step <= ``step`` (rewritten atomically); returns how many were dropped."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            ok = int(json.loads(line)["step"]) <= step
        except (ValueError, KeyError, TypeError):
            ok = False  # a line cut by the kill
        if ok:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(x + "\n" for x in kept), encoding="utf-8")
        os.replace(tmp, path)
    return dropped


def resolve_trackers(log_with: str) -> list[str]:
    """``auto`` / ``none`` / ``tensorboard,wandb`` -> the tracker names to start."""
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    if log_with == "none":
        return []
    if log_with == "auto":
        return ["tensorboard"] if is_tensorboard_available() else []
    names = [n.strip() for n in log_with.split(",") if n.strip()]
    available = {"tensorboard": is_tensorboard_available(), "wandb": is_wandb_available()}
    for n in names:
        if n not in TRACKERS:
            raise JanusR1Error(f"log_with: unknown tracker {n!r}; use auto, none, or a list of {', '.join(TRACKERS)}")
        if not available[n]:
            raise JanusR1Error(f"log_with asks for {n} but it is not installed: pip install {n}")
    return names


def _hparams(cfg: dict) -> dict:
    """TensorBoard hparams accept only scalars: lists and tuples become strings."""
    return {k: v if isinstance(v, (bool, int, float, str)) or v is None else str(v) for k, v in cfg.items()}


class Tracker:
    """What a step's record goes to. Only the main process writes; other ranks hold an inert tracker."""

    def __init__(self, out: Path, run_name: str, config: dict, step: int, log_with: str = "auto",
                 main: bool = True) -> None:
        self.path, self.trackers, self.main = Path(out) / "log.jsonl", [], main
        if not main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dropped = continue_log(self.path, step)
        for name in resolve_trackers(log_with):
            if name == "tensorboard":
                from accelerate.tracking import TensorBoardTracker

                kw = {"purge_step": step + 1} if step else {}
                t = TensorBoardTracker(run_name, Path(out) / "tensorboard", **kw)
            else:
                from accelerate.tracking import WandBTracker

                t = WandBTracker("janus-r1", name=f"{Path(out).name}-{run_name}", id=wandb_run_id(Path(out)),
                                 resume="allow")
            t.start()
            t.store_init_configuration(_hparams(config))
            self.trackers.append(t)

    def log(self, record: dict) -> None:
        if not self.main:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        scalars = {k: float(v) for k, v in record.items() if k != "step" and isinstance(v, (int, float))
                   and not isinstance(v, bool) and math.isfinite(v)}
        for t in self.trackers:
            t.log(scalars, step=int(record["step"]))

    def finish(self) -> None:
        for t in self.trackers:
            t.finish()
        self.trackers = []


def wandb_run_id(out: Path) -> str:
    """The W&B run id of this ``--out``: created once and stored in ``OUT/wandb-run-id``, so a resumed run logs
    into the same W&B run (``resume="allow"`` without an id starts a new one on every resume)."""
    path = out / "wandb-run-id"
    if path.is_file():
        rid = path.read_text().strip()
        if rid:
            return rid
    import uuid

    rid = uuid.uuid4().hex[:16]
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".wandb-run-id.tmp")
    tmp.write_text(rid)
    tmp.replace(path)
    return rid


def task_losses(losses: list[float], tasks: list[str]) -> dict[str, float]:
    """Per-task SFT losses of one step's micro-batches: ``loss_<task>`` = mean over that task's micro-batches."""
    out: dict[str, list[float]] = {}
    for loss, task in zip(losses, tasks):
        out.setdefault(f"loss_{task}", []).append(loss)
    return {k: sum(v) / len(v) for k, v in out.items()}


def reward_spread(trajs, gather=None) -> dict[str, float]:
    """``reward_std``: the population std of the trajectories' total rewards of the step, over every process
    (``gather``: accelerate's, collective) -- not the mean of per-process spreads."""
    totals = [float(sum(t.rewards)) for t in trajs]
    if gather is None:
        return {"reward_std": statistics.pstdev(totals) if totals else float("nan")}
    import torch

    t = torch.tensor(totals, dtype=torch.float64)
    n, s, q = gather(torch.stack([torch.tensor(float(len(totals)), dtype=torch.float64), t.sum(),
                                  (t * t).sum()])[None]).sum(0).tolist()
    return {"reward_std": math.sqrt(max(q / n - (s / n) ** 2, 0.0)) if n else float("nan")}
