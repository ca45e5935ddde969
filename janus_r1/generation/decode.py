"""THE decode loop: KV cache, CFG pairs, one sampler, progress and cancel hooks.

Every task (text-to-image, judging, introspective regeneration, editing, scoring, the CLI, the nodes and the RL
rollouts) goes through :func:`decode_image` or :func:`decode_text`. Each phase is: prefill, sample token 0 from
the prefill's logits, then one *step* per further token -- feed the last token, run the decoder, sample the next
token into a persistent buffer. The step is one function for every runner (``runners.py``): on CUDA its
fixed-shape form is captured once per attention bucket of a phase as a CUDA graph and replayed (``graphs.py``). A speed-up or a fix
here lands everywhere.

We drive transformers' building blocks directly (``model.model.language_model`` + ``generation_head`` /
``lm_head``), not ``generate()``: the R1 flow needs image-conditioned contexts ``generate`` cannot take, and the
hand-written loop has less per-step overhead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import Cancelled
from . import graphs, jacobi
from .context import Context
from .graphs import Pacer, Stepper
from .runners import StaticRunner, TransformersRunner, cache_keyword
from .sampling import Sampling, cfg_mix, force_tokens, sample
from .window import window_step

__all__ = ["RUNNERS", "Hooks", "StepEvent", "TextOut", "cache_keyword", "decode_image", "decode_text"]

log = logging.getLogger(__name__)


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

    @property
    def watching(self) -> bool:
        """Someone follows the steps (progress, preview, cancel): then the host is paced to the device."""
        return self.on_step is not None or self.should_cancel is not None


NO_HOOKS = Hooks()

TEXT_CHECK_EVERY = 4  # CUDA: tokens between two host reads of "every row has finished" in a text phase


def stop_check_every(device: torch.device) -> int:
    """How often a text phase reads "every row has finished" back to the host: each read waits for the device,
    so on CUDA every :data:`TEXT_CHECK_EVERY` tokens (at most that many - 1 PAD-only steps more, cut from the
    result); on the CPU the read is free, so every token."""
    return TEXT_CHECK_EVERY if device.type == "cuda" else 1

# auto:     "graph" on CUDA, "eager" elsewhere (LLaMA in eval mode without offloaded layers; else "dynamic")
# graph:    the fixed-shape step (position, rotary rows and mask selected on the device), captured once per
#           attention bucket of a phase as a CUDA graph and replayed; on CPU, or if capture fails, the same step runs eagerly
#           (a Jacobi phase: its fixed-shape window pass, likewise per bucket; window.py)
# fixed:    that fixed-shape step, always eager (the graph's reference in tests and benchmarks)
# eager:    static KV cache, each step attends over its own length (fastest without graphs, e.g. on CPU)
# dynamic:  transformers' own cache through the full language_model call
# Old names, still accepted: static = eager; compiled = graph (torch.compile of the step took minutes for 30
# layers and recompiled per context length; one graph capture removes the same launch overhead, compiling nothing).
RUNNER_ALIASES = {"static": "eager", "compiled": "graph"}
RUNNERS = ("auto", "graph", "fixed", "eager", "dynamic", *RUNNER_ALIASES)


def _runner(model, ctx: Context, max_new: int, runner: str = "auto"):
    """Pick the runner; returns it and whether its fixed-shape step may be captured."""
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {RUNNERS}, got {runner!r}")
    runner = RUNNER_ALIASES.get(runner, runner)
    lm = model.model.language_model
    static_ok = (
        not getattr(model, "hf_device_map", None)  # offloaded layers live behind accelerate's forward hooks
        and getattr(lm.config, "model_type", "") == "llama"
        and not lm.training
        and getattr(lm.config, "_attn_implementation", "sdpa") in ("sdpa", "eager", None)
        and getattr(lm.config, "rope_parameters", {}).get("rope_type", "default") == "default"
    )
    if runner == "dynamic" or not static_ok:
        return TransformersRunner(model, ctx, max_new), False
    if runner == "auto":
        runner = "graph" if ctx.embeds.device.type == "cuda" else "eager"
    why = graphs.host_sync_reason(model) if runner == "graph" else None
    if runner == "graph" and not why and graphs.can_capture(ctx.embeds.device) and not graphs.capture_supported():
        why = "this torch is too old for safe captures"  # warned once by capture_supported
    if why:  # a captured graph would be wrong or fail: the eager static step is the next fastest
        log.info("not capturing CUDA graphs: %s", why)
        runner = "eager"
    return StaticRunner(model, ctx, max_new, fixed=runner in ("graph", "fixed")), runner == "graph"


def _put(buf: torch.Tensor, col: int | torch.Tensor, values: torch.Tensor) -> None:
    """``buf[:, col] = values`` at a host column or a device one (no host read)."""
    if isinstance(col, torch.Tensor):
        buf.index_copy_(1, col, values.unsqueeze(1).to(buf.dtype))
    else:
        buf[:, col] = values


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
    stats: jacobi.Stats | None = None,
) -> torch.Tensor:
    """Sample ``n_tokens`` image tokens for interleaved (cond, uncond) rows; returns codes (P, n_tokens).

    Guided logits :func:`~.sampling.cfg_mix` from the generation head; the sampled token is fed to both rows of
    its pair as ``generation_aligner(generation_embeddings(token))``. ``stats`` (optional, the caller's own
    :class:`~.jacobi.Stats`): the phase's forward passes and tokens are added to it (benchmarks; no global).
    """
    rows = ctx.embeds.shape[0]
    if rows % 2:
        raise ValueError("CFG contexts have an even number of rows (cond, uncond pairs)")
    device = ctx.embeds.device
    if sampling.decoding == "jacobi":  # opt-in: several tokens per forward pass, same distribution (jacobi.py)
        run, graph = _runner(model, ctx, n_tokens + sampling.window, runner)

        def committed(codes: torch.Tensor, t: int) -> None:
            hooks.check()
            if hooks.on_step is not None:
                hooks.on_step(StepEvent("image", t + 1, n_tokens, codes[:, : t + 1]))

        forward = window_step(model, run, rows // 2, sampling.window, graph, n_tokens)
        try:
            return jacobi.decode(model, forward, run.prefill(), n_tokens, cfg_weight, sampling, generator,
                                 sampling.window, committed, stats)
        finally:
            forward.close()
    run, graph = _runner(model, ctx, n_tokens, runner)
    codes = torch.empty((rows // 2, n_tokens), dtype=torch.long, device=device)
    tok = torch.empty(rows // 2, dtype=torch.long, device=device)  # the last sampled token of each pair
    head = model.model.generation_head

    def pick(h: torch.Tensor, col: int | torch.Tensor) -> None:
        logits = head(h).float()
        nxt = sample(cfg_mix(logits[0::2], logits[1::2], cfg_weight), sampling, generator)
        tok.copy_(nxt)
        _put(codes, col, nxt)

    def body(at: int | torch.Tensor) -> None:  # feed the token sampled at step `at`, sample step at+1
        pair_rows = tok.unsqueeze(1).expand(-1, 2).reshape(-1, 1)  # (cond, uncond) of each pair
        run.set_bits(at, None)
        pick(run.step(model.prepare_embeddings_for_image_generation(pair_rows), at), at + 1)

    # one Stepper (on CUDA: one captured graph) per attention bucket; `n` = the steps that bucket will run
    step = run.stepper(body, lambda fn, n: Stepper(fn, run.fixed, graph, device, generator, steps=n), n_tokens - 1)
    pace = Pacer(device, hooks.watching)
    h = run.prefill()
    try:
        for t in range(n_tokens):
            hooks.check()
            if t == 0:
                pick(h, 0)
            else:
                step(t - 1)
            pace.tick()
            if hooks.on_step is not None:
                hooks.on_step(StepEvent("image", t + 1, n_tokens, codes[:, : t + 1]))
    finally:
        step.close()
    if stats is not None:
        stats.add(n_tokens, n_tokens)  # the prefill, then one step per further token
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
    after its EOS on; EOS and those PADs get attention 0 so later positions never see them (spec §2.2). Early
    stopping reads "all rows finished" back to the host every :func:`stop_check_every` tokens (each read waits
    for the device: on CUDA, every :data:`TEXT_CHECK_EVERY` tokens), and the result is cut where the last row
    finished (a device counter of the steps with a row still running), so the ids are the same either way
    (progress hooks may see up to ``TEXT_CHECK_EVERY - 1`` of those PAD-only steps).
    """
    rows = ctx.embeds.shape[0]
    device = ctx.embeds.device
    run, graph = _runner(model, ctx, max(max_new, 1), runner)
    embed = model.get_input_embeddings()
    h = run.prefill()
    first = model.lm_head(h).float()
    ids = torch.full((rows, max_new), pad_id, dtype=torch.long, device=device)
    bits = torch.zeros((rows, max_new), dtype=torch.long, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    tok = torch.empty(rows, dtype=torch.long, device=device)  # the last sampled token and its attention bit
    bit = torch.empty(rows, dtype=torch.long, device=device)
    running = torch.zeros((), dtype=torch.long, device=device)  # picks after which some row was still running

    def pick(logits: torch.Tensor, col: int | torch.Tensor) -> None:
        nxt = sample(logits, sampling, generator)
        nxt = torch.where(finished, torch.full_like(nxt, pad_id), nxt)
        b = ((nxt != eos_id) & ~finished).long()
        finished.logical_or_(nxt == eos_id)
        running.add_(finished.logical_not().any().long())
        tok.copy_(nxt)
        bit.copy_(b)
        _put(ids, col, nxt)
        _put(bits, col, b)

    def body(at: int | torch.Tensor) -> None:  # feed the token sampled at step `at`, sample step at+1
        run.set_bits(at, bit)
        pick(model.lm_head(run.step(embed(tok).unsqueeze(1), at)).float(), at + 1)

    step = run.stepper(body, lambda fn, n: Stepper(fn, run.fixed, graph, device, generator, steps=n,
                                                   eager_steps=graphs.TEXT_EAGER_STEPS), max_new - 1)
    pace = Pacer(device, hooks.watching)
    every = stop_check_every(device)
    n = 0
    try:
        for t in range(max_new):
            hooks.check()
            if t == 0:
                pick(first if force_first is None else force_tokens(first, force_first), 0)
            else:
                step(t - 1)
            pace.tick()
            n = t + 1
            if hooks.on_step is not None:
                hooks.on_step(StepEvent("text", n, max_new, ids[:, :n]))
            if n == max_new or (n % every == 0 and bool(finished.all())):
                break
    finally:
        step.close()
    n = min(n, int(running.item()) + 1)  # the steps run after every row had finished are PAD only: cut
    return TextOut(ids=ids[:, :n], mask=bits[:, :n], first_logits=first)
