"""THE decode loop: KV cache, CFG pairs, one sampler, progress and cancel hooks.

Every task (text-to-image, judging, introspective regeneration, editing, scoring, the CLI, the nodes and the RL
rollouts) goes through :func:`decode_image` or :func:`decode_text`, which share :class:`_Runner` -- the prefill,
the cached step, the attention-mask buffer and the hooks. A speed-up or a fix here lands everywhere.

We drive transformers' building blocks directly (``model.model.language_model`` + ``generation_head`` /
``lm_head``), not ``generate()``: the R1 flow needs image-conditioned contexts ``generate`` cannot take, and the
hand-written loop has less per-step overhead.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import Cancelled
from .context import Context
from .sampling import Sampling, sample


@functools.cache
def cache_keyword() -> str:
    """transformers 5.24 renamed ``past_key_values`` to ``cache`` (old name deprecated until 5.40).

    Resolved on first use, not at import, so importing the engine does not import transformers."""
    from transformers import LlamaModel

    params = inspect.signature(LlamaModel.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


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
        self.cache_kw = cache_keyword()
        self.ctx = ctx

    def _call(self, embeds: torch.Tensor, upto: int) -> torch.Tensor:
        kwargs = {
            "inputs_embeds": embeds,
            "attention_mask": self.mask[:, :upto] if self.holes else None,
            "use_cache": True,
            self.cache_kw: self.cache,
        }
        out = self.lm(**kwargs)
        self.cache = getattr(out, self.cache_kw)
        return out.last_hidden_state[:, -1]

    def prefill(self) -> torch.Tensor:
        return self._call(self.ctx.embeds, self.length)

    def step(self, embeds: torch.Tensor, t: int) -> torch.Tensor:
        """Feed the token sampled at step ``t`` (0-based); its attention bit is already in the buffer."""
        return self._call(embeds, self.length + t + 1)

    def set_bits(self, t: int, bits: torch.Tensor | None) -> None:
        if bits is None:  # the buffer is initialised with ones
            return
        self.mask[:, self.length + t] = bits
        if not self.holes and bool((bits == 0).any()):
            self.holes = True


class _StaticRunner:
    """The same interface as :class:`_Runner` over a preallocated (static) KV cache.

    Drives each LLaMA decoder layer's own submodules (norms, q/k/v/o projections, MLP) and transformers' rotary
    helper, but keeps K/V in buffers sized for the whole phase and precomputes the rotary table, so a step does no
    cache concatenation, no mask rebuilding and no wrapper dispatch. Token-identical to the generic path (tested).

    ``fixed=True`` makes every decode step the same shape -- it attends over the whole buffer under a validity
    mask and writes K/V with ``index_copy_`` at a tensor position -- which is what ``torch.compile`` (and CUDA
    graphs, ``mode="reduce-overhead"``) need; ``compiled=True`` compiles that step once per process.
    """

    def __init__(self, model, ctx: Context, max_new: int, fixed: bool = False, compiled: bool = False) -> None:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        self.rope = apply_rotary_pos_emb
        self.lm = lm = model.model.language_model
        cfg = lm.config
        rows, length = ctx.mask.shape
        self.length, self.total = length, length + max_new
        ref = ctx.embeds
        heads = cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        shape = (rows, kv_heads, self.total, head_dim)
        self.k = [torch.zeros(shape, dtype=ref.dtype, device=ref.device) for _ in lm.layers]
        self.v = [torch.zeros(shape, dtype=ref.dtype, device=ref.device) for _ in lm.layers]
        positions = torch.arange(self.total, device=ref.device).unsqueeze(0)
        cos, sin = lm.rotary_emb(ref, positions)
        self.cos, self.sin = cos[0], sin[0]  # (total, head_dim)
        self.valid = torch.zeros((rows, self.total), dtype=torch.bool, device=ref.device)
        self.valid[:, :length] = ctx.mask.bool()
        self.holes = bool((ctx.mask == 0).any())
        self.fixed = fixed or compiled
        self.step_fn = _compiled_step() if compiled else _decoder
        self.ctx = ctx

    def _forward(self, h: torch.Tensor, start: int, mask: torch.Tensor | None) -> torch.Tensor:
        end = start + h.shape[1]
        return _decoder(self.lm, h, self.cos[start:end], self.sin[start:end], mask, self.k, self.v, start,
                        self.rope)

    def prefill(self) -> torch.Tensor:
        mask = None
        if self.holes:
            n = self.length
            causal = torch.ones((n, n), dtype=torch.bool, device=self.valid.device).tril()
            eye = torch.eye(n, dtype=torch.bool, device=self.valid.device)
            # every query also sees itself, so left-padding rows never softmax over nothing (NaN)
            mask = (causal & (self.valid[:, None, :n] | eye)).unsqueeze(1)
        return self._forward(self.ctx.embeds, 0, mask)

    def step(self, embeds: torch.Tensor, t: int) -> torch.Tensor:
        """Feed the token sampled at step ``t``; its attention bit was set by :meth:`set_bits`."""
        pos = self.length + t
        if self.fixed:
            at = torch.tensor([pos], device=embeds.device)
            return self.step_fn(self.lm, embeds, self.cos.index_select(0, at), self.sin.index_select(0, at),
                                self.valid[:, None, None, :], self.k, self.v, at, self.rope)
        mask = self.valid[:, None, None, : pos + 1] if self.holes else None
        return self._forward(embeds, pos, mask)

    def set_bits(self, t: int, bits: torch.Tensor | None) -> None:
        """Attention bit of the token fed at step ``t``; ``None`` means 1 for every row (image tokens)."""
        if bits is None:
            self.valid[:, self.length + t] = True
            return
        self.valid[:, self.length + t] = bits.bool()
        if not self.holes and bool((bits == 0).any()):
            self.holes = True


def _decoder(lm, h, cos, sin, mask, ks, vs, at, rope) -> torch.Tensor:
    """The LLaMA decoder layers over ``h`` (R, q, D) with a preallocated KV cache; returns the last position's
    final-normed hidden state (R, D).

    ``at`` is where the new keys/values go: an ``int`` writes positions ``at .. at+q`` and attends over the cache up
    to there (eager prefill and steps); a 1-element tensor writes with ``index_copy_`` and attends over the whole
    buffer under ``mask`` (the fixed-shape step that ``torch.compile`` / CUDA graphs capture once).
    """
    rows, q_len, _ = h.shape
    cos, sin = cos.unsqueeze(0), sin.unsqueeze(0)
    fixed = isinstance(at, torch.Tensor)
    causal = mask is None and q_len > 1
    for i, layer in enumerate(lm.layers):
        attn = layer.self_attn
        hd = ks[i].shape[-1]
        x = layer.input_layernorm(h)
        q = attn.q_proj(x).view(rows, q_len, -1, hd).transpose(1, 2)
        k = attn.k_proj(x).view(rows, q_len, -1, hd).transpose(1, 2)
        v = attn.v_proj(x).view(rows, q_len, -1, hd).transpose(1, 2)
        q, k = rope(q, k, cos, sin)
        if fixed:
            ks[i].index_copy_(2, at, k)
            vs[i].index_copy_(2, at, v)
            kk, vv = ks[i], vs[i]
        else:
            ks[i][:, :, at : at + q_len] = k
            vs[i][:, :, at : at + q_len] = v
            kk, vv = ks[i][:, :, : at + q_len], vs[i][:, :, : at + q_len]
        groups = q.shape[1] // kk.shape[1]
        if groups > 1:
            kk = kk.repeat_interleave(groups, dim=1)
            vv = vv.repeat_interleave(groups, dim=1)
        o = torch.nn.functional.scaled_dot_product_attention(
            q, kk, vv, attn_mask=mask, is_causal=causal, scale=attn.scaling
        )
        h = h + attn.o_proj(o.transpose(1, 2).reshape(rows, q_len, -1))
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    return lm.norm(h[:, -1:])[:, 0]


@functools.cache
def _compiled_step():
    """``torch.compile`` of the fixed-shape step; CUDA graphs on GPU (``reduce-overhead``), inductor on CPU."""
    mode = "reduce-overhead" if torch.cuda.is_available() else None
    return torch.compile(_decoder, mode=mode, dynamic=False)


RUNNERS = ("auto", "static", "fixed", "compiled", "dynamic")


def _runner(model, ctx: Context, max_new: int, runner: str = "auto"):
    """Pick the runner: the static cache for LLaMA in eval mode (``auto``), else transformers' own path."""
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {RUNNERS}, got {runner!r}")
    lm = model.model.language_model
    static_ok = (
        not getattr(model, "hf_device_map", None)  # offloaded layers live behind accelerate's forward hooks
        and getattr(lm.config, "model_type", "") == "llama"
        and not lm.training
        and getattr(lm.config, "_attn_implementation", "sdpa") in ("sdpa", "eager", None)
        and getattr(lm.config, "rope_parameters", {}).get("rope_type", "default") == "default"
    )
    if runner == "dynamic" or not static_ok:
        return _Runner(model, ctx, max_new)
    return _StaticRunner(model, ctx, max_new, fixed=runner == "fixed", compiled=runner == "compiled")


@torch.no_grad()
def decode_image(
    model,
    ctx: Context,
    n_tokens: int,
    cfg_weight: float,
    sampling: Sampling,
    generator: torch.Generator | None,
    hooks: Hooks = NO_HOOKS,
    runner: str = "auto",
) -> torch.Tensor:
    """Sample ``n_tokens`` image tokens for interleaved (cond, uncond) rows; returns codes (P, n_tokens).

    Guided logits ``u + w (c - u)`` from the generation head; the sampled token is fed to both rows of its pair
    as ``generation_aligner(generation_embeddings(token))``.
    """
    rows = ctx.embeds.shape[0]
    if rows % 2:
        raise ValueError("CFG contexts have an even number of rows (cond, uncond pairs)")
    pairs = rows // 2
    run = _runner(model, ctx, n_tokens, runner)
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
            run.set_bits(t, None)
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
    runner: str = "auto",
) -> TextOut:
    """Sample up to ``max_new`` text tokens per row (no CFG) until every row has emitted EOS.

    ``force_first``: the only ids allowed at step 0 (the Yes/No verdict). A finished row emits PAD from the step
    after its EOS on; EOS and those PADs get attention 0 so later positions never see them (spec §2.2).
    """
    rows = ctx.embeds.shape[0]
    device = ctx.embeds.device
    run = _runner(model, ctx, max(max_new, 1), runner)
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
