"""The forward pass of a Jacobi window (:mod:`.jacobi`): tokens (P, L) fed at steps ``at ..`` -> logits (2P, L, V).

Two forms behind one call, ``window(inputs, at)``:

* :class:`EagerWindow` -- any runner's ``window(embeds, at)`` with ``at`` a host ``int``: the pass attends over
  its own length, so its shapes change every pass (the ``eager`` and ``dynamic`` runners).
* :class:`FixedWindow` -- the fixed-shape runner's window (``fixed`` and ``graph``): the tokens and the start step
  live in persistent device buffers, the pass computes positions, rotary rows, cache writes and its causal mask on
  the device and attends over a whole attention bucket, so one pass has the same kernels and shapes as the next.
  With ``graph`` it is captured as a CUDA graph once per bucket (:class:`~.graphs.GraphedStep`: the same torch
  gate, refusal checks and eager fallback as the one-token step) and replayed for every further pass; elsewhere
  (the CPU, ``fixed``, an old torch, a failed capture) the very same body runs eagerly, which is what the tests
  check on the CPU. Only the forward pass is captured: verifying drafts draws random numbers and decides on the
  host where the next window starts (one host read per pass, which advances by a data-dependent amount), so that
  part stays outside the graph and the graph consumes no generator state.

Memory (on top of one-token decoding): the phase's KV cache holds ``L`` more positions (the runner is built for
``n_tokens + L`` new positions: the last window reaches past the image), i.e. ``L x layers x 2 x kv_heads x
head_dim`` values per row -- at L = 16 on the 7B geometry in bf16, 7.5 MiB per row, 15 MiB per image (a CFG
pair). A captured graph keeps its pass's intermediates in its own pool for as long as the bucket is decoded: the
window's activations (``L x hidden`` per layer and ``L x intermediate`` in the MLP, per row), the additive mask
(``rows x L x span`` in the model dtype) and the float32 logits buffer (``2 x L x 16,384`` per image, 2 MiB at
L = 16). The pool of the previous bucket is released when the next bucket's graph is made.
"""

from __future__ import annotations

import torch

from .graphs import GraphedStep


class EagerWindow:
    """``run.window(embeds, at)`` with a host ``at``: shapes follow the window's position (any runner)."""

    def __init__(self, model, run) -> None:
        self.model, self.run = model, run

    def __call__(self, inputs: torch.Tensor, at: int) -> torch.Tensor:
        """Logits (2P, L, V) float32 of the window ``inputs`` (P, L) fed at steps ``at .. at + L - 1``."""
        embeds = self.model.prepare_embeddings_for_image_generation(inputs.repeat_interleave(2, dim=0))
        return self.model.model.generation_head(self.run.window(embeds, at)).float()

    def close(self) -> None:
        """Nothing to release (kept so both forms are closed alike)."""


class FixedWindow:
    """The fixed-shape window pass over a :class:`~.runners.StaticRunner` built with ``fixed=True``, graph-captured
    once per attention bucket when ``graph`` (module docstring); ``n_tokens``: the phase's image tokens (how many
    passes a bucket can still run, which decides whether a capture pays)."""

    def __init__(self, model, run, pairs: int, window: int, graph: bool, n_tokens: int) -> None:
        device = run.ctx.embeds.device
        self.model, self.run, self.graph, self.n_tokens, self.window = model, run, graph, n_tokens, window
        self.device = device
        self.tokens = torch.zeros((pairs, window), dtype=torch.long, device=device)  # the pass's inputs
        self.at = torch.zeros(1, dtype=torch.long, device=device)  # its first step, never read on the host
        self.out: torch.Tensor | None = None  # (2P, L, V) float32 logits, written in place by every pass
        self.span: int | None = None  # the attention bucket of the current step (graph)
        self.step: GraphedStep | None = None

    def body(self, span: int) -> None:
        """One pass from the persistent buffers into ``out``: no host read and no shape that depends on ``at``."""
        pairs, width = self.tokens.shape
        rows = self.tokens.unsqueeze(1).expand(pairs, 2, width).reshape(2 * pairs, width)  # (cond, uncond) pairs
        embeds = self.model.prepare_embeddings_for_image_generation(rows)
        logits = self.model.model.generation_head(self.run.window(embeds, self.at, span)).float()
        if self.out is None:  # the first pass runs eagerly (GraphedStep's warm-up): allocate outside any capture
            self.out = logits
        else:
            self.out.copy_(logits)

    def __call__(self, inputs: torch.Tensor, at: int) -> torch.Tensor:
        """Logits (2P, L, V) of the window ``inputs`` (P, L) fed at steps ``at ..``: the persistent output buffer,
        valid until the next call."""
        self.tokens.copy_(inputs)
        self.at.fill_(at)
        span = self.run.window_span(at, self.window)
        if not self.graph:
            self.body(span)
            return self.out
        if span != self.span:  # a new bucket: its own graph (its shapes); the last one's pool goes now
            self.close()
            self.span = span
            self.step = GraphedStep(lambda: self.body(span), self.device, None)
        # passes this bucket can still run: each commits at least one token, and the bucket ends where a window
        # no longer fits in it (or where the image ends)
        left = min(span - self.run.length - self.window - at + 1, self.n_tokens - 1 - at)
        self.step(max(1, left))
        return self.out

    def close(self) -> None:
        """Drop the current bucket's graph (and its memory pool) now, not at the next garbage collection."""
        self.step = None


def window_step(model, run, pairs: int, window: int, graph: bool, n_tokens: int) -> EagerWindow | FixedWindow:
    """The window pass for ``run``: fixed-shape (and captured when ``graph``) for a fixed-shape runner, eager
    otherwise. ``graph`` comes from the decode loop's runner choice, which already applied the torch gate
    (:func:`~.graphs.capture_supported`) and the host-sync check; :class:`GraphedStep` runs its body eagerly
    where the device cannot capture (the CPU), as the one-token step's does."""
    if getattr(run, "fixed", False):
        return FixedWindow(model, run, pairs, window, graph, n_tokens)
    return EagerWindow(model, run)
