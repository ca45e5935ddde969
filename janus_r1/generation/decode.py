"""THE decode loop: KV cache, CFG pairs, one sampler, progress and cancel hooks.

Every task (text-to-image, judging, introspective regeneration, editing, scoring, the CLI, the nodes and the RL
rollouts) goes through :func:`decode_image` or :func:`decode_text`, which share :class:`_Runner` -- the prefill,
the cached step, the attention-mask buffer and the hooks. A speed-up or a fix here lands everywhere.

We drive transformers' building blocks directly (``model.model.language_model`` + ``generation_head`` /
``lm_head``), not ``generate()``: the R1 flow needs image-conditioned contexts ``generate`` cannot take, and the
hand-written loop has less per-step overhead.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import Cancelled
from .context import Context
from .sampling import Sampling, sample


def _cache_keyword() -> str:
    """transformers 5.24 renamed ``past_key_values`` to ``cache`` (old name deprecated until 5.40)."""
    from transformers import LlamaModel

    params = inspect.signature(LlamaModel.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


CACHE_KW = _cache_keyword()


@dataclass
class StepEvent:
    """What a progress hook sees after each sampled token."""

    phase: str  # "image" or "text"
    step: int  # tokens sampled so far in this phase (1-based)
    total: int  # tokens this phase will sample at most
    tokens: torch.Tensor  # (P, step) tokens so far (cond rows only)


@dataclass
class Hooks:
    """Progress and cancellation: ``on_step`` after every token, ``should_cancel`` polled between tokens."""

    on_step: Callable[[StepEvent], None] | None = None
    should_cancel: Callable[[], bool] | None = None
    on_phase: Callable[[str], None] | None = None  # a human-readable label when a phase starts

    def check(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled("generation cancelled")


NO_HOOKS = Hooks()


class _Runner:
    """Prefill + cached single-token steps over a preallocated attention-mask buffer."""

    def __init__(self, model, ctx: Context, max_new: int) -> None:
        self.lm = model.model.language_model
        rows, length = ctx.mask.shape
        self.length = length
        self.mask = torch.ones((rows, length + max_new), dtype=ctx.mask.dtype, device=ctx.mask.device)
        self.mask[:, :length] = ctx.mask
        # With no hole anywhere the mask is omitted: transformers then takes its plain causal path.
        self.holes = bool((ctx.mask == 0).any())
        self.cache = None
        self.ctx = ctx

    def _call(self, embeds: torch.Tensor, upto: int) -> torch.Tensor:
        kwargs = {
            "inputs_embeds": embeds,
            "attention_mask": self.mask[:, :upto] if self.holes else None,
            "use_cache": True,
            CACHE_KW: self.cache,
        }
        out = self.lm(**kwargs)
        self.cache = getattr(out, CACHE_KW)
        return out.last_hidden_state[:, -1]

    def prefill(self) -> torch.Tensor:
        return self._call(self.ctx.embeds, self.length)

    def step(self, embeds: torch.Tensor, t: int) -> torch.Tensor:
        """Feed the token sampled at step ``t`` (0-based); its attention bit is already in the buffer."""
        return self._call(embeds, self.length + t + 1)

    def set_bits(self, t: int, bits: torch.Tensor) -> None:
        self.mask[:, self.length + t] = bits
        if not self.holes and bool((bits == 0).any()):
            self.holes = True


@torch.no_grad()
def decode_image(
    model,
    ctx: Context,
    n_tokens: int,
    cfg_weight: float,
    sampling: Sampling,
    generator: torch.Generator | None,
    hooks: Hooks = NO_HOOKS,
) -> torch.Tensor:
    """Sample ``n_tokens`` image tokens for interleaved (cond, uncond) rows; returns codes (P, n_tokens).

    Guided logits ``u + w (c - u)`` from the generation head; the sampled token is fed to both rows of its pair
    as ``generation_aligner(generation_embeddings(token))``.
    """
    rows = ctx.embeds.shape[0]
    if rows % 2:
        raise ValueError("CFG contexts have an even number of rows (cond, uncond pairs)")
    pairs = rows // 2
    run = _Runner(model, ctx, n_tokens)
    codes = torch.empty((pairs, n_tokens), dtype=torch.long, device=ctx.embeds.device)
    head = model.model.generation_head
    h = run.prefill()
    for t in range(n_tokens):
        hooks.check()
        logits = head(h).float()
        cond, unc = logits[0::2], logits[1::2]
        tok = sample(unc + cfg_weight * (cond - unc), sampling, generator)
        codes[:, t] = tok
        if hooks.on_step is not None:
            hooks.on_step(StepEvent("image", t + 1, n_tokens, codes[:, : t + 1]))
        if t + 1 < n_tokens:
            emb = model.prepare_embeddings_for_image_generation(tok.repeat_interleave(2).unsqueeze(-1))
            h = run.step(emb, t)
    return codes


@dataclass
class TextOut:
    """A text phase's result: ``ids``/``mask`` (P, n) with PAD after EOS and mask 0 on EOS and PAD;
    ``first_logits`` (P, V) float32 are the lm-head logits at the first answer position (before forcing)."""

    ids: torch.Tensor
    mask: torch.Tensor
    first_logits: torch.Tensor


@torch.no_grad()
def decode_text(
    model,
    ctx: Context,
    max_new: int,
    sampling: Sampling,
    generator: torch.Generator | None,
    eos_id: int,
    pad_id: int,
    force_first: list[int] | None = None,
    hooks: Hooks = NO_HOOKS,
) -> TextOut:
    """Sample up to ``max_new`` text tokens per row (no CFG) until every row has emitted EOS.

    ``force_first``: the only ids allowed at step 0 (the Yes/No verdict). A finished row emits PAD from the step
    after its EOS on; EOS and those PADs get attention 0 so later positions never see them (spec §2.2).
    """
    rows = ctx.embeds.shape[0]
    device = ctx.embeds.device
    run = _Runner(model, ctx, max(max_new, 1))
    embed = model.get_input_embeddings()
    h = run.prefill()
    first = model.lm_head(h).float()
    ids = torch.full((rows, max_new), pad_id, dtype=torch.long, device=device)
    bits = torch.zeros((rows, max_new), dtype=torch.long, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    n = 0
    logits = first
    for t in range(max_new):
        hooks.check()
        if t == 0 and force_first is not None:
            allowed = torch.full_like(logits, float("-inf"))
            allowed[:, force_first] = logits[:, force_first]
            logits = allowed
        tok = sample(logits, sampling, generator)
        tok = torch.where(finished, torch.full_like(tok, pad_id), tok)
        bit = ((tok != eos_id) & ~finished).long()
        finished = finished | (tok == eos_id)
        ids[:, t], bits[:, t] = tok, bit
        n = t + 1
        if hooks.on_step is not None:
            hooks.on_step(StepEvent("text", n, max_new, ids[:, :n]))
        if n == max_new or bool(finished.all()):
            break
        run.set_bits(t, bit)
        h = run.step(embed(tok).unsqueeze(1), t)
        logits = model.lm_head(h).float()
    return TextOut(ids=ids[:, :n], mask=bits[:, :n], first_logits=first)
