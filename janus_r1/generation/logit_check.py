"""Teacher-forced logits of the fixed-shape step (what a CUDA graph replays) against transformers' forward (the
``dynamic`` runner) on the same image tokens: max |delta logit| and how often the CFG-mixed greedy token agrees.

What bounds a step that cannot be bit-identical (:mod:`.numerics`' fast path; any GPU): ``bench/device_check.py``
prints it on a GPU, a test bounds it on the CPU.
"""

from __future__ import annotations

import torch

from . import decode
from .context import Context


@torch.no_grad()
def _forced_logits(model, ctx: Context, codes: torch.Tensor, runner: str) -> torch.Tensor:
    run, _ = decode._runner(model, ctx, codes.shape[1], runner)
    head = model.model.generation_head
    out = [head(run.prefill()).float()]
    fixed = getattr(run, "fixed", False)
    at = torch.zeros(1, dtype=torch.long, device=ctx.embeds.device)
    for t in range(codes.shape[1] - 1):
        pair = codes[:, t].unsqueeze(1).expand(-1, 2).reshape(-1, 1)
        embeds = model.prepare_embeddings_for_image_generation(pair)
        if fixed:
            run.span = run.bucket(t)
            run.set_bits(at, None)
            h = run.step(embeds, at)
            at += 1
        else:
            run.set_bits(t, None)
            h = run.step(embeds, t)
        out.append(head(h).float())
    return torch.stack(out, 1)  # (rows, n, V)


def teacher_forced(model, ctx: Context, codes: torch.Tensor, cfg_weight: float = 5.0) -> dict:
    """The fixed-shape step against transformers' forward on the same tokens: raw-logit max |delta|, and how
    often the greedy (CFG-mixed) token agrees."""
    ours = _forced_logits(model, ctx, codes, "fixed")
    theirs = _forced_logits(model, ctx, codes, "dynamic")
    mix = [u + cfg_weight * (c - u) for c, u in ((x[0::2], x[1::2]) for x in (ours, theirs))]
    agree = (mix[0].argmax(-1) == mix[1].argmax(-1)).float().mean().item()
    return {"max_abs_dlogit": (ours - theirs).abs().max().item(), "greedy_agreement": agree,
            "tokens": int(codes.numel())}
