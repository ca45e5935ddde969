"""SFT (spec §3): Task-I text-to-image, Task-II self-evaluation, Task-III regeneration, and editing.

Every training row is the *inference* context of the engine followed by the target:

* Task-I: ``[prompt]`` -> 576 image codes (gen-head CE). 10 % prompt dropout (caption -> PAD, BOS/BOI kept).
* Task-II: ``templates.judge_context(prompt, history, current)`` -> answer ids (lm-head CE): up to ``t - 1`` earlier
  failed attempts (SigLIP image, SELF_CHECK, "No" + reason + EOS, REGEN_TRIGGER) then the judged image and
  SELF_CHECK; the answer is the verdict id followed by the reason and EOS. Positives and negatives 50/50.
* Task-III: ``templates.regen_context(prompt, history)`` -> codes of an image better than every failed attempt
  (gen path for all images, the bracketed role tokens -- not the reference's ``User:`` bug S1).
* Editing: the §3.6 row of ``tasks.edit`` -> output codes; 10 % instruction dropout.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image

from ..generation.context import Piece, uncond
from ..generation.facade import Janus
from ..generation.templates import edit_row, judge_context, regen_context
from ..generation.trace import Judgement
from .data import EditRecord, PromptRecord, Report, open_image
from .sequences import Pass

TASKS = ("t2i", "judge", "regen")


def _lead(reason: str) -> str | None:
    r = reason.strip().lower()
    return "yes" if r.startswith("yes") else "no" if r.startswith("no") else None


def answer_text(verdict: str, reason: str) -> str:
    """The Task-II answer: the verdict word (capitalised) then the reason (its own leading Yes/No replaced)."""
    r = reason.strip()
    if _lead(r) == verdict.lower():
        r = r[len(verdict):]
        return verdict + r
    return verdict + (", " + r if r else "")


def answer_ids(j: Janus, verdict: str, reason: str, max_tokens: int) -> list[int]:
    """[Yes|No id] + reason ids + EOS, at most ``max_tokens``: the reason is cut, never the EOS (bug S4)."""
    ids = j.vocab.ids
    rest = answer_text(verdict, reason)[len(verdict):]
    body = j.vocab.encode_continuation(rest) if rest else []
    return [ids.yes if verdict == "Yes" else ids.no] + body[: max(max_tokens - 2, 0)] + [ids.eos]


@dataclass
class Sample:
    task: str  # t2i | judge | regen | edit
    prompt: str
    target: str | None = None  # image path to draw (t2i, regen, edit)
    current: str | None = None  # image path to judge (judge)
    verdict: str | None = None  # judge target verdict
    reason: str = ""
    history: list[tuple[str, str]] = field(default_factory=list)  # (image path, reason) of failed attempts
    drop: bool = False  # prompt / instruction dropout
    source: str | None = None  # editing input image


class Pools:
    """Per-task candidates selected from label records with the paper's (or the released code's) rule."""

    def __init__(self, records: list[PromptRecord], cfg, report: Report | None = None) -> None:
        self.cfg = cfg
        self.report = report or Report("skip")
        self.t2i: list[tuple[str, str]] = []
        self.judge: list[tuple[PromptRecord, list, list]] = []
        self.regen: list[tuple[PromptRecord, list, list]] = []
        for rec in records:
            gen_pos = [x for x in rec.images if self._is(x, "gen")]
            judge_pos = [x for x in rec.images if self._is(x, "judge") and self._agrees(x, "yes")]
            neg = [x for x in rec.images if self._is(x, "neg") and self._agrees(x, "no")]
            self.t2i += [(rec.prompt, x.path) for x in gen_pos]
            if judge_pos or neg:
                self.judge.append((rec, judge_pos, neg))
            # S3 fixed: a target must beat every failed attempt of its context (sorted, not list ends)
            if neg and gen_pos and max(x.prob for x in gen_pos) > min(x.prob for x in neg):
                self.regen.append((rec, gen_pos, neg))
        self.pairs = [e for e in self.judge if e[1] and e[2]]  # Task-II prompts with a "Yes" and a "No" image
        if cfg.judge_pairs and cfg.mix[1] > 0 and self.judge and not self.pairs:
            from ..errors import JanusR1Error

            raise JanusR1Error("judge_pairs needs prompts with both a positive image (S >= judge_positive) and a "
                               f"negative one (S < negative); none of the {len(self.judge)} Task-II prompts has both")

    def _is(self, x, kind: str) -> bool:
        c = self.cfg
        if c.select == "state":  # the released code: state 4 positive everywhere, {0, 1} negative
            return x.state == 4 if kind != "neg" else x.state in (0, 1)
        return {"gen": x.prob >= c.gen_positive, "judge": x.prob >= c.judge_positive, "neg": x.prob < c.negative}[kind]

    def _agrees(self, x, verdict: str) -> bool:
        lead = _lead(x.reason)
        if lead is not None and lead != verdict:
            self.report.skipped[f"reason contradicts its {'positive' if verdict == 'yes' else 'negative'} score"] += 1
            return False
        return True

    def sizes(self) -> dict[str, int]:
        return {"t2i": len(self.t2i), "judge": len(self.judge), "regen": len(self.regen)}

    def mix(self) -> list[float]:
        """Task probabilities: the configured mix renormalised over the tasks that have data."""
        w = [m if n else 0.0 for m, n in zip(self.cfg.mix, self.sizes().values())]
        if sum(w) <= 0:
            from ..errors import JanusR1Error

            raise JanusR1Error(f"no SFT sample can be built from the data (candidates per task: {self.sizes()})")
        return [x / sum(w) for x in w]

    def _judged(self, rec: PromptRecord, verdict: str, pool: list, neg: list, rng: random.Random) -> Sample:
        """A Task-II sample: one image of ``pool`` with its target ``verdict``, after up to ``judge_history`` other
        failed attempts of the prompt (from ``neg``)."""
        cur = rng.choice(pool)
        others = [x for x in neg if x is not cur]
        hist = rng.sample(others, rng.randint(0, min(self.cfg.judge_history, len(others))))
        return Sample("judge", rec.prompt, current=cur.path, verdict=verdict, reason=cur.reason,
                      history=[(x.path, x.reason) for x in hist])

    def draw_pair(self, rng: random.Random) -> list[Sample]:
        """Two Task-II samples of one prompt, a positive ("Yes") and a negative ("No") image (``judge_pairs``):
        the prompt alone then predicts neither verdict, so the loss can only fall by reading what tells the two
        images apart (docs/training.md, "Train your own": minimal pairs teach the verdict faster)."""
        rec, pos, neg = rng.choice(self.pairs)
        return [self._judged(rec, "Yes", pos, neg, rng), self._judged(rec, "No", neg, neg, rng)]

    def draw(self, task: str, rng: random.Random) -> Sample:
        c = self.cfg
        if task == "t2i":
            prompt, path = rng.choice(self.t2i)
            return Sample("t2i", prompt, target=path, drop=rng.random() < c.prompt_dropout)
        if task == "judge":
            want_pos = rng.random() < 0.5
            cands = [e for e in self.judge if (e[1] if want_pos else e[2])] or self.judge
            rec, pos, neg = rng.choice(cands)
            yes = bool(want_pos and pos) or not neg
            return self._judged(rec, "Yes" if yes else "No", pos if yes else neg, neg, rng)
        rec, pos, neg = rng.choice(self.regen)
        hist = rng.sample(neg, rng.randint(1, min(c.regen_history, len(neg))))
        worst = max(x.prob for x in hist)
        target = rng.choice([x for x in pos if x.prob > worst] or [max(pos, key=lambda x: x.prob)])
        return Sample("regen", rec.prompt, target=target.path, history=[(x.path, x.reason) for x in hist],
                      drop=rng.random() < c.prompt_dropout)


def draw_edit(records: list[EditRecord], rng: random.Random, dropout: float) -> Sample:
    r = rng.choice(records)
    return Sample("edit", r.instruction, target=r.output, source=r.input, drop=rng.random() < dropout)


class ImageCache:
    """PIL images and their VQ codes (the VQ is frozen, so codes never change) by path."""

    def __init__(self, j: Janus, max_items: int = 4096) -> None:
        self.j, self.max_items = j, max_items
        self.codes: dict[str, torch.Tensor] = {}
        self.ready: dict = {}  # path -> PIL image the data loader's workers already opened for this step

    def pil(self, paths: list[str]):
        return [self.ready[p] if p in self.ready else open_image(p) for p in paths]

    def vq(self, paths: list[str]) -> torch.Tensor:
        self.prepare(paths)
        return torch.stack([self.codes[p] for p in paths])

    def prepare(self, paths: list[str], every: bool = False) -> None:
        """Encode the uncached images of ``paths`` in one VQ call. ``every`` (a ZeRO-3 pass): the encoder runs
        exactly once even when nothing is new (on a blank image), so that every rank runs the same modules."""
        todo = [p for p in dict.fromkeys(paths) if p not in self.codes]
        if not todo:
            if every:
                self.j.encode_images([Image.new("RGB", (self.j.image_size, self.j.image_size))])
            return
        new = self.j.encode_images(self.pil(todo)).cpu()
        if len(self.codes) + len(todo) > self.max_items:  # full: keep only this batch's codes (no re-encode later)
            self.codes = {p: self.codes[p] for p in dict.fromkeys(paths) if p in self.codes}
        self.codes.update({p: c for p, c in zip(todo, new)})


def _history(j: Janus, reasons: list[str], embeds, max_tokens: int) -> list[tuple[object, Judgement]]:
    out = []
    for e, reason in zip(embeds, reasons):
        ids = answer_ids(j, "No", reason, max_tokens)
        out.append((e, Judgement("No", None, "", ids, [1] * (len(ids) - 1) + [0])))
    return out


def rows_for(j: Janus, model, samples: list[Sample], cache: ImageCache, max_answer_tokens: int = 184,
             p: Pass | None = None):
    """Context rows and targets of a one-task batch: (rows, target codes (B, N) or answer id lists). With a
    :class:`Pass` the rows' images stay pending for that pass to embed; without one they are embedded here."""
    pad = j.vocab.ids.pad
    task = samples[0].task
    if any(s.task != task for s in samples):
        raise ValueError("a batch holds samples of one task")
    q = p or Pass(model, pad)
    rows: list[list[Piece]] = []
    # every image to draw after or to draw, encoded in one VQ call (under ZeRO-3 the encoder runs once per pass)
    cache.prepare([x for s in samples for x in [*(h for h, _ in s.history if task == "regen"),
                                                 *([s.source] if task == "edit" else []),
                                                 *([s.target] if task != "judge" else [])]], q.every)
    if task == "judge":
        targets = [answer_ids(j, s.verdict, s.reason, max_answer_tokens) for s in samples]
        for s in samples:
            und = [q.read(im) for im in cache.pil([x for x, _ in s.history] + [s.current])]
            hist = _history(j, [r for _, r in s.history], und[:-1], max_answer_tokens)
            rows.append(judge_context(j, j.prompt_ids(s.prompt), hist, und[-1]))
        return (rows if p else q.embedded(rows)), targets
    for s in samples:
        if task == "t2i":
            row = [j.prompt_piece(j.prompt_ids(s.prompt))]
        elif task == "regen":
            gen = [q.draw_after(c) for c in cache.vq([x for x, _ in s.history])]
            hist = _history(j, [r for _, r in s.history], gen, max_answer_tokens)
            row = regen_context(j, j.prompt_ids(s.prompt), hist)
        else:
            row = edit_row(j, q.draw_after(cache.vq([s.source])[0]), j.vocab.encode_continuation(s.prompt))
        if s.drop:  # prompt dropout == the CFG uncond row of this context
            row = [uncond(x, pad) for x in row]
        rows.append(row)
    return (rows if p else q.embedded(rows)), cache.vq([s.target for s in samples])


def sft_loss(model, j: Janus, samples: list[Sample], cache: ImageCache, max_answer_tokens: int = 184,
             yes_no_weight: float | None = None, yes_no_mode: str = "first") -> torch.Tensor:
    """Mean CE of one task's batch. Task-II with ``yes_no_weight`` w: ``w CE(verdict) + (1 - w) CE(rest)``
    (``yes_no_mode="code"`` puts every Yes/No id of the answer in the first group, like the reference)."""
    p = Pass(model, j.vocab.ids.pad)
    rows, targets = rows_for(j, model, samples, cache, max_answer_tokens, p)
    if samples[0].task != "judge":
        logits = p.logits(rows, targets, [], []).image
        return F.cross_entropy(logits.flatten(0, 1), targets.to(logits.device).flatten())
    flat = torch.cat(p.logits([], None, rows, targets).text)
    tgt = torch.tensor([t for ts in targets for t in ts], device=flat.device)
    ce = F.cross_entropy(flat, tgt, reduction="none")
    if yes_no_weight is None:
        return ce.mean()
    if yes_no_mode == "code":
        verdict = (tgt == j.vocab.ids.yes) | (tgt == j.vocab.ids.no)
    else:
        verdict = torch.zeros_like(tgt, dtype=torch.bool)
        verdict[torch.tensor([0] + [len(t) for t in targets[:-1]]).cumsum(0)] = True
    rest = ce[~verdict].mean() if bool((~verdict).any()) else ce.new_zeros(())
    return yes_no_weight * ce[verdict].mean() + (1 - yes_no_weight) * rest
