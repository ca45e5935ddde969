"""How a decode phase runs the language model: prefill, then one cached step per token.

* :class:`TransformersRunner` -- transformers' own cache through the full ``language_model`` call (offloaded
  layers, non-LLaMA or training-mode models, and the ``dynamic`` runner).
* :class:`StaticRunner` -- each LLaMA decoder layer's own submodules over a :class:`~.kv_cache.KVCache` and a
  precomputed rotary table. Steps take the step index ``at`` as an ``int`` (each step attends over its own length)
  or, with ``fixed=True``, as a 1-element device tensor: then the step has one shape for the whole phase -- the
  position, rotary rows and validity bits are selected on the device -- which is what a CUDA graph captures.

Both take ``set_bits(at, bits)`` (the attention bit of the token fed at step ``at``) then ``step(embeds, at)``.
"""

from __future__ import annotations

import functools
import inspect

import torch

from .context import Context
from .kv_cache import KVCache


@functools.cache
def cache_keyword() -> str:
    """transformers 5.24 renamed ``past_key_values`` to ``cache`` (old name deprecated until 5.40).

    Resolved on first use, not at import, so importing the engine does not import transformers."""
    from transformers import LlamaModel

    params = inspect.signature(LlamaModel.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class TransformersRunner:
    """Prefill + cached single-token steps through transformers' own cache and a preallocated mask buffer."""

    fixed = False

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

    def step(self, embeds: torch.Tensor, at: int) -> torch.Tensor:
        """Feed the token sampled at step ``at`` (0-based); its attention bit is already in the buffer."""
        return self._call(embeds, self.length + at + 1)

    def set_bits(self, at: int, bits: torch.Tensor | None) -> None:
        if bits is None:  # the buffer is initialised with ones
            return
        self.mask[:, self.length + at] = bits
        if not self.holes and bool((bits == 0).any()):
            self.holes = True


class StaticRunner:
    """The same interface over a static KV cache; token-identical to :class:`TransformersRunner` (tested)."""

    def __init__(self, model, ctx: Context, max_new: int, fixed: bool = False) -> None:
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
        self.cache = KVCache(len(lm.layers), rows, kv_heads, self.total, head_dim, ref.dtype, ref.device)
        positions = torch.arange(self.total, device=ref.device).unsqueeze(0)
        cos, sin = lm.rotary_emb(ref, positions)
        self.cos, self.sin = cos[0], sin[0]  # (total, head_dim)
        self.valid = torch.zeros((rows, self.total), dtype=torch.bool, device=ref.device)
        self.valid[:, :length] = ctx.mask.bool()
        self.holes = bool((ctx.mask == 0).any())
        self.fixed = fixed
        self.ctx = ctx

    def prefill(self) -> torch.Tensor:
        mask = None
        if self.holes:
            n = self.length
            causal = torch.ones((n, n), dtype=torch.bool, device=self.valid.device).tril()
            eye = torch.eye(n, dtype=torch.bool, device=self.valid.device)
            # every query also sees itself, so left-padding rows never softmax over nothing (NaN)
            mask = (causal & (self.valid[:, None, :n] | eye)).unsqueeze(1)
        return decoder_layers(self.lm, self.ctx.embeds, self.cos[: self.length], self.sin[: self.length], mask,
                              self.cache, 0, self.rope)

    def step(self, embeds: torch.Tensor, at: int | torch.Tensor) -> torch.Tensor:
        """Feed the token sampled at step ``at``; its attention bit was set by :meth:`set_bits`."""
        if isinstance(at, torch.Tensor):  # fixed shape: whole buffer under the validity mask, nothing on the host
            pos = at + self.length
            return decoder_layers(self.lm, embeds, self.cos.index_select(0, pos), self.sin.index_select(0, pos),
                                  self.valid[:, None, None, :], self.cache, pos, self.rope)
        pos = self.length + at
        mask = self.valid[:, None, None, : pos + 1] if self.holes else None
        return decoder_layers(self.lm, embeds, self.cos[pos : pos + 1], self.sin[pos : pos + 1], mask, self.cache,
                              pos, self.rope)

    def set_bits(self, at: int | torch.Tensor, bits: torch.Tensor | None) -> None:
        """Attention bit of the token fed at step ``at``; ``None`` means 1 for every row (image tokens)."""
        if isinstance(at, torch.Tensor):
            pos = at + self.length
            if bits is None:
                self.valid.index_fill_(1, pos, True)
            else:
                self.valid.index_copy_(1, pos, bits.bool().unsqueeze(1))
            return
        if bits is None:
            self.valid[:, self.length + at] = True
            return
        self.valid[:, self.length + at] = bits.bool()
        if not self.holes and bool((bits == 0).any()):
            self.holes = True


def decoder_layers(lm, h, cos, sin, mask, cache: KVCache, at, rope) -> torch.Tensor:
    """The LLaMA decoder layers over ``h`` (R, q, D) with a preallocated KV cache; returns the last position's
    final-normed hidden state (R, D). ``at``: where the new keys/values go (see :meth:`KVCache.update`)."""
    rows, q_len, _ = h.shape
    cos, sin = cos.unsqueeze(0), sin.unsqueeze(0)
    causal = mask is None and q_len > 1
    for i, layer in enumerate(lm.layers):
        attn = layer.self_attn
        hd = cache.k[i].shape[-1]
        x = layer.input_layernorm(h)
        q = attn.q_proj(x).view(rows, q_len, -1, hd).transpose(1, 2)
        k = attn.k_proj(x).view(rows, q_len, -1, hd).transpose(1, 2)
        v = attn.v_proj(x).view(rows, q_len, -1, hd).transpose(1, 2)
        q, k = rope(q, k, cos, sin)
        kk, vv = cache.update(i, at, k, v)
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
