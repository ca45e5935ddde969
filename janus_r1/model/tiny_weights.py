"""Filler tensors that DeepSeek's real checkpoints carry but never use, for tiny DeepSeek-layout checkpoints.

A tiny directory should look like the released one tensor for tensor, so the loader's "tolerated unused" rules
(:func:`janus_r1.model.deepseek_keys.is_tolerated_unused`) are exercised: timm's SigLIP ``attn_pool.*`` MAP head
(DeepSeek runs the tower with ``ignore_head=True``) and LlamaGen's ``codebook_used`` counter from training.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

VISION_TOWER = "vision_model.vision_tower."  # DeepSeek's prefix of the SigLIP tower


def unused_deepseek_tensors(ds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's AttentionPoolLatent (MAP head) and LlamaGen's codebook usage buffer, shaped like the real ones."""
    pos = ds[VISION_TOWER + "pos_embed"]
    width, dtype = pos.shape[-1], pos.dtype
    fc1 = VISION_TOWER + "blocks.0.mlp.fc1.weight"
    hidden = ds[fc1].shape[0] if fc1 in ds else 4 * width
    gen = torch.Generator().manual_seed(1234)

    def rnd(*shape: int) -> torch.Tensor:
        return (0.02 * torch.randn(shape, generator=gen)).to(dtype)

    ap = VISION_TOWER + "attn_pool."
    return {
        ap + "latent": rnd(1, 1, width),
        ap + "q.weight": rnd(width, width),
        ap + "q.bias": rnd(width),
        ap + "kv.weight": rnd(2 * width, width),
        ap + "kv.bias": rnd(2 * width),
        ap + "proj.weight": rnd(width, width),
        ap + "proj.bias": rnd(width),
        ap + "norm.weight": torch.ones(width, dtype=dtype),
        ap + "norm.bias": torch.zeros(width, dtype=dtype),
        ap + "mlp.fc1.weight": rnd(hidden, width),
        ap + "mlp.fc1.bias": rnd(hidden),
        ap + "mlp.fc2.weight": rnd(width, hidden),
        ap + "mlp.fc2.bias": rnd(width),
        "gen_vision_model.quantize.codebook_used": torch.zeros(65536, dtype=dtype),
    }
