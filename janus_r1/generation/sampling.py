"""Temperature / top-k / top-p sampling with a seeded ``torch.Generator`` (reference order of operations, §2.0).

Order: optional top-k (every logit strictly below the k-th largest -> -inf, ties kept), ``softmax(logits / T)``,
optional top-p (drop entries whose *preceding* cumulative mass exceeds p, renormalise), then a multinomial draw.
All of it runs in float32 whatever the model dtype, so bf16 logits do not change the distribution's support.

No function here reads a value back to the host, so a decode step that samples can be captured in a CUDA graph:
the draw is ``torch.multinomial``'s own one-sample algorithm (ATen ``multinomial_out``: ``argmax(p / q)`` with
``q = empty_like(p).exponential_(1, generator)``) minus its host-side validity checks -- the same tokens and the
same generator state for the same seed (tested against ``torch.multinomial``). The CFG mix and the forced first
token live here too, so decoding, training and the benchmarks apply one rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import JanusR1Error


@dataclass(frozen=True)
class Sampling:
    """How one phase picks its tokens. ``top_k=0`` and ``top_p=1`` switch those filters off.

    ``decoding="jacobi"`` (image phases only, opt-in): speculative Jacobi decoding over a ``window`` of draft
    tokens (:mod:`.jacobi`) -- the same distribution, fewer forward passes; ``"ar"`` is one token per step."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False
    decoding: str = "ar"
    window: int = 16

    def validate(self, what: str) -> Sampling:
        t = self.temperature
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t <= 0:
            raise JanusR1Error(f"{what} temperature must be a number > 0 (got {t!r}); use 1.0 for the paper setting.")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise JanusR1Error(f"{what} top_k must be an integer >= 0 (got {self.top_k!r}); 0 disables it.")
        p = self.top_p
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not (0.0 < p <= 1.0):
            raise JanusR1Error(f"{what} top_p must be in (0, 1] (got {p!r}); 1.0 disables it.")
        if self.decoding not in DECODINGS:
            raise JanusR1Error(f"{what} decoding must be 'ar' or 'jacobi' (got {self.decoding!r}); 'ar' is the "
                               "default one-token decoding.")
        if self.decoding == "jacobi" and what != "image":
            raise JanusR1Error(f"jacobi decoding applies to image phases only, not to {what} sampling; use 'ar'.")
        w = self.window
        if not isinstance(w, int) or isinstance(w, bool) or not (2 <= w <= MAX_WINDOW):
            raise JanusR1Error(f"{what} jacobi window must be an integer in [2, {MAX_WINDOW}] (got {w!r}); "
                               "16 is the default.")
        return self


DECODINGS = ("ar", "jacobi")  # image phases: one token per step, or speculative Jacobi (jacobi.py)
MAX_WINDOW = 256  # draft tokens per Jacobi window; memory grows with it (activations and logits per position)
IMAGE_SAMPLING = Sampling(temperature=1.0, top_k=4096, top_p=1.0)  # paper App. B.4
TEXT_SAMPLING = Sampling(temperature=1.0, top_k=50, top_p=1.0)  # paper App. B.4


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set every logit strictly below the k-th largest of its row to -inf (ties with the k-th are kept).

    The threshold is the smallest of an *unsorted* top-k: the same value as the last of a sorted one (so the same
    tokens), without sorting k = 4096 entries per row every step (on the CPU 4x cheaper at 16,384 image logits;
    ``kthvalue`` is slower still for a small k over a large vocabulary)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
    return logits.masked_fill(logits < kth, float("-inf"))


def cfg_mix(cond: torch.Tensor, uncond: torch.Tensor, weight: float) -> torch.Tensor:
    """Classifier-free guidance: the sampling logits ``u + w (c - u)`` (paper App. B.4; the reference's order)."""
    return uncond + weight * (cond - uncond)


def force_tokens(logits: torch.Tensor, allowed: list[int] | torch.Tensor) -> torch.Tensor:
    """Keep only the ``allowed`` ids of every row (the forced Yes/No verdict); every other logit becomes -inf."""
    out = torch.full_like(logits, float("-inf"))
    out[..., allowed] = logits[..., allowed]
    return out


def draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One index per row of ``probs`` (P, V) -> (P, 1), exactly as ``torch.multinomial(probs, 1, generator=...)``.

    ATen's one-sample path is ``argmax(p / q)``, ``q ~ Exp(1)`` drawn by ``exponential_`` on a tensor like ``p``;
    written out it consumes the generator identically but skips multinomial's validity checks, which read back
    to the host (CPU) or launch asserts. Other devices (MPS) keep their own multinomial kernel."""
    if probs.device.type not in ("cpu", "cuda"):
        return torch.multinomial(probs, 1, generator=generator)
    q = torch.empty_like(probs).exponential_(1, generator=generator)
    return torch.argmax(probs / q, dim=-1, keepdim=True)


def sample(logits: torch.Tensor, s: Sampling, generator: torch.Generator | None) -> torch.Tensor:
    """Pick one token per row of ``logits`` (P, V) -> (P,) int64, with no host synchronisation."""
    logits = filter_top_k(logits.float(), s.top_k)
    if s.greedy:
        return torch.argmax(logits, dim=-1)
    probs = torch.softmax(logits if s.temperature == 1.0 else logits / s.temperature, dim=-1)  # x / 1 == x
    if s.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        preceding = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(preceding > s.top_p, 0.0)
        sorted_probs = sorted_probs / sorted_probs.sum(dim=-1, keepdim=True)
        return torch.gather(order, -1, draw(sorted_probs, generator)).squeeze(-1)
    return draw(probs, generator).squeeze(-1)


def make_generator(seed: int | None, device: torch.device | str) -> torch.Generator:
    """A generator on the model's device: the same seed on the same device gives the same image."""
    device = torch.device(device)
    gen = torch.Generator(device=device if device.type in ("cuda", "mps") else "cpu")
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    return gen.manual_seed(int(seed))
