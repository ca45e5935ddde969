"""GRPO algebra (spec Appendix C.6), LR schedules (C.7), bi-level rewards (B.2) -- no model needed."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from janus_r1.training import grpo as G
from janus_r1.training.schedules import GRPOSchedule, SFTSchedule
from janus_r1.training.sequences import code_merged_logprobs, guided


def test_group_advantages_zero_mean_unit_std_per_group():
    r = torch.tensor([0.1, 0.5, 0.9, 0.2, 3.0, 3.0, 2.0, 7.0, 1.0])
    a = G.group_advantages(r, 3).view(3, 3)
    assert torch.allclose(a.mean(1), torch.zeros(3), atol=1e-6)
    for g in range(3):
        std = r.view(3, 3)[g].std()
        assert a[g].std().item() == pytest.approx((std / (std + 1e-4)).item(), rel=1e-5)
    assert torch.equal(G.group_advantages(torch.ones(4), 2), torch.zeros(4))  # equal rewards -> no signal


def test_k3_nonnegative_and_zero_at_equality():
    g = torch.Generator().manual_seed(0)
    lp, ref = -torch.rand(1000, generator=g) * 5, -torch.rand(1000, generator=g) * 5
    assert (G.k3(lp, ref) >= 0).all()
    assert torch.equal(G.k3(lp, lp), torch.zeros(1000))
    assert (G.k3(lp, ref)[(lp - ref).abs() > 1e-3] > 0).all()


@pytest.mark.parametrize("adv", [1.5, -0.7])
@pytest.mark.parametrize("delta", [-0.5, -0.1, 0.0, 0.1, 0.5])
def test_clipped_surrogate_gradient_matches_formula(adv, delta):
    eps, beta = 0.2, 0.05
    lp_old, lp_ref = torch.tensor([-1.3]), torch.tensor([-1.1])
    lp = (lp_old + delta).clone().requires_grad_(True)
    G.token_loss(lp, lp_old, lp_ref, torch.tensor(adv), eps, beta).sum().backward()
    rho = math.exp(delta)
    clipped = (adv > 0 and rho > 1 + eps) or (adv < 0 and rho < 1 - eps)
    surrogate_grad = 0.0 if clipped else -adv * rho
    kl_grad = beta * (1 - math.exp(lp_ref.item() - lp.item()))  # d/dlp [exp(r - lp) - (r - lp) - 1]
    assert lp.grad.item() == pytest.approx(surrogate_grad + kl_grad, abs=1e-6)


def test_ratio_one_gives_reinforce_gradient():
    """rho == 1 (lp_old = lp.detach()): the gradient equals that of -A * lp (+ the KL term)."""
    lp = torch.tensor([-0.4, -2.0, -1.1], requires_grad=True)
    adv = torch.tensor([0.8, -1.2, 0.3])
    G.token_loss(lp, lp.detach(), lp.detach(), adv, 0.2, 0.05).sum().backward()
    assert torch.allclose(lp.grad, -adv)


def test_cfg_merged_logprob_is_guided_logits_at_temperature_w():
    g = torch.Generator().manual_seed(1)
    c, u = torch.randn(3, 5, 64, generator=g), torch.randn(3, 5, 64, generator=g)
    t = torch.randint(0, 64, (3, 5), generator=g)
    w = 5.0
    expect = torch.log_softmax(guided(c, u, w) / w, -1).gather(-1, t[..., None])[..., 0]
    assert torch.allclose(code_merged_logprobs(c, u, t, w), expect, atol=1e-5)


def test_grpo_lr_schedule_c7():
    """LambdaLR evaluates the factor at the number of updates already taken: update n uses factor(n - 1)."""
    s = GRPOSchedule(peak=6e-6, warmup=100, convert=2e-6, convert_steps=400, minimum=2e-7, total=3000, decay="linear")
    assert s(0) == pytest.approx(0.01) and s(99) == pytest.approx(1.0) and s(100) == pytest.approx(1.0)
    assert s(400) == pytest.approx(2e-6 / 6e-6) and s(3000) == pytest.approx(2e-7 / 6e-6)
    assert s(49) == pytest.approx(0.5) and s(250) == pytest.approx((1 + 2e-6 / 6e-6) / 2)
    assert s(1700) == pytest.approx((2e-6 + 2e-7) / 2 / 6e-6)
    c = GRPOSchedule(6e-6, 100, 2e-6, 400, 2e-7, 3000, "cosine")
    assert c(400) == pytest.approx(2e-6 / 6e-6) and c(3000) == pytest.approx(2e-7 / 6e-6)
    assert c(1700) == pytest.approx(s(1700))  # cosine midpoint equals the linear midpoint
    assert c(1000) > s(1000)  # cosine decays slower at first


def test_sft_schedule_warmup_then_cosine_to_min():
    s = SFTSchedule(peak=2e-5, warmup=1000, total=50000, start=1e-6, minimum=2e-7)
    assert s(0) * 2e-5 == pytest.approx(1e-6 + (2e-5 - 1e-6) / 1000) and s(999) == pytest.approx(1.0)
    assert s(1000) == pytest.approx(1.0) and s(50000) * 2e-5 == pytest.approx(2e-7)
    assert s(25500) * 2e-5 == pytest.approx((2e-5 + 2e-7) / 2)


@pytest.mark.parametrize("schedule", [SFTSchedule(2e-5, 3, 10), GRPOSchedule(6e-6, 3, 2e-6, 5, 2e-7, 10)])
def test_the_first_update_is_not_a_noop(schedule):
    """Warm-up starts above 0: the first optimizer step moves the weights (issue 10, item 6)."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    lrs = []
    for _ in range(4):
        lrs.append(sched.get_last_lr()[0])
        p.grad = torch.ones(3)
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(lrs[2] / 3) and lrs[0] > 0 and lrs[2] == pytest.approx(1.0)
    assert not torch.equal(p.detach(), torch.ones(3))


def test_bilevel_reward_paper_b2():
    # one image accepted, perfect: R_Gen = (T - K + 1) R_1 = 2, R_Comp = (1 - |1 - 1|) T / K = 2
    assert G.bilevel_reward([1.0], [True], 2) == pytest.approx((2.0, 2.0))
    # rejected a bad image, then accepted a good one
    assert G.bilevel_reward([0.2, 0.9], [False, True], 2) == pytest.approx((1.1, (0.8 + 0.9) * 2 / 2))
    # "Yes" on a bad image is penalised on comprehension
    assert G.bilevel_reward([0.1], [True], 3) == pytest.approx((0.3, 0.1 * 3))
    # general T = 3, stops at K = 2
    assert G.bilevel_reward([0.3, 0.6], [False, True], 3) == pytest.approx((0.3 + 2 * 0.6, (0.7 + 0.6) * 1.5))
    with pytest.raises(ValueError):
        G.bilevel_reward([0.1, 0.2, 0.3], [False] * 3, 2)


def _segs(trajs_tokens, stream=False):
    segs, lp = [], []
    for i, ns in enumerate(trajs_tokens):
        for s, n in enumerate(ns, 1):
            segs.append(G.Segment(i, "image", s, stream=s if stream else 0))
            lp.append(torch.full((n,), -1.0))
    return segs, lp


def test_loss_normalisation_trajectory_and_segments():
    cfg = SimpleNamespace(clip_eps=0.2, beta=0.0)
    segs, lp = _segs([[4, 2], [3, 1]])
    adv = torch.tensor([[1.0], [-3.0]])
    loss, stats = G.grpo_loss(lp, lp, lp, segs, adv, cfg)  # rho = 1: per-token -A; token mean = -A
    assert loss.item() == pytest.approx(-(1.0 - 3.0) / 2)
    assert stats["kl"] == 0.0 and stats["clip_frac"] == 0.0
    segs, lp = _segs([[4, 2, 5], [3, 1]], stream=True)
    adv = torch.tensor([[1.0, 2.0, 4.0], [-1.0, -4.0, 0.0]])
    loss, _ = G.grpo_loss(lp, lp, lp, segs, adv, cfg)
    # every stream is a mean over the two trajectories (the released code): stream 3's one row counts 1/2
    assert loss.item() == pytest.approx(-((1.0 - 1.0) / 2 + (2.0 - 4.0) / 2 + 4.0 / 2) / 3)


def test_loss_coefficients_by_hand():
    """Two trajectories: 0 accepted its image (4 tokens; verdict text 2 tokens), 1 said "No" (image 4 tokens,
    text mask [1, 0, 1], image 2 of 4 tokens). Paper: 1 / (trajectory tokens) / 2. Released code: 1 / (segment
    tokens) / 2 trajectories / 3 streams -- stream 3 divided by the trajectories, not by its one "No" row."""
    S = G.Segment
    segs = [S(0, "image", 1), S(0, "text", 1, mask=[1, 1]), S(1, "image", 1), S(1, "text", 1, mask=[1, 0, 1]),
            S(1, "image", 2)]
    lp = [torch.zeros(4), torch.zeros(2), torch.zeros(4), torch.zeros(3), torch.zeros(4)]
    assert G.loss_coefficients(segs, lp) == pytest.approx([1 / 6 / 2] * 2 + [1 / 10 / 2] * 3)
    code = [S(s.traj, s.kind, s.round, {("image", 1): 1, ("text", 1): 2, ("image", 2): 3}[(s.kind, s.round)],
              s.mask) for s in segs]
    want = [1 / 4 / 2 / 3, 1 / 2 / 2 / 3, 1 / 4 / 2 / 3, 1 / 2 / 2 / 3, 1 / 4 / 2 / 3]
    assert G.loss_coefficients(code, lp) == pytest.approx(want)
    # over 2 processes holding 2 trajectories each: world / global trajectories = 2 / 4, the same factors
    glob = G.global_rows(code, lambda t: torch.cat([t, torch.tensor([[2.0, 2.0, 0.0]], dtype=t.dtype)]))
    assert glob == {"rows": {1: 4.0, 2: 4.0, 3: 1.0}, "world": 2}
    assert G.loss_coefficients(code, lp, glob) == pytest.approx(want)
