"""The shapes world's VQ model, set by hand: every cell of a scene gets exactly its colour's code, and every code
is drawn back exactly as its tile.

Why by hand: fitted, a VQ-16 at this size needs minutes of CPU and stays approximate (the encoder picked the right
code for 42 % of objects after 1200 steps); its errors would be label noise in every later stage and pictures the
judge misreads. Its job is easy to write down, though: one 16 px cell <-> one code (0 ground, 1 + colour index).

**Encoder** (the real topology, every weight set): ``conv_in`` takes each pixel's offset from the ground; each
stride-2 downsampling convolution averages its 2 x 2 block only (the tap row / column that reaches into the next
block is zero), so four of them give each cell's mean colour. Residual and attention branches are zeroed (each
block is its shortcut). ``norm_out`` (GroupNorm, 4 channels per group at 128 channels) would rescale each feature
by statistics of the whole scene; each group therefore carries ``(f, -f, A, -A)`` with a large anchor ``A``, so
the group mean is exactly 0 and the variance ``(mean f^2 + A^2) / 2`` hardly depends on the scene (relative 1e-6
at ``A = 1000``); a bias of 20 keeps the SiLU after it linear. ``quant_conv`` turns the mean colour ``m`` into
nearest-centroid scores ``m . c_k - |c_k|^2 / 2`` (``c_k`` each colour's offset, the ground's 0), one per code
dimension, and the codebook rows are one-hot: the engine's cosine nearest neighbour picks the best score.

**Decoder**: every convolution is the identity on the first 8 channels (centre tap), so nearest upsampling copies a
code's one-hot vector over its cell; the last GroupNorm (one channel per group at 32 channels: an instance norm)
turns each colour's channel into "this colour here" (>= 1 where present, <= 0 elsewhere, for a colour on at most
half the canvas), a gain of 20 and a bias of -10 make the SiLU after it ~0 or >= 10, and ``conv_out`` adds that
colour's +-0.2 per RGB channel to the ground: clamped, exactly the saturated palette of :mod:`.shapes`.
"""

from __future__ import annotations

import math

import torch

from . import shapes as W

ANCHOR = 1000.0
LINEAR = 20.0  # SiLU(x + 20) = x + 20 to 2e-8 relative
OFFSET = 10.0  # keeps every score positive
FEATURES = 3  # the cell's mean offset from the ground, per RGB channel


def code_of(colour: str | None) -> int:
    """A cell's code: 0 = ground, 1 + the colour's index."""
    return 0 if colour is None else 1 + list(W.COLOURS).index(colour)


def scene_codes(scene: list[W.Placed]) -> list[int]:
    codes = [0] * (W.GRID * W.GRID)
    for o in scene:
        for r, c in o.cells():
            codes[r * W.GRID + c] = code_of(o.colour)
    return codes


def _pixels(rgb) -> torch.Tensor:
    """An RGB colour in the VQ's [-1, 1] pixel units."""
    return torch.tensor(rgb, dtype=torch.float32) / 127.5 - 1.0


def _centroids() -> torch.Tensor:
    """(1 + colours, 3): each code's tile colour as an offset from the ground, in [-1, 1] units."""
    bg = _pixels(W.BACKGROUND)
    return torch.stack([torch.zeros(3)] + [_pixels(v) - bg for v in W.COLOURS.values()])


def _tap_block(conv: torch.nn.Conv2d, channel: int) -> None:
    """``channel`` = the mean of its 2 x 2 block (the stride-2 convolution's first two taps each way)."""
    for ky in (0, 1):
        for kx in (0, 1):
            conv.weight[channel, channel, ky, kx] = 0.25


def _identity(conv: torch.nn.Conv2d, channels: int) -> None:
    conv.weight.zero_()
    conv.bias.zero_()
    k = conv.kernel_size[0] // 2
    for c in range(min(channels, conv.in_channels, conv.out_channels)):
        conv.weight[c, c, k, k] = 1.0


def _zero_branches(module) -> None:
    for name, m in module.named_modules():  # every residual / attention branch adds zero
        if name.endswith(("conv2", "proj_out")):
            m.weight.zero_()
            m.bias.zero_()


@torch.no_grad()
def build_tile_vq(vqmodel) -> None:
    """Set the codebook, the encoder (+ ``quant_conv``) and the decoder (+ ``post_quant_conv``) by hand."""
    colours = len(W.COLOURS)
    book = vqmodel.quantize.embedding.weight
    book.zero_()
    book[:, 0] = 1.0  # ground, and every unused code (drawn as ground; encode never picks it: ties go to 0)
    for k in range(1, 1 + colours):
        book[k, 0], book[k, k] = 0.0, 1.0
    _build_encoder(vqmodel)
    _build_decoder(vqmodel)


def _build_encoder(vqmodel) -> None:
    enc = vqmodel.encoder
    _zero_branches(enc)
    bg = _pixels(W.BACKGROUND)
    enc.conv_in.weight.zero_()
    enc.conv_in.bias.zero_()
    for c in range(FEATURES):
        enc.conv_in.weight[c, c, 1, 1] = 1.0
        enc.conv_in.bias[c] = -bg[c]
    levels = len(enc.down)
    for i, level in enumerate(enc.down):
        for block in level.block:
            if block.in_channels != block.out_channels:
                _identity(block.nin_shortcut, FEATURES)
        if i < levels - 1:
            conv = level.downsample.conv
            conv.weight.zero_()
            conv.bias.zero_()
            for c in range(FEATURES):
                _tap_block(conv, c)
    # the last level's shortcut: the groups (f, -f, A, -A) that norm_out cannot rescale
    last = next(b for b in enc.down[-1].block if b.in_channels != b.out_channels).nin_shortcut
    last.weight.zero_()
    last.bias.zero_()
    for k in range(FEATURES):
        last.weight[4 * k, k, 0, 0], last.weight[4 * k + 1, k, 0, 0] = 1.0, -1.0
        last.bias[4 * k + 2], last.bias[4 * k + 3] = ANCHOR, -ANCHOR
    enc.norm_out.weight.zero_()
    enc.norm_out.bias.zero_()
    enc.conv_out.weight.zero_()
    enc.conv_out.bias.zero_()
    for k in range(FEATURES):
        enc.norm_out.weight[4 * k] = ANCHOR / math.sqrt(2.0)
        enc.norm_out.bias[4 * k] = LINEAR
        enc.conv_out.weight[k, 4 * k, 1, 1] = 1.0
        enc.conv_out.bias[k] = -LINEAR
    qc = vqmodel.quant_conv
    qc.weight.zero_()
    qc.bias.zero_()
    cents = _centroids()
    for k, c in enumerate(cents):  # nearest centroid = the largest m . c - |c|^2 / 2
        qc.weight[k, :FEATURES, 0, 0] = c
        qc.bias[k] = OFFSET - 0.5 * float(c @ c)


def _build_decoder(vqmodel) -> None:
    dec = vqmodel.decoder
    _zero_branches(dec)
    for name, m in [("post_quant_conv", vqmodel.post_quant_conv), *dec.named_modules()]:
        if isinstance(m, torch.nn.Conv2d) and not name.endswith(("conv2", "proj_out")) and name != "conv_out":
            _identity(m, 8)
    norm = dec.norm_out
    norm.weight.zero_()
    norm.bias.zero_()
    colours = len(W.COLOURS)
    norm.weight[1:1 + colours], norm.bias[1:1 + colours] = 20.0, -10.0
    out = dec.conv_out
    out.weight.zero_()
    out.bias.copy_(_pixels(W.BACKGROUND))
    for ci, rgb in enumerate(W.COLOURS.values()):
        out.weight[:, 1 + ci, 1, 1] = torch.tensor([0.2 if v > 127 else -0.2 for v in rgb])
