"""Periodic evaluation during training: the policy's self-score and Yes-rate on a fixed held-out prompt list.

Every ``eval_every`` steps (and at the last step) the current weights run the engine's own introspective loop
(``janus-r1 batch``'s :func:`janus_r1.batch.run_batch` over ``janus_r1.generation.tasks``, prompts split across
processes by index) into ``OUT/eval/step-N/`` -- the GenEval layout (``<index>/samples/0000.png`` +
``metadata.jsonl``), so GenEval's scorer runs on it unchanged. ``OUT/eval/prompts.jsonl`` holds the held-out
list in the ``janus-r1 batch`` format (GenEval's ``evaluation_metadata.jsonl`` is already one), so
``janus-r1 batch --prompts OUT/eval/prompts.jsonl`` regenerates the same set with any exported checkpoint.

Logged: ``eval_self_score`` (mean S = P(Yes)/(P(Yes)+P(No)) the policy gives its first image), ``eval_yes_rate``
(first verdict "Yes"), ``eval_regen_rate`` (a second image was drawn). The training RNG streams are untouched
(forked around the run), so a resumed run stays bit-identical whether or not it evaluated.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from pathlib import Path

import torch

from ..batch import barrier_and_summarise, read_prompts, run_batch
from ..generation.fused import borrowed_weights


@contextlib.contextmanager
def isolated_rng():
    """Run something that draws random numbers without moving torch's or Python's global streams."""
    state = random.getstate()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        yield
    random.setstate(state)


def trace_stats(trace: dict) -> tuple[float, float, float, float]:
    """(sum of first-image S, first verdicts "Yes", samples with a second image, samples) of one prompt."""
    s = yes = regen = n = 0.0
    for sample in trace.get("samples", []):
        first = sample["attempts"][0]
        s += float(first["score"]) if first.get("score") is not None else float("nan")
        yes += first.get("verdict") == "Yes"
        regen += len(sample["attempts"]) > 1
        n += 1
    return s, yes, regen, n


class Evaluator:
    """Holds the held-out prompts; :meth:`run` evaluates the current weights at a step."""

    def __init__(self, prompts: str | None, every: int, out: Path, seed: int = 0, max_steps: int = 0,
                 **generate_kwargs) -> None:
        """``generate_kwargs`` go to ``JanusR1.generate`` (default: the paper's inference settings)."""
        self.every, self.out, self.seed, self.max_steps = every, Path(out) / "eval", seed, max_steps
        self.generate_kwargs = generate_kwargs
        self.items = read_prompts(prompts) if prompts and every > 0 else []

    def due(self, step: int) -> bool:
        return bool(self.items) and (step % self.every == 0 or step == self.max_steps)

    def write_prompt_file(self) -> Path:
        """``OUT/eval/prompts.jsonl``: the held-out list as ``janus-r1 batch`` reads it (GenEval metadata kept)."""
        body = "".join(json.dumps({**it.meta, "prompt": it.prompt}, ensure_ascii=False) + "\n" for it in self.items)
        self.out.mkdir(parents=True, exist_ok=True)
        target, tmp = self.out / "prompts.jsonl", self.out / ".prompts.jsonl.tmp"
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, target)
        return target

    def run(self, model, vocab, step: int, rank: int = 0, world: int = 1, gather=None) -> dict[str, float]:
        """Generate and self-judge this rank's share; ``gather(tensor (1, 4)) -> (world, 4)`` sums over ranks."""
        from ..api import JanusR1

        target = self.out / f"step-{step:08d}"
        was_training = model.training
        with isolated_rng(), torch.no_grad(), borrowed_weights(model):  # the optimizer owns the weights
            done = run_batch(JanusR1(model, vocab), self.items, target, rank=rank, world=world, seed=self.seed,
                             **self.generate_kwargs)
        model.train(was_training)
        if was_training:  # the frozen encoders stay in eval mode (trainer.set_train's rule)
            model.model.vision_model.eval()
            model.model.vqmodel.eval()
        barrier_and_summarise(target, self.items, rank, world, done)
        mine = torch.zeros(1, 4, dtype=torch.float64)
        for it in self.items:
            if it.index % world == rank:
                trace = json.loads((target / f"{it.index:05d}" / "trace.json").read_text(encoding="utf-8"))
                mine += torch.tensor([trace_stats(trace)], dtype=torch.float64)
        total = (gather(mine.to(_device(model))).cpu() if gather else mine).sum(0)
        n = max(float(total[3]), 1.0)
        return {"eval_self_score": float(total[0]) / n, "eval_yes_rate": float(total[1]) / n,
                "eval_regen_rate": float(total[2]) / n}


def _device(model) -> torch.device:
    return next(model.parameters()).device
