"""The two decode phases every task is made of -- draw image codes, judge images -- on prepared context rows."""

from __future__ import annotations

import torch

from ..errors import JanusR1Error
from .context import Piece, build, cfg_rows
from .decode import Hooks, decode_image, decode_text
from .facade import Janus
from .sampling import Sampling
from .trace import Judgement


def pair(prompts: list[str], items: list, what: str) -> tuple[list[str], list]:
    """Broadcast one prompt over many images (or one image over many prompts)."""
    if len(prompts) == 1 and len(items) > 1:
        prompts = prompts * len(items)
    if len(items) == 1 and len(prompts) > 1:
        items = items * len(prompts)
    if len(prompts) != len(items):
        raise JanusR1Error(f"got {len(items)} {what} but {len(prompts)} prompts; give one prompt or one per image.")
    return prompts, items


def draw(j: Janus, rows: list[list[Piece]], cfg: float, sampling: Sampling, gen, hooks: Hooks) -> torch.Tensor:
    """Image codes (B, N) for generation contexts, each row with its CFG twin."""
    ctx = build(cfg_rows(rows, j.vocab.ids.pad), j.model.get_input_embeddings(), j.vocab.ids.pad)
    return decode_image(j.model, ctx, j.num_image_tokens, cfg, sampling, gen, hooks, j.runner)


def judge_rows(
    j: Janus,
    rows: list[list[Piece]],
    sampling: Sampling,
    max_reflection: int,
    gen,
    hooks: Hooks,
    force: str | None = None,
) -> list[Judgement]:
    """Run the self-evaluation phase on prepared understanding contexts (each ending in SELF_CHECK)."""
    ids = j.vocab.ids
    ctx = build(rows, j.model.get_input_embeddings(), ids.pad)
    forced = [ids.yes, ids.no] if force is None else [ids.yes if force == "Yes" else ids.no]
    out = decode_text(j.model, ctx, max_reflection, sampling, gen, ids.eos, ids.pad, forced, hooks, j.runner)
    pair_logits = out.first_logits[:, [ids.yes, ids.no]]
    scores = torch.softmax(pair_logits, dim=-1)[:, 0].tolist()
    result = []
    for r in range(len(rows)):
        toks, bits = out.ids[r].tolist(), out.mask[r].tolist()
        if ids.eos in toks:  # keep through the row's own EOS (attention 0), drop the trailing PADs
            cut = toks.index(ids.eos) + 1
            toks, bits = toks[:cut], bits[:cut]
        if toks:
            verdict = "Yes" if toks[0] == ids.yes else "No"
        else:  # score-only: no token sampled, the verdict is the more probable answer
            verdict = "Yes" if scores[r] >= 0.5 else "No"
        text = j.vocab.decode(toks) if toks else verdict
        result.append(Judgement(verdict, float(scores[r]), text, toks, bits))
    return result
