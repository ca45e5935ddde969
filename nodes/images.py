"""ComfyUI IMAGE tensors <-> PIL images; the engine does every crop and resize."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from PIL import Image

from ..janus_r1.generation.images import center_crop_arr


def to_pils(image, name: str = "image") -> list[Image.Image]:
    """IMAGE [B, H, W, C] (or [H, W, C]) float 0..1 -> RGB PIL images; one clear error naming the input else."""
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"Janus-R1: {name} must be an IMAGE tensor, got {type(image).__name__}.")
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[0] < 1 or image.shape[-1] not in (1, 3, 4) or 0 in image.shape:
        raise ValueError(
            f"Janus-R1: {name} must be an IMAGE batch [B, H, W, C] with B, H, W >= 1 and C in (1, 3, 4); "
            f"got shape {list(image.shape)}."
        )
    x = image.detach().float().cpu()
    if x.shape[-1] == 1:
        x = x.repeat(1, 1, 1, 3)
    x = x[..., :3].nan_to_num(0.0).clamp(0, 1)
    arr = (x * 255.0).round().to(torch.uint8).numpy()
    return [Image.fromarray(a, "RGB") for a in arr]


def to_image(pils: Iterable[Image.Image]) -> torch.Tensor:
    """PIL images -> IMAGE [B, H, W, 3] float32 0..1 on the intermediate device (others resized to the first)."""
    import comfy.model_management as mm

    pils = [p.convert("RGB") for p in pils]
    if not pils:
        raise ValueError("Janus-R1: no image to return")
    size = pils[0].size
    arrs = [
        np.asarray(p if p.size == size else p.resize(size, Image.BICUBIC), np.float32) / 255.0 for p in pils
    ]
    return torch.from_numpy(np.stack(arrs)).to(mm.intermediate_device())


def to_intermediate(image: torch.Tensor) -> torch.Tensor:
    import comfy.model_management as mm

    return image.to(mm.intermediate_device())


def as_drawn(images: Iterable[Image.Image], size: int) -> list[Image.Image]:
    """Images as the model sees them before drawing (the engine's VQ centre crop), so input images and redraws
    stack into one IMAGE batch."""
    return [im if im.size == (size, size) else center_crop_arr(im, size) for im in images]


def fit_size(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """A model-size square brought back to an input's ``(width, height)`` (bicubic; a non-square input's aspect
    ratio is restored by stretching, since the model drew the centre square it saw)."""
    return image if image.size == tuple(size) else image.resize(tuple(size), Image.BICUBIC)
