"""The GRPO step's bookkeeping: with mu = 1 the old log-probs are not computed (and the gradient is the one the
separate old-policy forward gives), rewards of a served judge are requested while the log-probs are computed,
and segments-mode loss weights use every process's stream counts."""

from __future__ import annotations

import contextlib
import copy
import threading
from types import SimpleNamespace

import pytest
import torch

from janus_r1.generation import tasks
from janus_r1.training import grpo as G
from janus_r1.training import trainer as T
from janus_r1.training.config import GRPOConfig


@pytest.fixture(scope="module")
def j():
    from janus_r1.model.tiny import build_tiny_model
    from janus_r1.model.vocabulary import Vocabulary

    model, tok = build_tiny_model("micro", seed=0)
    return tasks.Janus(model, Vocabulary(tok))


def _reward(trajs_seen=None):
    from janus_r1.training.judges import CallableJudge

    def score(images, prompts):
        if trajs_seen is not None:
            trajs_seen.append(threading.current_thread().name)
        return [float(im.getpixel((0, 0))[0]) / 255.0 for im in images]

    return CallableJudge(score)


def _fake_run(j, cfg, calls: list):
    """The parts of ``run.Run`` that ``_grpo_update`` uses, on one process; counts policy forwards and keeps
    the gradients of the update."""
    policy_model = copy.deepcopy(j.model).train()
    pj = tasks.Janus(policy_model, j.vocab)
    root = T.Policy(policy_model)

    def policy(fn, *a, **kw):
        calls.append(torch.is_grad_enabled())
        return root(fn, *a, **kw)

    grads: dict = {}

    def optimizer_step() -> float:
        for n, p in policy_model.named_parameters():
            if p.grad is not None:
                grads[n] = p.grad.clone()
        policy_model.zero_grad(set_to_none=True)
        return 1.0

    ref = SimpleNamespace(root=T.Policy(copy.deepcopy(j.model).eval()), full_params=contextlib.nullcontext)
    acc = SimpleNamespace(autocast=contextlib.nullcontext)
    run = SimpleNamespace(acc=acc, j=pj, model=policy_model, policy=policy, ref=ref, optimizer_step=optimizer_step,
                          sync=lambda last: contextlib.nullcontext(), backward=lambda loss, last: loss.backward(),
                          gather=lambda t: t, fail_together=_raise_if)
    return run, grads


def _raise_if(error, what: str = "the judge") -> None:
    if error is not None:
        raise error


@pytest.mark.parametrize("advantage", ["trajectory", "segments"])
def test_mu_1_skips_the_old_logprobs_with_the_same_gradient(j, monkeypatch, advantage):
    cfg = GRPOConfig(group_size=3, max_rounds=2, max_reflection=5, inner_iterations=1, advantage=advantage,
                     beta=0.1, micro_batch=1)
    with torch.no_grad():
        trajs = G.rollout(j, ["a red cat", "two green apples"], cfg, seed=1)
    G.score_trajectories(trajs, _reward(), cfg)
    results = {}
    for need_old in (True, False):
        monkeypatch.setattr(G, "old_logprobs_needed", lambda c, v=need_old: v)
        calls: list = []
        run, grads = _fake_run(j, cfg, calls)
        stats = T._grpo_update(run, cfg, trajs, tasks.Janus(run.ref.root.model, j.vocab))
        chunks = len(G.micro_batches(G.segments(trajs, cfg), len(trajs), cfg.micro_batch))
        assert calls.count(False) == (chunks if need_old else 0)  # the no-grad old-policy forwards
        assert calls.count(True) == chunks
        results[need_old] = (stats, grads)
    (s1, g1), (s0, g0) = results[True], results[False]
    assert s0["loss"] == pytest.approx(s1["loss"], rel=1e-6, abs=1e-9) and s0["clip_frac"] == s1["clip_frac"] == 0
    assert g1.keys() == g0.keys() and len(g1) > 10
    for n in g1:
        assert torch.allclose(g0[n], g1[n], rtol=1e-5, atol=1e-8), n


def test_a_served_judge_scores_while_the_logprobs_are_computed(j):
    """The rewards' future is only awaited after the reference log-probs; a remote judge runs in a thread."""
    cfg = GRPOConfig(group_size=2, max_rounds=2, max_reflection=4, inner_iterations=1)
    with torch.no_grad():
        trajs = G.rollout(j, ["a red cat"], cfg, seed=3)
    order: list = []
    calls: list = []
    run, _ = _fake_run(j, cfg, calls)
    gate = threading.Event()
    real_root = run.ref.root

    def ref_root(fn, *a, **kw):
        out = real_root(fn, *a, **kw)
        order.append("ref")
        gate.set()
        return out

    run.ref = SimpleNamespace(root=ref_root, full_params=contextlib.nullcontext)
    reward = _reward()
    reward.remote = True
    assert T._overlaps(reward, cfg) and not T._overlaps(_reward(), cfg)
    assert not T._overlaps(reward, GRPOConfig(overlap_rewards=False))

    def slow_score(run_, cfg_, trajs_, reward_):
        assert gate.wait(60)  # only finishes once the reference log-probs ran: they did not wait for it
        T._score(run_, cfg_, trajs_, reward_)
        order.append("scored")

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(slow_score, run, cfg, trajs, reward)
        T._grpo_update(run, cfg, trajs, tasks.Janus(real_root.model, j.vocab), fut)
    assert order == ["ref", "scored"] and all(t.rewards for t in trajs)


def test_segments_weights_use_global_stream_counts():
    """Two ranks with different numbers of regenerations: the mean of their losses (what averaging gradients
    gives) equals the one-process loss over all trajectories."""
    S = G.Segment
    rank0 = [S(0, "image", 1, 1), S(0, "text", 1, 2, [1, 1]), S(0, "image", 2, 3), S(1, "image", 1, 1),
             S(1, "text", 1, 2, [1, 0, 1])]
    rank1 = [S(0, "image", 1, 1), S(0, "text", 1, 2, [1]), S(1, "image", 1, 1), S(1, "text", 1, 2, [1, 1]),
             S(1, "image", 2, 3), S(2, "image", 1, 1), S(2, "text", 1, 2, [1, 1]), S(2, "image", 2, 3)]
    gen = torch.Generator().manual_seed(0)

    def lps(segs):
        return [torch.randn(len(s.mask) if s.mask else 4, generator=gen) for s in segs]

    lp0, lp1 = lps(rank0), lps(rank1)
    adv0, adv1 = torch.randn(2, 3, generator=gen, dtype=torch.float64), torch.randn(3, 3, generator=gen,
                                                                                      dtype=torch.float64)
    cfg = GRPOConfig(advantage="segments", beta=0.1)
    both = torch.cat([G.stream_rows(rank0), G.stream_rows(rank1)])
    per_rank = []
    for segs, lp, adv in ((rank0, lp0, adv0), (rank1, lp1, adv1)):
        glob = G.global_rows(segs, lambda t: both)
        coef = G.loss_coefficients(segs, lp, glob)
        per_rank.append(G.grpo_terms(lp, [x.detach() for x in lp], [x - 0.1 for x in lp], segs, adv, cfg, coef)[0])
    shifted = [S(s.traj + 2, s.kind, s.round, s.stream, s.mask) for s in rank1]
    segs, lp = rank0 + shifted, lp0 + lp1
    one = G.grpo_terms(lp, [x.detach() for x in lp], [x - 0.1 for x in lp], segs, torch.cat([adv0, adv1]), cfg,
                       G.loss_coefficients(segs, lp))[0]
    assert float(sum(per_rank) / 2) == pytest.approx(float(one), rel=1e-6)
    local = [G.grpo_terms(lp, [x.detach() for x in lp], [x - 0.1 for x in lp], segs_, adv, cfg,
                          G.loss_coefficients(segs_, lp))[0]
             for segs_, lp, adv in ((rank0, lp0, adv0), (rank1, lp1, adv1))]
    assert float(sum(local) / 2) != pytest.approx(float(one), rel=1e-3)  # per-rank counts weighted them apart
