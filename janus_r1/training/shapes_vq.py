"""The shapes world's VQ *encoder*, set by hand: every cell of a scene gets exactly its content's code.

Why by hand: fitted, the encoder picked the right code for only 42 % of objects after 1200 steps (the top
levels' GroupNorm(32) over 32 channels is a per-channel instance norm: a cell's features move with the rest of
the scene). The encoder is what turns the world's renderings into Task-I / Task-III targets, so its errors are
label noise in every later stage. Its job is easy to write down, though: one 16 px cell -> one code.

How (the real topology, every weight set): ``conv_in`` takes each pixel's offset from the ground per colour channel
and their sum; each stride-2 downsampling convolution combines the four pixels of its 2 x 2 block only (the
third tap row / column, which reaches into the next block, is zero), so four of them build per-cell sums over a
quadtree: the cell's mean colour (3 features), top half minus bottom half and the mass in the four 4 x 4 corner
blocks (on the channel sum: triangle, circle and square differ there). Residual and attention branches are zeroed
(each block is its shortcut). ``norm_out`` (GroupNorm, 4 channels per group at 128 channels) would rescale each
feature by statistics of the whole scene; each group therefore carries ``(f, -f, A, -A)`` with a large anchor
``A``, so the group mean is exactly 0 and the variance ``(mean f^2 + A^2) / 2`` hardly depends on the scene
(relative 1e-6 at ``A = 1000``). A bias of 20 keeps the SiLU after it in its linear range. ``quant_conv`` adds a
constant dimension (so that ground has a direction under the engine's cosine nearest neighbour), and the
codebook's first 13 rows are the features of the 13 cell contents themselves, computed by this encoder: a
rendering's cell is the same pixels wherever it sits, so ``encode`` returns its code exactly.
"""

from __future__ import annotations

import math

import torch

from . import shapes as W

ANCHOR = 1000.0
LINEAR = 20.0  # SiLU(x + 20) = x + 20 to 2e-8 relative
CONSTANT = 0.5  # quant_conv's constant dimension
FEATURES = 5  # mean R, G, B; top minus bottom; corner mass


def _tap_block(conv: torch.nn.Conv2d, out: int, inp: int, weights: tuple[float, float, float, float]) -> None:
    """``out`` = weights . (the 2 x 2 block's pixels of channel ``inp``: top-left, top-right, bottom-left,
    bottom-right)."""
    for (ky, kx), w in zip(((0, 0), (0, 1), (1, 0), (1, 1)), weights):
        conv.weight[out, inp, ky, kx] = w


def _identity(conv: torch.nn.Conv2d, channels: int) -> None:
    conv.weight.zero_()
    conv.bias.zero_()
    k = conv.kernel_size[0] // 2
    for c in range(channels):
        conv.weight[c, c, k, k] = 1.0


@torch.no_grad()
def build_cell_encoder(vqmodel) -> None:
    """Set the VQ encoder, ``quant_conv`` and the codebook by hand (module docstring)."""
    enc = vqmodel.encoder
    for name, m in enc.named_modules():  # every residual / attention branch adds zero
        if name.endswith(("conv2", "proj_out")):
            m.weight.zero_()
            m.bias.zero_()
    bg = torch.tensor(W.BACKGROUND, dtype=torch.float32) / 127.5 - 1.0
    # conv_in: channels 0-2 the offset from the ground, channel 3 their sum
    enc.conv_in.weight.zero_()
    enc.conv_in.bias.zero_()
    for c in range(3):
        enc.conv_in.weight[c, c, 1, 1] = 1.0
        enc.conv_in.weight[3, c, 1, 1] = 1.0
        enc.conv_in.bias[c] = -bg[c]
    enc.conv_in.bias[3] = -bg.sum()
    mean = (0.25, 0.25, 0.25, 0.25)
    levels = len(enc.down)
    for i, level in enumerate(enc.down):
        for block in level.block:
            if block.in_channels != block.out_channels:
                _identity(block.nin_shortcut, 8)
        if i == levels - 1:
            break
        conv = level.downsample.conv
        conv.weight.zero_()
        conv.bias.zero_()
        if i < levels - 3:  # 64 -> 32 -> 16 px: means of 2 x 2 blocks (a cell is then 4 x 4 blocks of 4 px)
            for c in range(4):
                _tap_block(conv, c, c, mean)
        elif i == levels - 3:  # 16 -> 8: means, and each quadrant's outer 4 px block on four channels
            for c in range(4):
                _tap_block(conv, c, c, mean)
            for k, w in enumerate(((1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1))):
                _tap_block(conv, 4 + k, 3, w)
        else:  # 8 -> 4: the cell's mean colour, top minus bottom, corner mass
            for c in range(3):
                _tap_block(conv, c, c, mean)
            _tap_block(conv, 3, 3, (0.5, 0.5, -0.5, -0.5))
            for k in range(4):
                conv.weight[4, 4 + k, k // 2, k % 2] = 1.0
    # the last level's shortcut (64 -> 128): the groups (f, -f, A, -A) that norm_out cannot rescale
    last = next(b for b in enc.down[-1].block if b.in_channels != b.out_channels).nin_shortcut
    last.weight.zero_()
    last.bias.zero_()
    for k in range(FEATURES):
        last.weight[4 * k, k, 0, 0], last.weight[4 * k + 1, k, 0, 0] = 1.0, -1.0
        last.bias[4 * k + 2], last.bias[4 * k + 3] = ANCHOR, -ANCHOR
    enc.norm_out.weight.zero_()
    enc.norm_out.bias.zero_()
    for k in range(FEATURES):
        enc.norm_out.weight[4 * k] = ANCHOR / math.sqrt(2.0)
        enc.norm_out.bias[4 * k] = LINEAR
    enc.conv_out.weight.zero_()
    enc.conv_out.bias.zero_()
    for k in range(FEATURES):
        enc.conv_out.weight[k, 4 * k, 1, 1] = 1.0
        enc.conv_out.bias[k] = -LINEAR
    qc = vqmodel.quant_conv
    qc.weight.zero_()
    qc.bias.zero_()
    qc.bias[0] = CONSTANT
    for k in range(FEATURES):
        qc.weight[1 + k, k, 0, 0] = 1.0
    # the codebook: each content's own features (row = code), every other row points away from all of them
    book = vqmodel.quantize.embedding.weight
    book.zero_()
    book[:, 0] = -1.0
    book[: 1 + len(W.COLOURS) * len(W.SHAPES)] = content_features(vqmodel)


def contents() -> list[W.Placed | None]:
    """Code order: ground, then colour-major, shape-minor (``shapes_model.code_of``)."""
    out: list[W.Placed | None] = [None]
    out += [W.Placed(c, s, 0, 0) for c in W.COLOURS for s in W.SHAPES]
    return out


@torch.no_grad()
def content_features(vqmodel) -> torch.Tensor:
    """(13, embed_dim): ``quant_conv(encoder(.))`` of each cell content, read off two rendered scenes."""
    import numpy as np

    objs = [o for o in contents() if o is not None]
    scenes = [[W.Placed(o.colour, o.shape, k // W.GRID, k % W.GRID) for k, o in enumerate(objs[i:i + 8])]
              for i in (0, 8)]
    px = torch.from_numpy(np.stack([np.asarray(W.render(s), dtype=np.float32) / 127.5 - 1.0 for s in scenes]))
    z = vqmodel.quant_conv(vqmodel.encoder(px.permute(0, 3, 1, 2).contiguous()))  # (2, e, 4, 4)
    cells = z.permute(0, 2, 3, 1).reshape(2, W.GRID * W.GRID, -1)
    rows = [cells[0, -1]]  # ground: the last cell of the first scene is empty
    rows += [cells[i // 8, i % 8] for i in range(len(objs))]
    return torch.stack(rows)
