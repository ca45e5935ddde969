"""Speculative Jacobi decoding (SJD, arXiv 2410.01699) of an image phase: several tokens per forward pass, the
same distribution as one-token sampling.

Why: at batch 1 a decode step reads every weight to make one token; a pass over a window of ``L`` positions costs
about as much while the step is bandwidth-bound, so every extra token accepted per pass is nearly free.

One pass (all pairs at once, fixed window ``L``; the forward pass itself is :mod:`.window`, fixed-shape and
captured as a CUDA graph on the ``graph`` runner): the window's inputs are the last committed token and ``L - 1``
draft tokens after it, fed at their own cache positions (a draft's keys/values that are later rejected are simply
overwritten by the next pass: the static cache is rolled back *by position*, nothing is copied). The outputs give
at each window position ``i`` the model's distribution ``p_i`` (CFG-mixed, then the phase's top-k / temperature /
top-p, exactly as :func:`~.sampling.sample` processes logits) conditioned on everything before ``i``. Left to right,
draft ``x_i`` drawn from ``q_i`` is accepted with probability ``min(1, p_i(x_i) / q_i(x_i))``; at the first
rejection the token is drawn from the residual ``max(0, p_i - q_i)`` renormalised (the speculative-sampling rule:
every accepted token is distributed exactly as one-token sampling draws it) and is committed too, so a pass
commits at least one token. Positions after the rejection get new drafts drawn from this pass's ``p`` (their new
``q``); positions past the window get uniform drafts over the image vocabulary. Greedy decoding degenerates to
Jacobi fixed-point iteration: a draft is kept iff it is the argmax, so the tokens are the one-token greedy ones.

Pairs of a batch accept different numbers of tokens: each pair keeps its own committed count, and the window
starts at the smallest one (a pair that is ahead feeds its committed tokens again, which it does not re-verify).

Token 0 is drawn from the prefill exactly as the one-token loop draws it. The generator is consumed differently
from one-token decoding afterwards (same distribution, other samples), so a seed gives another image in this mode
than in ``ar`` mode -- but the same image for the same seed and window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .sampling import Sampling, cfg_mix, filter_top_k, sample


def probabilities(logits: torch.Tensor, s: Sampling) -> torch.Tensor:
    """The distribution :func:`~.sampling.sample` draws from, for logits (..., V): float32 probabilities (greedy:
    one-hot at the argmax). Same operations in the same order, so the verifying ``p`` is one-token's."""
    logits = filter_top_k(logits.float(), s.top_k)
    if s.greedy:
        return torch.nn.functional.one_hot(torch.argmax(logits, dim=-1), logits.shape[-1]).float()
    probs = torch.softmax(logits if s.temperature == 1.0 else logits / s.temperature, dim=-1)
    if s.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        preceding = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(preceding > s.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def _draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One index per distribution of ``probs`` (..., V) -> (...), exponential race (as :func:`~.sampling.draw`)."""
    q = torch.empty_like(probs).exponential_(1, generator=generator)
    return torch.argmax(probs / q, dim=-1)


@dataclass
class Stats:
    """Figures of the image phases decoded with it (``decode_image(..., stats=Stats())``; bench/jacobi.py and
    bench/device_check.py): phases, forward passes (prefills included) and image tokens per row, summed over the
    phases. The caller owns it, so two phases decoding at once (two ComfyUI prompts, two threads) never mix their
    figures; one-token decoding fills it too (a forward pass per token), so both modes are counted alike."""

    phases: int = 0
    forwards: int = 0
    tokens: int = 0

    def add(self, forwards: int, tokens: int) -> None:
        """Count one finished phase."""
        self.phases += 1
        self.forwards += forwards
        self.tokens += tokens

    @property
    def forwards_per_phase(self) -> float:
        """Forward passes per phase (per image, for a batch decoded at its slowest pair's pace)."""
        return self.forwards / self.phases if self.phases else 0.0

    @property
    def tokens_per_forward(self) -> float:
        """Image tokens committed per forward pass (1 for one-token decoding)."""
        return self.tokens / self.forwards if self.forwards else 0.0


def decode(
    model,
    forward: Callable[[torch.Tensor, int], torch.Tensor],
    prefill_h: torch.Tensor,
    n_tokens: int,
    cfg_weight: float,
    sampling: Sampling,
    generator: torch.Generator | None,
    window: int,
    on_token: Callable[[torch.Tensor, int], None],
    stats: Stats | None = None,
) -> torch.Tensor:
    """Image codes (P, n_tokens) by speculative Jacobi decoding. ``forward(inputs, at)``: the window pass
    (:mod:`.window`; its runner built for ``n_tokens + window`` new positions), window tokens (P, L) fed at steps
    ``at ..`` -> logits (2P, L, V). ``on_token(codes, t)`` is called once per committed column ``t`` (progress,
    preview, cancel), in order; ``stats`` (optional) counts the phase's forward passes."""
    head = model.model.generation_head
    device = prefill_h.device
    pairs = prefill_h.shape[0] // 2
    L = int(window)
    logits0 = head(prefill_h).float()
    vocab = logits0.shape[-1]
    codes = torch.zeros((pairs, n_tokens + 2 * L), dtype=torch.long, device=device)  # room for a last window
    codes[:, 0] = sample(cfg_mix(logits0[0::2], logits0[1::2], cfg_weight), sampling, generator)
    forwards = 1  # the prefill
    on_token(codes, 0)
    uniform = torch.full((vocab,), 1.0 / vocab, device=device)
    # drafts for positions 1 .. L (q uniform); q[:, j] is the distribution the draft at position start + j came from
    def guesses(n: int) -> torch.Tensor:  # fresh drafts; greedy never reads their q and consumes no random numbers
        if sampling.greedy:
            return torch.zeros((pairs, n), dtype=torch.long, device=device)
        return torch.randint(0, vocab, (pairs, n), generator=generator, device=device)

    codes[:, 1 : L + 1] = guesses(L)
    q = uniform.expand(pairs, L, vocab).clone()
    committed = torch.ones(pairs, dtype=torch.long, device=device)
    start = 1  # the window's first output position: min(committed)
    cols = torch.arange(L, device=device)
    rows = torch.arange(pairs, device=device)
    while start < n_tokens:
        inputs = codes[:, start - 1 : start - 1 + L]  # the last committed token, then L - 1 drafts
        logits = forward(inputs, start - 1)  # (2P, L, V) float32
        forwards += 1
        p = probabilities(cfg_mix(logits[0::2], logits[1::2], cfg_weight), sampling)  # (P, L, V)
        drafts = codes[:, start : start + L]
        pos = start + cols  # absolute position of window output j
        done = pos[None, :] < committed[:, None]  # already committed (pairs ahead of the slowest)
        if sampling.greedy:
            best = torch.argmax(p, dim=-1)
            ok = done | (drafts == best)
            fix, fresh = best, best
        else:
            px = p.gather(-1, drafts[..., None])[..., 0]
            qx = q.gather(-1, drafts[..., None])[..., 0]
            u = torch.rand((pairs, L), generator=generator, device=device)
            ok = done | (u * qx < px)  # u < p/q without dividing (q > 0 for every draft drawn from q)
            residual = (p - q).clamp_min(0.0)
            norm = residual.sum(-1, keepdim=True)
            residual = torch.where(norm > 0, residual / norm.clamp_min(1e-30), p)  # p == q never rejects
            fix = _draw(residual, generator)
            fresh = _draw(p, generator)
        # first rejected window position per pair (L when every draft is kept)
        bad = torch.where(ok, L, cols[None, :].expand(pairs, L)).amin(dim=1)
        rejected = bad < L
        at = bad.clamp_max(L - 1)
        new_drafts = torch.where(cols[None, :] > bad[:, None], fresh, drafts)
        new_drafts[rows, at] = torch.where(rejected, fix[rows, at], drafts[rows, at])
        codes[:, start : start + L] = new_drafts
        new_q = torch.where((cols[None, :] > bad[:, None])[..., None], p, q)
        new_committed = torch.maximum(committed, start + bad + rejected.long())
        new_start = int(new_committed.min())
        for t in range(start, min(new_start, n_tokens)):
            on_token(codes, t)
        shift = new_start - start
        if shift:  # slide the window: positions past the old one get uniform drafts
            codes[:, start + L : new_start + L] = guesses(shift)
            q = torch.cat([new_q[:, shift:], uniform.expand(pairs, min(shift, L), vocab)], dim=1)
        else:
            q = new_q
        committed, start = new_committed, new_start
    if stats is not None:
        stats.add(forwards, n_tokens)
    return codes[:, :n_tokens]
