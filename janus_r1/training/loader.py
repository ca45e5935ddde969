"""The SFT data stream: a torch ``DataLoader`` whose item ``step`` is that step's micro-batches with their images.

Why a step-indexed dataset: every draw is seeded by (seed, step, micro-step, rank) exactly as the trainer always
did, so the order is fixed by the seed whatever the number of workers, and resuming at step k is starting the
sampler at k -- no iterator state to save. Workers (``num_workers``, ``prefetch_factor``) open and decode the
images off the main thread; the main process only runs the model.

Lazy verification: an image is checked when a worker first opens it. A missing or corrupt one is skipped -- the
sample is redrawn from the same seeded stream, so the choice stays deterministic -- and reported (path and reason)
in the micro-batch's ``bad`` list, which the trainer logs and counts. Nothing opens every image at start-up.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from ..errors import JanusR1Error
from . import sft as S
from .data import open_image
from .seeds import derive_seed

MAX_REDRAWS = 64  # per sample: more bad images than this in a row means the data set is broken, not a few files


@dataclass
class MicroBatch:
    task: str
    samples: list
    images: dict = field(default_factory=dict)  # path -> RGB PIL image, every image the samples need
    bad: list = field(default_factory=list)  # "path: why" of images skipped while drawing


def sample_paths(s) -> list[str]:
    """Every image a sample's context and target need."""
    return [p for p, _ in s.history] + [x for x in (s.current, s.source, s.target) if x]


class SFTSteps(torch.utils.data.Dataset):
    """Item ``step``: the ``grad_accum`` micro-batches of (step, rank), drawn as the trainer's loop draws them."""

    def __init__(self, pools, cfg, rank: int, mix: list[float] | None, world: int = 1) -> None:
        self.pools, self.cfg, self.rank, self.mix, self.world = pools, cfg, rank, mix, world
        self.known_bad: dict[str, str] = {}

    def _open(self, path: str):
        if path in self.known_bad:  # this process already found it bad: skip without reopening
            raise JanusR1Error(self.known_bad[path])
        try:
            return open_image(path)
        except JanusR1Error as e:
            self.known_bad[path] = str(e)
            raise

    def __len__(self) -> int:
        return self.cfg.max_steps

    def _draw(self, task: str, rng: random.Random):
        if task == "edit":
            return S.draw_edit(self.pools, rng, self.cfg.prompt_dropout)
        return self.pools.draw(task, rng)

    def _sample(self, task: str, rng: random.Random, mb: MicroBatch, pair: bool = False) -> None:
        """Append one sample (``pair``: a Task-II positive and negative of one prompt) whose images all open."""
        for _ in range(MAX_REDRAWS):
            got = self.pools.draw_pair(rng) if pair else [self._draw(task, rng)]
            try:
                loaded = {p: mb.images[p] if p in mb.images else self._open(p) for s in got for p in sample_paths(s)}
            except JanusR1Error as e:
                mb.bad.append(str(e))
                continue
            mb.images.update(loaded)
            mb.samples.extend(got)
            return
        raise JanusR1Error(f"{MAX_REDRAWS} draws in a row hit bad images (last: {mb.bad[-1]}); check --data and "
                           "--image-root")

    def __getitem__(self, step: int) -> list[MicroBatch]:

        c, out = self.cfg, []
        for m in range(c.grad_accum):
            shared = random.Random(derive_seed(c.seed, "task", step, m))  # the same task on every rank
            # slot m * world + rank: one process with grad_accum n draws what n processes draw with 1
            rng = random.Random(derive_seed(c.seed, "data", step, m * self.world + self.rank))
            task = "edit" if c.task == "edit" else shared.choices(S.TASKS, weights=self.mix)[0]
            mb = MicroBatch(task, [])
            pairs = c.batch_size // 2 if task == "judge" and c.judge_pairs else 0
            for _ in range(pairs):
                self._sample(task, rng, mb, pair=True)
            for _ in range(c.batch_size - 2 * pairs):
                self._sample(task, rng, mb)
            out.append(mb)
        return out


def sft_stream(pools, cfg, rank: int, start: int, mix: list[float] | None, workers: int = 2, prefetch: int = 4,
               world: int = 1):
    """An iterator over steps ``start .. max_steps - 1``, each a list of :class:`MicroBatch`."""
    steps = SFTSteps(pools, cfg, rank, mix, world)
    kw = {"num_workers": workers}
    if workers > 0:
        kw.update(prefetch_factor=prefetch, multiprocessing_context="fork" if _can_fork() else None,
                  worker_init_fn=_die_with_parent)
    return iter(torch.utils.data.DataLoader(steps, sampler=range(start, cfg.max_steps), batch_size=None,
                                            collate_fn=_keep, **kw))


def _keep(item):
    return item


def _die_with_parent(_worker_id: int) -> None:
    """Linux: a worker is killed with its trainer. A SIGKILLed trainer otherwise leaves workers blocked on a full
    result pipe forever, holding the job's stdout/stderr open (and its memory)."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _can_fork() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()
