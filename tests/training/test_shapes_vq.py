"""The shapes world's hand-set VQ (``shapes_vq.build_tile_vq``): through the engine's own ``encode`` (cosine nearest
neighbour) and ``decode`` on transformers' VQ modules, every cell gets its colour's code and every code is drawn back
as the world's tile, whatever the rest of the scene."""

from __future__ import annotations

import random

import numpy as np
import torch

from janus_r1.generation import vq
from janus_r1.training import shapes as W
from janus_r1.training import shapes_model as M
from janus_r1.training import shapes_vq as V


def _vq():
    model, _ = M.new_model(0)
    vm = model.model.vqmodel.eval()
    V.build_tile_vq(vm)
    return vm


def _pixels(scenes) -> torch.Tensor:
    px = np.stack([np.asarray(W.render(s), dtype=np.float32) / 127.5 - 1.0 for s in scenes])
    return torch.from_numpy(px).permute(0, 3, 1, 2).contiguous()


def test_encode_and_decode_are_exact_in_sparse_and_dense_scenes():
    vm = _vq()
    for max_objects in (2, 8):  # dense scenes: the neighbours and GroupNorm's statistics must not matter
        x, codes = M._batch(random.Random(max_objects), 32, max_objects=max_objects)
        assert int(codes.gt(0).sum()) > 32  # there were tiles to get wrong
        assert torch.equal(vq.encode(vm, x), codes)
        drawn = ((vq.decode(vm, codes) + 1) * 127.5).clamp(0, 255).round()
        assert (drawn - ((x + 1) * 127.5).round()).abs().max() <= 1.0  # the rendering itself, to a level


def test_unused_codes_draw_ground_and_an_empty_canvas_is_ground():
    vm = _vq()
    codes = torch.tensor([[0] * 8 + [5, 17, 63, 40] + [0] * 4])
    drawn = ((vq.decode(vm, codes) + 1) * 127.5).clamp(0, 255).round()[0]
    assert torch.equal(drawn, torch.tensor(W.BACKGROUND, dtype=torch.float32).view(3, 1, 1).expand(3, 64, 64))
    assert vq.encode(vm, _pixels([[]])).tolist() == [[0] * 16]


def test_a_shifted_scene_gets_the_shifted_codes():
    vm = _vq()
    scene = [W.Placed("red", "block", 0, 0), W.Placed("blue", "bar", 3, 2), W.Placed("green", "dot", 1, 3)]
    moved = [W.Placed(o.colour, o.shape, o.row, o.col) for o in scene[1:]] + [W.Placed("red", "block", 1, 0)]
    a, b = vq.encode(vm, _pixels([scene, moved]))
    assert a.tolist() == V.scene_codes(scene) and b.tolist() == V.scene_codes(moved)
    assert V.scene_codes(scene)[:2] == [V.code_of("red")] * 2 and V.code_of(None) == 0
