"""VQ-16 encode (DeepSeek's l2-normalised nearest neighbour) and decode, on transformers' ``JanusVQVAE``.

transformers' own ``JanusVQVAE.encode`` searches the *raw* codebook, which disagrees with DeepSeek's quantiser for
trained (non unit-norm) codebooks; R1 regeneration and editing depend on encode, so we do the search ourselves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def encode(vqmodel, pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) in [-1, 1] -> codes (B, (S/16)^2), raster order (row-major over the latent grid)."""
    weight = vqmodel.quantize.embedding.weight
    z = vqmodel.quant_conv(vqmodel.encoder(pixels.to(device=weight.device, dtype=weight.dtype)))
    b, c, h, w = z.shape
    z = F.normalize(z.permute(0, 2, 3, 1).reshape(-1, c).float(), dim=-1)
    book = F.normalize(weight.float(), dim=-1)
    # argmin ||z - e||^2 over unit vectors == argmax z.e
    return torch.argmax(z @ book.t(), dim=-1).view(b, h * w)


@torch.no_grad()
def decode(vqmodel, codes: torch.Tensor) -> torch.Tensor:
    """codes (B, N) -> pixels (B, 3, S, S) float32 in about [-1, 1]."""
    return vqmodel.decode(codes.to(vqmodel.quantize.embedding.weight.device)).float()
