"""The LLaMA decoder layers of the static runners, written for few kernels and, by default on the CPU, transformers'
numbers bit for bit.

Per layer, on the pure-torch path: RMSNorm through ``F.rms_norm`` (one fused kernel on CUDA; the composite on
the CPU), the q/k/v and gate/up projections, RoPE in 4 elementwise kernels over q, k *and* v at once (v gets
cos 1, sin 0), one copy of the new keys and values into the cache, SDPA, o_proj, SiLU * up, down_proj and the two
residual adds. The attention mask is built by the caller once per step (an additive 0 / -inf row, never converted
per layer).

The exact numerics (:mod:`.numerics`, the CPU's default): every rewrite keeps transformers' roundings, and the
projections are transformers' own GEMMs at its shapes (7 per layer, then one concatenation each for q/k/v and
gate/up): 21 kernels per layer in fp32, 23 in bf16 (the norm weight multiplies the cast result, as transformers
does), against ~39 for the layer's own modules.

* RMSNorm: ``F.rms_norm`` computes ``x * rsqrt(mean(x^2) + eps)`` in fp32 exactly as ``LlamaRMSNorm``; in
  fp32 the weight goes inside, otherwise it multiplies the cast result, as transformers does;
* RoPE: ``rotate_half(x) * sin == flip_halves(x) * sin'`` with ``sin'`` the sine with its first half negated
  (``(-a) * b == a * (-b)`` in IEEE arithmetic); ``flip_halves`` is one ``flip`` of a ``(2, head_dim/2)`` view
  where ``rotate_half`` is a slice, a negation and a ``cat``;
* GEMMs: not concatenated. A concatenated GEMM computes each output element as the same dot product, but it has
  another shape, and a BLAS picks its kernel (blocking, accumulation order) per shape: MKL on an AVX-512 CPU
  differs by 1 ulp. Only the same call at the same shape is the same number on every CPU.

The fast numerics (:func:`fast_numerics`, CUDA's default): one GEMM for q/k/v and one for gate/up (:mod:`.fused`)
and two fusions one rounding away from transformers (the norm weight inside ``F.rms_norm``, RoPE's product and
sum as one ``addcmul``), 15 kernels per layer in bf16 and fp32. On a GPU cuBLAS gives up bit identity for any
change of shape anyway; what bounds the difference is the teacher-forced logit check (:mod:`.logit_check`: a test
on the CPU, ``bench/device_check.py`` on a GPU). ``JANUS_R1_NUMERICS=exact|fast`` chooses either anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .fused import fused_linear, separate_linear, sharded_by_an_engine
from .kv_cache import KVCache


@dataclass
class Layer:
    """What one decoder layer's step needs, gathered once per phase."""

    ln1: torch.Tensor
    eps1: float
    qkv: Callable[[torch.Tensor], torch.Tensor]
    o: Callable[[torch.Tensor], torch.Tensor]
    ln2: torch.Tensor
    eps2: float
    gate_up: Callable[[torch.Tensor], torch.Tensor]
    down: Callable[[torch.Tensor], torch.Tensor]
    act: Callable[[torch.Tensor], torch.Tensor]
    scaling: float

    @classmethod
    def of(cls, layer, own: bool = True, fuse: bool = True) -> Layer:
        """``own=False``: the weights' storage is not ours to re-point (:func:`~.fused.borrowed_weights`);
        ``fuse=False`` (exact numerics): q/k/v and gate/up run as transformers runs them, one GEMM each, because a
        concatenated GEMM has another shape, for which a BLAS may pick another kernel (1 ulp on AVX-512 CPUs)."""
        a, m = layer.self_attn, layer.mlp
        n1, n2 = layer.input_layernorm, layer.post_attention_layernorm
        own = own and not sharded_by_an_engine(layer)  # under FSDP2/ZeRO the engine owns the weights' storage
        grouped = fused_linear if fuse else separate_linear
        return cls(n1.weight, n1.variance_epsilon, grouped([a.q_proj, a.k_proj, a.v_proj], own),
                   fused_linear([a.o_proj]), n2.weight, n2.variance_epsilon,
                   grouped([m.gate_proj, m.up_proj], own), fused_linear([m.down_proj]), m.act_fn, a.scaling)


@dataclass(frozen=True)
class Geometry:
    """q/k/v heads as ``groups`` blocks of ``kv_heads`` heads: ``groups - 2`` of queries, one of keys, one of
    values (LLaMA-MHA: 3 groups; grouped-query attention: more query groups)."""

    groups: int
    kv_heads: int
    head_dim: int

    @classmethod
    def of(cls, config) -> Geometry:
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(heads // kv_heads + 2, kv_heads, head_dim)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, fast: bool = False) -> torch.Tensor:
    """``LlamaRMSNorm`` bit for bit, through torch's own (on CUDA fused) op; ``fast``: the weight inside it in
    every dtype (one kernel; bf16 rounds once where transformers rounds before and after the weight)."""
    if fast or (x.dtype == torch.float32 and weight.dtype == torch.float32):
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    return weight * F.rms_norm(x, (x.shape[-1],), None, eps)


def rope_table(lm, total: int, geo: Geometry, ref: torch.Tensor) -> torch.Tensor:
    """``(total, 2, groups, 1, head_dim)``: cos and the half-negated sine for the query and key groups, 1 and 0
    for the value group, from the model's own rotary embedding (same values as transformers uses)."""
    positions = torch.arange(total, device=ref.device).unsqueeze(0)
    cos, sin = (t[0] for t in lm.rotary_emb(ref, positions))  # (total, head_dim) each
    half = geo.head_dim // 2
    sin = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)
    table = torch.zeros((total, 2, geo.groups, 1, geo.head_dim), dtype=cos.dtype, device=ref.device)
    table[:, 0, :-1, 0] = cos[:, None]
    table[:, 0, -1] = 1
    table[:, 1, :-1, 0] = sin[:, None]
    return table


def run_layers(lm, layers: list[Layer], geo: Geometry, h: torch.Tensor, rope: torch.Tensor,
               mask: torch.Tensor | None, cache: KVCache, at: int | torch.Tensor, offset: int, end: int,
               fast: bool = False, every: bool = False) -> torch.Tensor:
    """The decoder over ``h`` (R, q, D) -> the last position's final-normed hidden state (R, D) (``every``: all
    q positions', (R, q, D) -- a Jacobi window needs each of them).

    ``rope``: the table's rows for these positions (q, 2, groups, 1, head_dim); ``mask``: additive (R, 1, 1,
    end) or bool (R, 1, q, end), None for plain causal; new keys/values go to ``offset + at`` (see
    :meth:`KVCache.write`) and attention reads positions ``0 .. end-1``; ``fast``: :func:`fast_numerics`."""
    rows, q_len, _ = h.shape
    g, kvh, hd = geo.groups, geo.kv_heads, geo.head_dim
    cos, sin = rope[:, 0], rope[:, 1]
    causal = mask is None and q_len > 1
    for i, layer in enumerate(layers):
        y = layer.qkv(rms_norm(h, layer.ln1, layer.eps1, fast)).view(rows, q_len, g, kvh, hd)
        flipped = y.view(rows, q_len, g, kvh, 2, hd // 2).flip(-2).view(rows, q_len, g, kvh, hd)
        y = torch.addcmul(y * cos, flipped, sin) if fast else y * cos + flipped * sin
        cache.write(i, at, y[:, :, g - 2:].permute(2, 0, 3, 1, 4), offset)
        k, v = cache.read(i, end)
        q = y[:, :, : g - 2].reshape(rows, q_len, -1, hd).transpose(1, 2)
        if g > 3:  # grouped-query attention: each key/value head serves g - 2 query heads
            k = k.repeat_interleave(g - 2, dim=1)
            v = v.repeat_interleave(g - 2, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=layer.scaling)
        h = h + layer.o(o.transpose(1, 2).reshape(rows, q_len, -1))
        gate, up = layer.gate_up(rms_norm(h, layer.ln2, layer.eps2, fast)).chunk(2, dim=-1)
        h = h + layer.down(layer.act(gate) * up)
    out = rms_norm(h if every else h[:, -1:], lm.norm.weight, lm.norm.variance_epsilon, fast)
    return out if every else out[:, 0]
