"""Teacher-forced sequences on the engine's own contexts, with gradients.

A training row is an engine context (a list of :mod:`janus_r1.generation.context` pieces, built by the same
functions the inference loop uses: ``Janus.prompt_piece``, ``templates.judge_context``, ``templates.regen_context``,
the editing row) followed by a *target*: image codes (entered through the generation path, predicted by the
generation head) or text ids (predicted by ``lm_head``). Rows are built with ``context.build`` (left padding), so
every target ends its row and the positions that predict it are the ``n`` positions before the last one.

Positions are transformers' defaults (absolute index in the padded buffer) and the attention mask keeps the
engine's holes, exactly as in the decode loop.

**One pass per micro-batch** (:class:`Pass`). The rows of a whole micro-batch are collected first -- an image
stands in as :class:`Pending` until the pass embeds it -- then each module runs once: SigLIP + aligner on every
image the rows *read*, the generation embeddings on every image they *draw after* (history, editing source, the
targets), ``embed_tokens`` on all text, the language model on all rows (image and text targets in one batch), the
generation head on the image positions and ``lm_head`` on the text positions. Why: ZeRO-3 gathers a module's
weights when it runs and needs every rank to run the same modules in the same order, and it sums gradients in
the order they arrive; a data-dependent number of calls (one per history image, one per kind of segment) would
deadlock it or sum the wrong gradients. Under :func:`every_module` (zero.py sets it) a module with nothing to do
on this rank still runs once, on a dummy input whose result joins the loss times zero.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

import torch
from PIL import Image

from ..generation.context import Embeds, Piece, Text, build, cfg_rows, generation_embeds, understanding_embeds
from ..generation.sampling import cfg_mix, filter_top_k

_EVERY = contextvars.ContextVar("janus_r1_every_module", default=False)


@contextlib.contextmanager
def every_module():
    """Within: every :class:`Pass` runs each module exactly once, with a dummy input where it has nothing to do
    (ZeRO-3's per-module gathering needs the same module sequence on every rank)."""
    token = _EVERY.set(True)
    try:
        yield
    finally:
        _EVERY.reset(token)


def und_embeds(model, images, image_size: int | None = None) -> torch.Tensor:
    """SigLIP (frozen) + aligner (trainable) embeddings (B, N, D): the engine's own, with the aligner's graph."""
    return understanding_embeds(model, images, grad=True)


def gen_embeds(model, codes: torch.Tensor) -> torch.Tensor:
    """Generation-path embeddings (B, N, D) with gradients to ``generation_embeddings``/``generation_aligner``."""
    return generation_embeds(model, codes, grad=True)


@dataclass(frozen=True)
class Pending:
    """An image's embeddings before its :class:`Pass` computes them (``kind``: "und" read, "gen" drawn after);
    ``Embeds(Pending)`` has the right length, so templates and ``build`` lay rows out unchanged."""

    kind: str
    index: int
    n: int

    @property
    def shape(self) -> tuple[int]:
        return (self.n,)


@dataclass
class Logits:
    """What one pass predicts: image logits (R, N, V), or their (cond, uncond) halves with CFG; text logits per
    text row (n_r, V)."""

    image: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None
    text: list[torch.Tensor]


class Pass:
    """The rows of one micro-batch, then one call of each module over all of them (module docstring)."""

    def __init__(self, model, pad_id: int) -> None:
        self.model, self.pad = model, pad_id
        self.images: list[Image.Image] = []
        self.codes: list[torch.Tensor] = []
        self.every = _EVERY.get()
        self._zero: list[torch.Tensor] = []  # dummy results (every_module) that join the loss times zero

    def read(self, image: Image.Image) -> Pending:
        """An image the row reads (SigLIP + aligner)."""
        self.images.append(image)
        return Pending("und", len(self.images) - 1, int(self.model.config.vision_config.num_image_tokens))

    def draw_after(self, codes) -> Pending:
        """An image given by its VQ codes that the row draws after (generation embeddings)."""
        self.codes.append(torch.as_tensor(codes, dtype=torch.long).reshape(-1).cpu())
        return Pending("gen", len(self.codes) - 1, int(self.codes[-1].numel()))

    def _embed(self, target_codes: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Every pending image in one SigLIP + aligner call and one generation-embedding call (the targets'
        codes last)."""
        model, und, gen = self.model, None, None
        if self.images or self.every:
            size = int(model.config.vision_config.image_size)
            und = und_embeds(model, self.images or [Image.new("RGB", (size, size))])
            if not self.images:
                self._zero.append(und)
                und = None
        stack = self.codes + ([] if target_codes is None else list(target_codes.cpu()))
        if stack or self.every:
            gen = gen_embeds(model, torch.stack(stack) if stack else torch.zeros((1, 1), dtype=torch.long))
            if not stack:
                self._zero.append(gen)
                gen = None
        return und, gen

    @staticmethod
    def _resolve(rows: list[list[Piece]], und, gen) -> list[list[Piece]]:
        def one(p: Piece) -> Piece:
            if isinstance(p, Embeds) and isinstance(p.value, Pending):
                return Embeds((und if p.value.kind == "und" else gen)[p.value.index])
            return p

        return [[one(p) for p in row] for row in rows]

    def embedded(self, rows: list[list[Piece]]) -> list[list[Piece]]:
        """The rows with every pending image embedded (what the pass feeds the language model)."""
        und, gen = self._embed(None)
        return self._resolve(rows, und, gen)

    def logits(self, image_rows: list[list[Piece]], codes: torch.Tensor | None,
               text_rows: list[list[Piece]], targets: list[list[int]],
               masks: list[list[int] | None] | None = None, cfg: float | None = None) -> Logits:
        """Generation-head logits predicting ``codes`` (R, N) after each image row -- with ``cfg`` the rows are
        doubled into (cond, uncond) pairs exactly as the sampler does and both halves are returned -- and
        ``lm_head`` logits predicting each text row's ``targets`` (teacher forcing, the target's own mask)."""
        model, every = self.model, self.every
        n_img = len(image_rows)
        n = int(codes.shape[1]) if n_img else 0
        und, gen = self._embed(codes if n_img else None)
        first_target = len(self.codes)
        img = [row + [Embeds(gen[first_target + r])] for r, row in enumerate(self._resolve(image_rows, und, gen))]
        if cfg is not None and img:
            img = cfg_rows(img, self.pad)
        masks = masks or [None] * len(text_rows)
        txt = [row + [Text(list(t), m)] for row, t, m in zip(self._resolve(text_rows, und, gen), targets, masks)]
        if not img and not txt:
            raise ValueError("a pass needs at least one row")
        ctx = build(img + txt, model.get_input_embeddings(), self.pad)
        embeds = ctx.embeds
        if self._zero:  # dummy embeddings join the graph where real ones would (x + 0 is exact)
            embeds = embeds + sum(z.sum() for z in self._zero).to(embeds.dtype) * 0
        h = model.model.language_model(inputs_embeds=embeds, attention_mask=ctx.mask, use_cache=False)
        h = h.last_hidden_state
        image = text = None
        dummy = []
        if img or every:
            lg = model.model.generation_head(h[: len(img), -n - 1 : -1] if img else h[:1, -1:]).float()
            image, dummy = (lg, dummy) if img else (None, [lg])
        if txt or every:
            picked = (torch.cat([h[len(img) + r, -len(t) - 1 : -1] for r, t in enumerate(targets)]) if txt
                      else h[:1, -1])
            lg = model.lm_head(picked).float()
            text, dummy = (lg, dummy) if txt else (None, dummy + [lg])
        if dummy:  # a head without rows here (every_module): its dummy output joins the other's times zero
            z = sum(d.sum() for d in dummy) * 0
            image, text = (image + z, text) if image is not None else (image, text + z)
        split = list(torch.split(text, [len(t) for t in targets])) if txt else []
        if image is not None and cfg is not None:
            image = (image[0::2], image[1::2])
        return Logits(image, split)


def guided(cond: torch.Tensor, uncond: torch.Tensor, cfg: float) -> torch.Tensor:
    """The sampling logits ``u + w (c - u)`` of the decode loop (the one rule, in ``generation/sampling.py``)."""
    return cfg_mix(cond, uncond, cfg)


def sampled_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                     top_k: int = 0) -> torch.Tensor:
    """log p(target) under the distribution the sampler draws from: top-k filter, then softmax(logits / T).

    The sampled token always stays in the support: recomputed logits can differ from the rollout's in the last
    bits (another kernel, bf16), which must not turn a token at the top-k boundary into log 0."""
    filtered = filter_top_k(logits, top_k)
    if top_k:
        own = torch.zeros_like(filtered, dtype=torch.bool).scatter_(-1, targets.unsqueeze(-1), True)
        filtered = torch.where(own, logits, filtered)
    lp = torch.log_softmax(filtered / temperature, dim=-1)
    return lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def code_merged_logprobs(cond: torch.Tensor, uncond: torch.Tensor, targets: torch.Tensor, cfg: float) -> torch.Tensor:
    """The released trainer's image log-prob (R3): ``log_softmax(c - (w-1)/w u)`` = guided logits at temperature w."""
    merged = cond - (cfg - 1.0) / cfg * uncond if cfg else cond
    return torch.log_softmax(merged, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
