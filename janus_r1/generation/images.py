"""Image <-> tensor conversions, written once for every entry point (CLI, API, nodes, training data).

* ``to_rgb`` accepts any PIL mode (RGBA, LA, P with transparency, L, I;16, I, F, CMYK, ...) and any size.
* ``vq_pixels``: the VQ-encoder input, ADM ``center_crop_arr`` (box-halve while the short side >= 2*size, bicubic
  so the short side is ``size``, centre crop) then 0.5/0.5 normalisation to [-1, 1] (spec §1.4).
* ``siglip_pixels``: the understanding input, longest side to ``size`` (bicubic), pad to a square with grey
  (127,127,127) centred, then [-1, 1] (spec §1.3).
* ``to_pil``: VQ decoder output in [-1, 1] -> uint8 RGB, ``clip((x+1)/2*255)`` rounded to nearest (truncated in
  re-encode mode, as the released scripts do).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..errors import JanusR1Error

BACKGROUND = (127, 127, 127)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB; transparent pixels are composited onto white."""
    if not isinstance(image, Image.Image):
        raise JanusR1Error(f"expected a PIL image, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise JanusR1Error(f"image has no pixels ({image.width}x{image.height})")
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = (0.0, 65535.0) if mode.startswith("I;16") else (float(arr.min()), float(arr.max()))
        if mode in ("I", "F") and lo >= 0 and hi <= 255:
            lo, hi = 0.0, 255.0
        arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def center_crop_arr(image: Image.Image, size: int) -> Image.Image:
    """ADM-style centre crop to ``size`` x ``size`` (the VQ encoder's preprocessing in the reference)."""
    image = to_rgb(image)
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(
        tuple(max(size, round(x * scale)) for x in image.size), resample=Image.BICUBIC
    )
    arr = np.asarray(image)
    top = (arr.shape[0] - size) // 2
    left = (arr.shape[1] - size) // 2
    return Image.fromarray(arr[top : top + size, left : left + size])


def pad_to_square(image: Image.Image, size: int) -> Image.Image:
    """Longest side to ``size`` (bicubic), then pad centred with the processor's grey background."""
    image = to_rgb(image)
    w, h = image.size
    scale = size / max(w, h)
    nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), resample=Image.BICUBIC)
    if (nw, nh) == (size, size):
        return image
    canvas = Image.new("RGB", (size, size), BACKGROUND)
    canvas.paste(image, ((size - nw) // 2, (size - nh) // 2))
    return canvas


def _normalise(images: list[Image.Image]) -> torch.Tensor:
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images])  # B,H,W,3
    return torch.from_numpy(arr).permute(0, 3, 1, 2).div(255.0).sub(0.5).div(0.5).contiguous()


def vq_pixels(images: list[Image.Image], size: int) -> torch.Tensor:
    """(B, 3, size, size) float32 in [-1, 1] for the VQ encoder."""
    return _normalise([center_crop_arr(im, size) for im in images])


def siglip_pixels(images: list[Image.Image], size: int) -> torch.Tensor:
    """(B, 3, size, size) float32 in [-1, 1] for the SigLIP understanding encoder."""
    return _normalise([pad_to_square(im, size) for im in images])


def to_pil(pixels: torch.Tensor, truncate: bool = False) -> list[Image.Image]:
    """(B, 3, H, W) in about [-1, 1] -> list of uint8 RGB PIL images, rounded to nearest; ``truncate=True`` is the
    released scripts' conversion (``np.clip((x+1)/2*255, 0, 255)`` assigned into a uint8 array: truncation)."""
    x = ((pixels.detach().float().cpu() + 1.0) / 2.0 * 255.0).clamp(0, 255)
    x = (x if truncate else x.round()).to(torch.uint8)  # float -> uint8 truncates toward zero, as NumPy does
    return [Image.fromarray(a.permute(1, 2, 0).numpy(), "RGB") for a in x]
