"""How a decode phase runs the language model: prefill, then one cached step per token.

* :class:`TransformersRunner` -- transformers' own cache through the full ``language_model`` call (offloaded
  layers, non-LLaMA or training-mode models, and the ``dynamic`` runner).
* :class:`StaticRunner` -- the LLaMA decoder layers written for few kernels (:mod:`.layers`: fused q/k/v and
  gate/up GEMMs, compact RoPE) over a :class:`~.kv_cache.KVCache`, a precomputed rotary table and one additive
  mask buffer. Steps take the step index ``at`` as an ``int`` (each step attends over its own length) or, with
  ``fixed=True``, as a 1-element device tensor: then the step has one shape per attention *bucket* -- the
  position, rotary rows and mask column are selected on the device -- which is what a CUDA graph captures.
  A Jacobi window (``window``, :mod:`.jacobi`) takes the same two forms: a host start step, or a device one with
  bucket-wide masked attention (:mod:`.window` captures that form).

Both take ``set_bits(at, bits)`` (the attention bit of the token fed at step ``at``) then ``step(embeds, at)``;
``stepper(body, make, steps)`` wraps the decode loop's step body: for the fixed-shape runner one ``make(body, n)`` (a
:class:`~.graphs.Stepper`) per bucket (:class:`Buckets`), so a phase reads the cache it has filled, in whole
buckets, not the whole preallocated length.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch

from .context import Context
from .fused import BORROWED
from .graphs import warn_once
from .kv_cache import KVCache
from .layers import Geometry, Layer, rope_table, run_layers
from .numerics import fast_numerics, rms_norm_fused

BUCKET = 256  # cache positions per attention bucket of the fixed-shape step (one captured graph each)
ALIGN = 16  # the fixed-shape cache is a whole number of these positions


@functools.cache
def cache_keyword() -> str:
    """transformers 5.24 renamed ``past_key_values`` to ``cache`` (old name deprecated until 5.40).

    Resolved on first use, not at import, so importing the engine does not import transformers."""
    from transformers import LlamaModel

    params = inspect.signature(LlamaModel.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def warn_if_unfused_rms_norm(device: torch.device) -> bool:
    """Warn once where ``F.rms_norm`` runs as its decomposition on a GPU (torch < 2.8 has no fused CUDA kernel);
    returns whether it does."""
    if device.type != "cuda" or rms_norm_fused():
        return False
    warn_once("rms_norm", f"F.rms_norm runs unfused on this GPU: torch {torch.__version__} has no fused CUDA kernel "
                          "for it (torch >= 2.8 has one); a few more kernels per layer, the same numbers")
    return True


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

    def window(self, embeds: torch.Tensor, at: int) -> torch.Tensor:
        """A Jacobi window (:mod:`.jacobi`): image tokens fed at steps ``at .. at + q - 1`` -> every position's
        hidden state (R, q, D). The cache is cropped back to step ``at`` first (the rejected drafts go)."""
        extra = self.cache.get_seq_length() - (self.length + at) if self.cache is not None else 0
        if extra > 0:  # a negative crop removes that many positions (transformers 4.52 and 5.x alike)
            self.cache.crop(-extra)
        end = self.length + at + embeds.shape[1]
        out = self.lm(inputs_embeds=embeds, attention_mask=self.mask[:, :end] if self.holes else None,
                      use_cache=True, **{self.cache_kw: self.cache})
        self.cache = getattr(out, self.cache_kw)
        return out.last_hidden_state

    def stepper(self, body: Callable[[int], None], make: Callable[[Callable, int], Callable], steps: int):
        """The decode loop's stepper for a phase of ``steps`` steps: ``make(body, steps)`` (no buckets here)."""
        return make(body, steps)

    def set_bits(self, at: int, bits: torch.Tensor | None) -> None:
        if bits is None:  # the buffer is initialised with ones
            return
        self.mask[:, self.length + at] = bits
        if not self.holes and bool((bits == 0).any()):
            self.holes = True


class StaticRunner:
    """The same interface over a static KV cache; token-identical to :class:`TransformersRunner` (tested).

    The attention mask lives in one additive buffer ``bias`` (rows, positions): 0 where a position may be seen,
    -inf elsewhere (holes, and positions not yet written). Setting a token's bit writes its column; a step only
    takes a view of it, so the mask costs nothing per layer and one kernel per step.
    """

    def __init__(self, model, ctx: Context, max_new: int, fixed: bool = False) -> None:
        self.lm = lm = model.model.language_model
        rows, length = ctx.mask.shape
        self.length, self.total = length, length + max_new
        # the fixed-shape step reads whole buckets: whole multiples of ALIGN keep CUDA's SDPA from padding the mask
        self.alloc = -(-self.total // ALIGN) * ALIGN if fixed else self.total
        ref = ctx.embeds
        self.geo = Geometry.of(lm.config)
        own = not getattr(model, BORROWED, False)
        self.fast = fast_numerics(ref.device)  # concatenated GEMMs and one-rounding fusions: CUDA's default
        warn_if_unfused_rms_norm(ref.device)
        self.layers = [Layer.of(layer, own, fuse=self.fast) for layer in lm.layers]
        self.cache = KVCache(len(self.layers), rows, self.geo.kv_heads, self.alloc, self.geo.head_dim, ref.dtype,
                             ref.device)
        self.rope = rope_table(lm, self.alloc, self.geo, ref)
        self.bias = torch.full((rows, self.alloc), float("-inf"), dtype=ref.dtype, device=ref.device)
        self.bias[:, :length].masked_fill_(ctx.mask.bool(), 0.0)
        self.lut = torch.tensor([float("-inf"), 0.0], dtype=ref.dtype, device=ref.device)  # bit -> bias
        self.holes = bool((ctx.mask == 0).any())
        self.fixed = fixed
        self.span = self.alloc  # positions the fixed-shape step attends over (see :meth:`stepper`)
        self.ctx = ctx

    def prefill(self) -> torch.Tensor:
        n, mask = self.length, None
        if self.holes:
            valid = self.ctx.mask.bool()
            causal = torch.ones((n, n), dtype=torch.bool, device=valid.device).tril()
            eye = torch.eye(n, dtype=torch.bool, device=valid.device)
            # every query also sees itself, so left-padding rows never softmax over nothing (NaN)
            mask = (causal & (valid[:, None, :] | eye)).unsqueeze(1)
        return run_layers(self.lm, self.layers, self.geo, self.ctx.embeds, self.rope[:n], mask, self.cache, 0, 0, n,
                          self.fast)

    def step(self, embeds: torch.Tensor, at: int | torch.Tensor) -> torch.Tensor:
        """Feed the token sampled at step ``at``; its attention bit was set by :meth:`set_bits`."""
        if isinstance(at, torch.Tensor):  # fixed shape: a bucket of the cache under the mask, nothing on the host
            rope = self.rope[self.length:].index_select(0, at)
            mask = self.bias[:, None, None, : self.span]
            return run_layers(self.lm, self.layers, self.geo, embeds, rope, mask, self.cache, at, self.length,
                              self.span, self.fast)
        pos = self.length + at
        mask = self.bias[:, None, None, : pos + 1] if self.holes else None
        return run_layers(self.lm, self.layers, self.geo, embeds, self.rope[pos : pos + 1], mask, self.cache, pos, 0,
                          pos + 1, self.fast)

    def window(self, embeds: torch.Tensor, at: int | torch.Tensor, span: int | None = None) -> torch.Tensor:
        """A Jacobi window (:mod:`.jacobi`): image tokens (R, q, D) fed at steps ``at .. at + q - 1`` -> every
        position's hidden state (R, q, D). Their keys/values overwrite whatever an earlier window left at those
        positions (rolled back by position, nothing copied); causal inside the window, the context's holes kept.

        ``at`` an ``int``: the window attends over its own length (``length + at + q`` positions). ``at`` a
        1-element device tensor (the fixed-shape window a CUDA graph captures, :mod:`.window`): nothing depends on
        its value on the host -- positions, rotary rows, cache writes and the causal mask are computed on the
        device -- and attention reads ``span`` positions (a whole attention bucket, :meth:`window_span`), the
        ones past each query masked, so every pass of a bucket has the same kernels and shapes."""
        q = embeds.shape[1]
        if isinstance(at, torch.Tensor):
            span = self.alloc if span is None else span
            steps = at + torch.arange(q, device=at.device)  # the window's step indices, on the device
            self.bias[:, self.length:].index_fill_(1, steps, 0.0)  # image tokens are always attended
            keys = torch.arange(span, device=at.device)
            causal = torch.zeros((q, span), dtype=self.bias.dtype, device=self.bias.device)
            causal.masked_fill_(keys[None, :] > (self.length + steps)[:, None], float("-inf"))
            mask = self.bias[:, None, None, :span] + causal  # (R, 1, q, span): holes, unwritten and future keys
            rope = self.rope[self.length:].index_select(0, steps)
            return run_layers(self.lm, self.layers, self.geo, embeds, rope, mask, self.cache, steps, self.length,
                              span, self.fast, every=True)
        pos = self.length + at
        self.bias[:, pos : pos + q] = 0.0  # image tokens are always attended
        tri = torch.full((q, q), float("-inf"), dtype=self.bias.dtype, device=self.bias.device).triu(1)
        mask = self.bias[:, None, None, : pos + q].repeat(1, 1, q, 1)
        mask[:, :, :, pos:] += tri
        return run_layers(self.lm, self.layers, self.geo, embeds, self.rope[pos : pos + q], mask, self.cache, pos, 0,
                          pos + q, self.fast, every=True)

    def window_span(self, at: int, q: int) -> int:
        """Positions the fixed-shape window fed at steps ``at .. at + q - 1`` attends over: its last position's
        valid length rounded up to a whole ``BUCKET`` (as :meth:`bucket`), at most the cache's end."""
        return min(self.alloc, -(-(self.length + at + q) // BUCKET) * BUCKET)

    def set_bits(self, at: int | torch.Tensor, bits: torch.Tensor | None) -> None:
        """Attention bit of the token fed at step ``at``; ``None`` means 1 for every row (image tokens)."""
        if isinstance(at, torch.Tensor):
            new = self.bias[:, self.length:]
            if bits is None:
                new.index_fill_(1, at, 0.0)
            else:
                new.index_copy_(1, at, self.lut.index_select(0, bits.long()).unsqueeze(1))
            return
        if bits is None:
            self.bias[:, self.length + at] = 0.0
            return
        self.bias[:, self.length + at] = self.lut.index_select(0, bits.long())
        if not self.holes and bool((bits == 0).any()):
            self.holes = True

    def bucket(self, t: int) -> int:
        """Positions the fixed-shape step ``t`` attends over: the valid ones (``length + t + 1``) rounded up to a
        whole ``BUCKET`` (the last bucket ends at the cache's end)."""
        return min(self.alloc, -(-(self.length + t + 1) // BUCKET) * BUCKET)

    def stepper(self, body: Callable[[int | torch.Tensor], None], make: Callable[[Callable, int], Callable],
                steps: int):
        """``make(body, n)`` (a :class:`~.graphs.Stepper` for ``n`` steps) for each attention bucket in turn (fixed
        shape), else once for the phase's ``steps`` steps."""
        return Buckets(self, body, make, steps) if self.fixed else make(body, steps)


class Buckets:
    """A fixed-shape step per attention bucket: step ``t`` reads ``bucket(t)`` cache positions, not all of them.

    Each bucket gets its own stepper (on CUDA: its own captured graph, whose shapes are the bucket's), made when
    the first step of that bucket comes; its device step counter starts at 0, so the body is handed the phase's
    step index as ``counter + first step of the bucket``. ``make`` is told how many steps the bucket will run
    (at most ``steps`` in the phase), so a bucket too short to win back a capture is not captured."""

    def __init__(self, run: StaticRunner, body: Callable, make: Callable[[Callable, int], Callable],
                 steps: int) -> None:
        self.run, self.body, self.make, self.steps = run, body, make, steps
        self.current, self.first, self.spans = None, 0, []

    def __call__(self, t: int) -> None:
        span = self.run.bucket(t)
        if self.current is None or span != self.run.span:
            self.close()
            self.run.span, self.first = span, t
            self.spans.append(span)
            n = min(span - self.run.length, self.steps) - t  # steps t .. (last step whose position fits) of the phase
            self.current = self.make(self.body if t == 0 else (lambda at, first=t: self.body(at + first)), n)
        self.current(t - self.first)

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None
