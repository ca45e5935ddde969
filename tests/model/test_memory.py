"""Memory estimates against what the engine really allocates and builds."""

from __future__ import annotations

import torch

from janus_r1.generation import decode as D
from janus_r1.generation.context import build, cfg_rows
from janus_r1.generation.runners import StaticRunner
from janus_r1.model import memory as M


def test_weight_bytes_counts_every_parameter_and_buffer_once(micro):
    m = micro.model
    expect = sum(t.numel() * t.element_size() for t in {id(t): t for t in [*m.parameters(), *m.buffers()]}.values())
    assert M.weight_bytes(m) == expect > 0


def test_kv_estimate_equals_the_static_cache_allocation(micro):
    j, v = micro.janus, micro.vocab
    rows = cfg_rows([[j.prompt_piece(j.prompt_ids(p))] for p in ("a red cat", "two dogs on a sofa")], v.ids.pad)
    ctx = build(rows, micro.model.get_input_embeddings(), v.ids.pad)
    run = StaticRunner(micro.model, ctx, micro.num_image_tokens)
    allocated = sum(t.numel() * t.element_size() for t in run.cache.k + run.cache.v)
    assert M.kv_cache_bytes(micro.model, 4, ctx.embeds.shape[1] + micro.num_image_tokens) == allocated


def test_context_budget_bounds_the_longest_introspective_context(micro, force_verdict, monkeypatch):
    seen = []
    real = D.decode_image

    def spy(model, ctx, *a, **k):
        seen.append(ctx.embeds.shape[1] + micro.num_image_tokens)
        return real(model, ctx, *a, **k)

    monkeypatch.setattr("janus_r1.generation.introspect.decode_image", spy)
    with force_verdict("No"):
        micro.generate("a red cat", max_rounds=3, max_reflection=12, seed=0)
    prompt_tokens = len(micro.janus.prompt_ids("a red cat"))
    budget = M.context_tokens(micro.num_image_tokens, 3, 12, prompt_tokens)
    assert len(seen) == 3 and max(seen) <= budget <= max(seen) + 3 * 16  # tight: slack is the fixed strings


def test_estimate_grows_with_samples_and_rounds(micro):
    one = M.estimate(micro.model, samples=1, max_rounds=1)
    assert M.estimate(micro.model, samples=4, max_rounds=1).kv_cache == 4 * one.kv_cache
    assert M.estimate(micro.model, samples=1, max_rounds=3).kv_cache > one.kv_cache
    assert one.weights == M.weight_bytes(micro.model) and one.total > one.weights
    assert "GiB" in str(one)
    assert M.run_bytes(micro.model, 2, 100, 16) > M.kv_cache_bytes(micro.model, 2, 116)
    assert isinstance(torch.finfo(micro.model.dtype).bits, int)
