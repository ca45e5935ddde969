"""The fixed-shape Jacobi window pass (issue 26): what the ``graph`` runner captures once per attention bucket and
replays per pass. On the CPU the same body runs eagerly (and through a fake graph), so its logic is tested here:
the window at any start position against the eager window, greedy tokens against one-token greedy, a seed's
repeatability, no host read inside a pass, capture / refusal / torch gate, and the caller-owned figures."""

from __future__ import annotations

import contextlib
import logging

import pytest
import torch

from janus_r1.generation import graphs, jacobi
from janus_r1.generation.context import build, cfg_rows
from janus_r1.generation.decode import decode_image
from janus_r1.generation.oplog import OpLog
from janus_r1.generation.runners import BUCKET, StaticRunner
from janus_r1.generation.sampling import Sampling
from janus_r1.generation.window import FixedWindow

PROMPTS = ["a red cat", "two green apples and a yellow banana on a wooden table"]
SYNC_OPS = ("_local_scalar_dense", "item", "nonzero", "is_nonzero", "equal", "allclose", "masked_select", "unique",
            "_assert_async", "repeat_interleave.Tensor", "_unique2", "multinomial")


def _ctx(micro, prompts=PROMPTS):
    j = micro.janus
    rows = cfg_rows([[j.prompt_piece(j.prompt_ids(p))] for p in prompts], micro.vocab.ids.pad)
    return build(rows, micro.model.get_input_embeddings(), micro.vocab.ids.pad)


def _jacobi(s: Sampling, window: int) -> Sampling:
    return Sampling(s.temperature, s.top_k, s.top_p, s.greedy, decoding="jacobi", window=window)


@contextlib.contextmanager
def predictable(micro, boost: float = 2.0):
    """Favour image token 7 in the conditional rows: greedy tokens become a mix of 7 and others (measured: 13 of
    the 16 per image), so Jacobi passes accept several drafts at once (10 forwards, not 16, at window 6)."""

    def hook(_m, _i, out):
        out[0::2, ..., 7] += boost
        return out

    h = micro.model.model.generation_head.register_forward_hook(hook)
    try:
        yield
    finally:
        h.remove()


def _decode(micro, s: Sampling, runner: str, seed: int | None = 0, stats=None, ctx=None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return decode_image(micro.model, ctx or _ctx(micro), micro.num_image_tokens, 5.0, s, gen, runner=runner,
                        stats=stats)


def test_fixed_window_at_any_start_matches_the_eager_window(micro):
    """Windows fed at several start steps -- across two attention buckets, and back to earlier steps (a rollback
    by position over stale drafts) -- through the fixed-shape path (device start, bucket-wide masked attention)
    and the eager one (host start, its own length) on the same cache history. The shapes differ (the fixed pass
    attends over a masked bucket), so the hidden states are bounded, not compared bit for bit."""
    ctx = _ctx(micro)
    q, n = 5, BUCKET + 40
    fixed, eager = StaticRunner(micro.model, ctx, n, fixed=True), StaticRunner(micro.model, ctx, n)
    assert torch.equal(fixed.prefill(), eager.prefill())
    gen = torch.Generator().manual_seed(0)
    spans = set()
    with torch.no_grad():
        for at in (0, 2, 2, 9, BUCKET - ctx.embeds.shape[1] - 2, BUCKET + 3, 30, 31):
            tokens = torch.randint(0, 64, (ctx.embeds.shape[0], q), generator=gen)
            embeds = micro.model.prepare_embeddings_for_image_generation(tokens)
            span = fixed.window_span(at, q)
            spans.add(span)
            got = fixed.window(embeds, torch.tensor([at]), span)
            want = eager.window(embeds, at)
            assert got.shape == want.shape == (ctx.embeds.shape[0], q, embeds.shape[-1])
            assert (got - want).abs().max() <= 1e-4 * want.abs().max(), at
    assert len(spans) == 2  # the windows really ran in two buckets
    other = StaticRunner(micro.model, ctx, n, fixed=True)  # a different window position: different states
    other.prefill()
    with torch.no_grad():
        moved = other.window(embeds, torch.tensor([32]), other.window_span(32, q))
    assert (moved - want).abs().max() > 1e-3


@pytest.mark.parametrize("runner", ["fixed", "graph"])
@pytest.mark.parametrize("window", [2, 6, 16])
def test_greedy_jacobi_through_the_fixed_window_gives_the_one_token_tokens(micro, runner, window):
    with predictable(micro):
        one = _decode(micro, Sampling(greedy=True), "eager", seed=None)
        stats = jacobi.Stats()
        got = _decode(micro, _jacobi(Sampling(greedy=True), window), runner, seed=None, stats=stats)
    assert torch.equal(got, one)
    assert (one == 7).any() and (one != 7).any()  # neither trivial nor random
    assert stats.phases == 1 and stats.tokens == micro.num_image_tokens
    if window > 2:
        assert stats.forwards < micro.num_image_tokens  # several tokens accepted per pass


@pytest.mark.parametrize("runner", ["fixed", "graph"])
def test_sampled_jacobi_through_the_fixed_window_repeats_for_a_seed(micro, runner):
    s = _jacobi(Sampling(top_k=8, temperature=1.3), 4)
    with predictable(micro, 1.0):
        a, b, c = (_decode(micro, s, runner, seed) for seed in (3, 3, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_a_window_pass_reads_nothing_back_and_repeats_its_kernels(micro, monkeypatch):
    """What a capture needs: inside a bucket every pass has the same operators at the same shapes, none of which
    reads a value back to the host, and nothing crosses devices."""
    logs: list[list[tuple]] = []
    original = FixedWindow.body

    def logged(self, span):
        with OpLog() as log:
            original(self, span)
        logs.append(log.ops)

    monkeypatch.setattr(FixedWindow, "body", logged)
    _decode(micro, _jacobi(Sampling(top_k=8), 4), "graph")
    assert len(logs) >= 8
    names = {op for log in logs for op, *_ in log}
    assert not [n for n in names if any(n == f"aten.{s}" or n.startswith(f"aten.{s}.") for s in SYNC_OPS)]
    assert not [op for log in logs for op in log if len(op[2]) > 1]
    assert logs[1][:-1] == logs[0]  # the first pass only allocates the output buffer the later ones copy into
    assert all(log == logs[1] for log in logs[2:])


# --- capture, replay, refusal and the torch gate through a fake graph on the CPU ------------------------------



@pytest.mark.parametrize("s", [Sampling(greedy=True), Sampling(top_k=8)])
def test_the_window_pass_is_captured_once_and_replayed_per_pass(micro, fake_capture, s):
    stats = jacobi.Stats()
    want = _decode(micro, _jacobi(s, 4), "fixed")
    assert not fake_capture
    got = _decode(micro, _jacobi(s, 4), "graph", stats=stats)
    assert torch.equal(got, want)  # the same body, the same shapes: the replays change nothing
    passes = stats.forwards - 1
    assert len(fake_capture) == 1 and fake_capture[0].replays == passes - 1  # the first pass warms up eagerly
    assert fake_capture[0].generator is None  # verification draws outside the graph: no generator registered


def test_a_refused_or_failed_window_capture_decodes_eagerly_with_the_same_tokens(micro, monkeypatch, caplog):
    s = _jacobi(Sampling(top_k=8), 4)
    want = _decode(micro, s, "fixed")

    def broken(fn, generator, device=None):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs, "can_capture", lambda device: True)
    monkeypatch.setattr(graphs, "capture", broken)
    failures = graphs.stats.failures
    with caplog.at_level(logging.WARNING, logger="janus_r1.generation.graphs"):
        assert torch.equal(_decode(micro, s, "graph"), want)
    assert graphs.stats.failures == failures + 1
    lines = [r.getMessage() for r in caplog.records if r.name == "janus_r1.generation.graphs"]
    assert len(lines) == 1 and "operation not permitted" in lines[0]


def test_an_old_torch_never_captures_the_window(micro, monkeypatch, fake_capture):
    s = _jacobi(Sampling(greedy=True), 4)
    want = _decode(micro, s, "eager", seed=None)
    monkeypatch.setattr(torch, "__version__", "2.12.1")
    monkeypatch.setattr(graphs, "_WARNED", set())
    assert torch.equal(_decode(micro, s, "graph", seed=None), want) and not fake_capture
    monkeypatch.setattr(torch, "__version__", "2.13.0")
    assert torch.equal(_decode(micro, s, "graph", seed=None), want) and len(fake_capture) == 1


def test_a_capture_needs_enough_passes_left_in_the_bucket(micro, fake_capture):
    """Each pass commits at least one token: with fewer image tokens than ``MIN_STEPS_TO_CAPTURE`` passes after
    the warm-up, a capture cannot pay and none is made."""
    ctx = _ctx(micro)
    s = _jacobi(Sampling(greedy=True), 4)
    decode_image(micro.model, ctx, graphs.MIN_STEPS_TO_CAPTURE, 5.0, s, None, runner="graph")
    assert not fake_capture
    decode_image(micro.model, ctx, micro.num_image_tokens, 5.0, s, None, runner="graph")
    assert len(fake_capture) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_window_graph_replays_the_fixed_window(micro):
    """On a GPU: the captured window pass (same kernels, same shapes) changes no token and no generator state."""
    model = micro.model.to("cuda")
    try:
        ctx, runs = _ctx(micro), {}
        for runner in ("fixed", "graph"):
            captures = graphs.stats.captures
            gen = torch.Generator(device="cuda").manual_seed(0)
            codes = decode_image(model, ctx, micro.num_image_tokens, 5.0, _jacobi(Sampling(top_k=8), 4), gen,
                                 runner=runner)
            runs[runner] = (codes.cpu(), gen.get_state(), graphs.stats.captures - captures)
        assert torch.equal(runs["fixed"][0], runs["graph"][0]) and torch.equal(runs["fixed"][1], runs["graph"][1])
        assert runs["fixed"][2] == 0 and runs["graph"][2] == int(graphs.torch_version() >= graphs.MIN_CAPTURE_TORCH)
    finally:
        micro.model.to("cpu")


# --- the figures belong to the caller ------------------------------------------------------------------------

def test_stats_are_the_callers_own_and_count_both_modes(micro):
    assert not hasattr(jacobi, "LAST_STATS")  # no process-global figures for two phases to overwrite
    n = micro.num_image_tokens
    first, second = jacobi.Stats(), jacobi.Stats()
    with predictable(micro):
        _decode(micro, _jacobi(Sampling(greedy=True), 6), "eager", stats=first)
        _decode(micro, _jacobi(Sampling(greedy=True), 2), "fixed", stats=second)
        _decode(micro, _jacobi(Sampling(greedy=True), 6), "dynamic", stats=first)
    assert first.phases == 2 and first.tokens == 2 * n and second.phases == 1 and second.tokens == n
    assert first.forwards < 2 * n and first.forwards_per_phase == first.forwards / 2
    assert 1 < first.tokens_per_forward == 2 * n / first.forwards
    ar = jacobi.Stats()
    plain = _decode(micro, Sampling(top_k=8), "eager", seed=5, stats=ar)
    assert (ar.phases, ar.forwards, ar.tokens, ar.tokens_per_forward) == (1, n, n, 1.0)
    assert torch.equal(plain, _decode(micro, Sampling(top_k=8), "eager", seed=5))  # counting changes nothing
