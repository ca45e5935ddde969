"""Teacher-forced sequences on the engine's own contexts, with gradients.

A training row is an engine context (a list of :mod:`janus_r1.generation.context` pieces, built by the same
functions the inference loop uses: ``Janus.prompt_piece``, ``templates.judge_context``, ``templates.regen_context``,
the editing row) followed by a *target*: image codes (entered through the generation path, predicted by the
generation head) or text ids (predicted by ``lm_head``). Rows are built with ``context.build`` (left padding), so
every target ends its row and the positions that predict it are the ``n`` positions before the last one.

Positions are transformers' defaults (absolute index in the padded buffer) and the attention mask keeps the
engine's holes, exactly as in the decode loop.
"""

from __future__ import annotations

import torch

from ..generation.context import Embeds, Piece, Text, build, cfg_rows, generation_embeds, understanding_embeds
from ..generation.sampling import cfg_mix, filter_top_k


def und_embeds(model, images, image_size: int | None = None) -> torch.Tensor:
    """SigLIP (frozen) + aligner (trainable) embeddings (B, N, D): the engine's own, with the aligner's graph."""
    return understanding_embeds(model, images, grad=True)


def gen_embeds(model, codes: torch.Tensor) -> torch.Tensor:
    """Generation-path embeddings (B, N, D) with gradients to ``generation_embeddings``/``generation_aligner``."""
    return generation_embeds(model, codes, grad=True)


def hidden(model, rows: list[list[Piece]], pad_id: int) -> torch.Tensor:
    """Final-normed hidden states (R, L, D) of left-padded rows."""
    ctx = build(rows, model.get_input_embeddings(), pad_id)
    out = model.model.language_model(inputs_embeds=ctx.embeds, attention_mask=ctx.mask, use_cache=False)
    return out.last_hidden_state


def image_logits(model, rows: list[list[Piece]], codes: torch.Tensor, pad_id: int,
                 cfg: float | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Generation-head logits (R, N, V) predicting ``codes`` (R, N) after each row.

    With ``cfg`` the rows are doubled into (cond, uncond) pairs exactly as the sampler does (only the droppable
    prompt span differs) and ``(cond, uncond)`` logits are returned.
    """
    n = codes.shape[1]
    if cfg is not None:
        rows = cfg_rows(rows, pad_id)
        codes = codes.repeat_interleave(2, dim=0)
    emb = gen_embeds(model, codes)
    h = hidden(model, [row + [Embeds(emb[r])] for r, row in enumerate(rows)], pad_id)
    logits = model.model.generation_head(h[:, -n - 1 : -1]).float()
    return (logits[0::2], logits[1::2]) if cfg is not None else logits


def text_logits(model, rows: list[list[Piece]], targets: list[list[int]], pad_id: int,
                masks: list[list[int] | None] | None = None) -> list[torch.Tensor]:
    """``lm_head`` logits (n_r, V) predicting each row's target ids (teacher forcing, the target's own mask)."""
    masks = masks or [None] * len(rows)
    h = hidden(model, [row + [Text(list(t), m)] for row, t, m in zip(rows, targets, masks)], pad_id)
    picked = torch.cat([h[r, -len(t) - 1 : -1] for r, t in enumerate(targets)])
    logits = model.lm_head(picked).float()
    return list(torch.split(logits, [len(t) for t in targets]))


def guided(cond: torch.Tensor, uncond: torch.Tensor, cfg: float) -> torch.Tensor:
    """The sampling logits ``u + w (c - u)`` of the decode loop (the one rule, in ``generation/sampling.py``)."""
    return cfg_mix(cond, uncond, cfg)


def sampled_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                     top_k: int = 0) -> torch.Tensor:
    """log p(target) under the distribution the sampler draws from: top-k filter, then softmax(logits / T).

    The sampled token always stays in the support: recomputed logits can differ from the rollout's in the last
    bits (another kernel, bf16), which must not turn a token at the top-k boundary into log 0."""
    filtered = filter_top_k(logits, top_k)
    if top_k:
        own = torch.zeros_like(filtered, dtype=torch.bool).scatter_(-1, targets.unsqueeze(-1), True)
        filtered = torch.where(own, logits, filtered)
    lp = torch.log_softmax(filtered / temperature, dim=-1)
    return lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def code_merged_logprobs(cond: torch.Tensor, uncond: torch.Tensor, targets: torch.Tensor, cfg: float) -> torch.Tensor:
    """The released trainer's image log-prob (R3): ``log_softmax(c - (w-1)/w u)`` = guided logits at temperature w."""
    merged = cond - (cfg - 1.0) / cfg * uncond if cfg else cond
    return torch.log_softmax(merged, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
