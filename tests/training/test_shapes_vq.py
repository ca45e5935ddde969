"""The shapes world's hand-set VQ encoder (``shapes_vq.build_cell_encoder``): every cell of any scene gets its
content's code, through the engine's own ``encode`` (cosine nearest neighbour) and transformers' VQ modules."""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from janus_r1.generation import vq
from janus_r1.training import shapes as W
from janus_r1.training import shapes_model as M
from janus_r1.training import shapes_vq as V


def _vq():
    model, _ = M.new_model(0)
    vm = model.model.vqmodel.eval()
    V.build_cell_encoder(vm)
    return vm


def test_every_cell_gets_its_code_in_sparse_and_dense_scenes():
    vm = _vq()
    for max_objects in (3, 12):  # dense scenes: neighbours and GroupNorm's statistics must not matter
        x, codes = M._batch(random.Random(max_objects), 48, max_objects=max_objects)
        got = vq.encode(vm, x)
        assert torch.equal(got, codes)
        assert int(codes.gt(0).sum()) > 48  # objects were there to get wrong


def test_contents_are_apart_and_unused_codes_never_win():
    vm = _vq()
    book = F.normalize(vm.quantize.embedding.weight, dim=-1)
    n = 1 + len(W.COLOURS) * len(W.SHAPES)
    sim = book[:n] @ book[:n].t()
    sim.fill_diagonal_(-1.0)
    assert sim.max() < 0.97  # circle / square / triangle of one colour are the closest pairs
    assert (book[n:] @ book[:n].t()).max() < 0  # every unused row points away from every content
    # the code order is shapes_model.code_of's
    for k, o in enumerate(V.contents()):
        assert k == (0 if o is None else M.code_of(o.colour, o.shape))


def test_a_scene_and_its_shifted_copy_get_the_same_codes_per_cell():
    vm = _vq()
    scene = [W.Placed("red", "triangle", 0, 0), W.Placed("blue", "square", 3, 3), W.Placed("green", "circle", 1, 2)]
    moved = [W.Placed(o.colour, o.shape, (o.row + 1) % W.GRID, o.col) for o in scene]
    import numpy as np

    px = torch.from_numpy(np.stack([np.asarray(W.render(s), dtype=np.float32) / 127.5 - 1.0 for s in (scene, moved)]))
    a, b = vq.encode(vm, px.permute(0, 3, 1, 2).contiguous())
    assert a.tolist() == M.scene_codes(scene) and b.tolist() == M.scene_codes(moved)
