"""Embedding blocks and the contexts the decode loop starts from (spec §2.8).

A context row is a list of pieces: text ids (with an optional attention mask with holes and an optional span that
the *unconditional* CFG row replaces by PAD), or a block of precomputed image embeddings (SigLIP understanding
embeddings when the model is about to write text, VQ generation embeddings when it is about to draw).
Rows are left-padded (PAD embeddings, attention 0). With CFG, rows are interleaved: cond at even, uncond at odd
indices, the uncond row being the cond row with its droppable span replaced by PAD -- attended, exactly as the
10 % prompt dropout the model was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import images as imgs


@dataclass
class Text:
    """Token ids; ``mask`` (same length) marks holes; ``drop`` = [start, end) replaced by PAD in the uncond row."""

    ids: list[int]
    mask: list[int] | None = None
    drop: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Embeds:
    """A block of image embeddings (n, D), attended."""

    value: torch.Tensor

    def __len__(self) -> int:
        return int(self.value.shape[0])


Piece = Text | Embeds


@dataclass
class Context:
    """Input embeddings (R, L, D) and the 0/1 attention mask (R, L) of a batch of rows."""

    embeds: torch.Tensor
    mask: torch.Tensor


def first_param(module: torch.nn.Module) -> torch.Tensor:
    """A module's first parameter (for its device and dtype), read without the attribute: inside a ZeRO-3 forward,
    reading ``module.weight`` gathers a partitioned weight and keeps it gathered until the forward ends."""
    p = next(module.parameters(), None)
    return p if p is not None else module.weight


def understanding_embeds(model, images, grad: bool = False) -> torch.Tensor:
    """SigLIP + aligner embeddings (B, N, D) of images the model is about to *read* (text comes next).

    SigLIP is frozen in every stage, so it never records a graph; ``grad=True`` lets the aligner train (SFT/RL).
    """
    dtype = first_param(model.model.aligner).dtype
    size = int(model.config.vision_config.image_size)
    pixels = imgs.siglip_pixels(images, size).to(first_param(model.lm_head).device, dtype)
    with torch.no_grad():
        feats = model.model.vision_model(pixels, return_dict=True).last_hidden_state
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        return model.model.aligner(feats)


def generation_embeds(model, codes: torch.Tensor, grad: bool = False) -> torch.Tensor:
    """``generation_aligner(generation_embeddings(codes))`` (B, N, D): images the model draws after."""
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        return model.prepare_embeddings_for_image_generation(codes.to(first_param(model.lm_head).device))


def uncond(piece: Piece, pad_id: int) -> Piece:
    """The unconditional twin of a piece: only the droppable span changes (to PAD, still attended)."""
    if isinstance(piece, Text) and piece.drop is not None:
        a, b = piece.drop
        ids = piece.ids[:a] + [pad_id] * (b - a) + piece.ids[b:]
        return Text(ids, piece.mask)
    return piece


def cfg_rows(rows: list[list[Piece]], pad_id: int) -> list[list[Piece]]:
    """Interleave (cond, uncond) rows: 2P rows, cond at even indices."""
    out: list[list[Piece]] = []
    for row in rows:
        out.append(row)
        out.append([uncond(p, pad_id) for p in row])
    return out


def build(rows: list[list[Piece]], embed_tokens: torch.nn.Module, pad_id: int) -> Context:
    """Embed and left-pad rows into one batch. Text of all rows is embedded in a single lookup."""
    weight = first_param(embed_tokens)
    device, dtype = weight.device, weight.dtype
    lengths = [sum(len(p) for p in row) for row in rows]
    total = max(lengths)
    # one embedding lookup for every text id of every row, PAD included for the left padding
    ids = torch.full((len(rows), total), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), total), dtype=torch.long)
    blocks: list[tuple[int, int, torch.Tensor]] = []
    for r, row in enumerate(rows):
        pos = total - lengths[r]
        for p in row:
            n = len(p)
            if isinstance(p, Text):
                ids[r, pos : pos + n] = torch.tensor(p.ids, dtype=torch.long)
                mask[r, pos : pos + n] = 1 if p.mask is None else torch.tensor(p.mask, dtype=torch.long)
            else:
                mask[r, pos : pos + n] = 1
                blocks.append((r, pos, p.value))
            pos += n
    embeds = embed_tokens(ids.to(device))
    for r, pos, value in blocks:
        embeds[r, pos : pos + value.shape[0]] = value.to(device=device, dtype=dtype)
    return Context(embeds=embeds, mask=mask.to(device))
