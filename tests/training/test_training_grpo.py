"""GRPO on a micro model: log-probs of the sampled distribution, advantages, one update, rewards."""

from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import pytest
import torch

from janus_r1 import JanusR1Error
from janus_r1.generation import decode, tasks
from janus_r1.generation import introspect as decode_phases
from janus_r1.generation.sampling import filter_top_k
from janus_r1.training import grpo as G
from janus_r1.training import rewards as R
from janus_r1.training.config import GRPOConfig


@pytest.fixture(scope="module")
def j():
    from janus_r1.model.tiny import build_tiny_model
    from janus_r1.model.vocabulary import Vocabulary

    model, tok = build_tiny_model("micro", seed=0)
    return tasks.Janus(model, Vocabulary(tok))


def _cfg(**kw):
    base = dict(group_size=3, max_rounds=3, max_reflection=5, temperature=0.9, image_top_k=20, text_top_k=7)
    return GRPOConfig(**{**base, **kw})


@pytest.fixture
def no_bias(j):
    """Push the verdict towards "No" so that regenerations happen (kept on for rollout and recomputation)."""
    def hook(_m, _i, out):
        out[..., j.vocab.ids.no] += 1.5
        return out

    h = j.model.lm_head.register_forward_hook(hook)
    yield
    h.remove()


def _record_sampler(monkeypatch):
    """Every phase's (logits handed to the sampler, its Sampling, the token drawn)."""
    phases: list[list] = []
    orig_sample = decode.sample

    def rec(logits, s, gen):
        tok = orig_sample(logits, s, gen)
        phases[-1][1].append((logits.clone(), s, tok.clone()))
        return tok

    monkeypatch.setattr(decode, "sample", rec)
    for name in ("decode_image", "decode_text"):
        orig = getattr(decode_phases, name)

        def wrap(*a, _orig=orig, _name=name, **k):
            phases.append((_name, []))
            return _orig(*a, **k)

        monkeypatch.setattr(decode_phases, name, wrap)
    return phases


@pytest.mark.parametrize("logprob,reencode", [("sampled", False), ("code", False), ("sampled", True)])
def test_logprobs_equal_the_sampled_distribution(j, no_bias, monkeypatch, logprob, reencode):
    """Every segment's log-probs are the sampler's, phase by phase; with ``reencode`` (R2) the regeneration
    contexts hold the re-encoded codes of the judged 8-bit images, as in the rollout (kept with the trajectory)."""
    cfg = _cfg(logprob=logprob, reencode=reencode)
    phases = _record_sampler(monkeypatch)
    with torch.no_grad():
        trajs = G.rollout(j, ["a red cat"], cfg, seed=7)
    monkeypatch.undo()
    segs = G.segments(trajs, cfg)
    assert max(len(t.result.attempts) for t in trajs) >= 2, "the test needs regenerations"
    for t in trajs:
        history = t.result.attempts[:-1]
        assert sorted(t.reencoded) == (list(range(1, len(history) + 1)) if reencode else [])
        for m, a in enumerate(history, 1):
            assert t.history_codes(m) == (j.encode_images([a.image])[0].tolist() if reencode else a.codes)
    if reencode:
        assert any(t.history_codes(m) != t.result.attempts[m - 1].codes for t in trajs
                   for m in t.reencoded), "the round trip changes codes (else the test proves nothing)"
    with torch.no_grad():
        lps = G.segment_logprobs(j.model, j, trajs, segs, cfg)
    # the independent oracle: log p(token) of the distribution the sampler drew from, phase by phase
    oracle: dict = {}
    for k in range(1, cfg.max_rounds + 1):
        for kind, name in (("image", "decode_image"), ("text", "decode_text")):
            active = [i for i, t in enumerate(trajs) if len(t.result.attempts) >= k
                      and (kind == "image" or t.result.attempts[k - 1].judgement is not None)]
            if not active:
                continue
            pname, calls = phases.pop(0)
            assert pname == name
            for _step, (logits, s, tok) in enumerate(calls):
                lp = torch.log_softmax(filter_top_k(logits.float(), s.top_k) / s.temperature, -1)
                for row, i in enumerate(active):
                    oracle.setdefault((i, kind, k), []).append((lp[row, tok[row]].item(), tok[row].item()))
    assert not phases
    n_text = 0
    for s, lp in zip(segs, lps):
        expect = oracle[(s.traj, s.kind, s.round)]
        a = trajs[s.traj].result.attempts[s.round - 1]
        target = a.codes if s.kind == "image" else a.judgement.ids
        assert [t for _, t in expect[: len(target)]] == list(target)
        if logprob == "sampled":
            assert torch.allclose(lp, torch.tensor([x for x, _ in expect[: len(target)]]), atol=1e-4)
        elif s.kind == "text":  # the released trainer: verdict over the full vocabulary (R4)
            n_text += 1
            assert lp[0].item() < expect[0][0] - 1e-3
    assert logprob == "sampled" or n_text > 0


def _callable_reward():
    return R.CallableJudge(lambda ims, ps: [float(im.getpixel((0, 0))[0]) / 255.0 for im in ims])


def test_rewards_advantages_and_one_update(j):
    cfg = _cfg(max_rounds=2, beta=0.05, clip_eps=0.2)
    policy = copy.deepcopy(j.model).train()
    pj = tasks.Janus(policy, j.vocab)
    with torch.no_grad():
        trajs = G.rollout(pj, ["a red cat", "two green apples"], cfg, seed=1)
    G.score_trajectories(trajs, _callable_reward(), cfg)
    for t in trajs:
        assert t.rewards == [pytest.approx(sum(G.bilevel_reward(t.rqa, t.verdicts, 2)))]
    adv = G.advantages(trajs, cfg.group_size)
    assert torch.allclose(adv.view(2, 3).mean(1), torch.zeros(2, dtype=adv.dtype), atol=1e-9)
    assert adv.abs().max() > 0.5
    segs = G.segments(trajs, cfg)
    with torch.no_grad():
        old = G.segment_logprobs(policy, pj, trajs, segs, cfg)
    lp = G.segment_logprobs(policy, pj, trajs, segs, cfg)
    loss, stats = G.grpo_loss(lp, old, old, segs, adv, cfg)
    assert abs(loss.item()) < 1e-6 and stats["kl"] == 0.0  # rho = 1, zero-mean advantages, policy == ref
    loss.backward()
    # a small plain-gradient step ascends the surrogate sum_i A_i * mean_t lp_i(t)
    def surrogate(lps):
        per = {}
        for s, x in zip(segs, lps):
            per.setdefault(s.traj, []).append(x)
        return sum(adv[i, 0].item() * torch.cat(v).mean() for i, v in per.items())

    before = surrogate(old).item()
    with torch.no_grad():
        for p in policy.parameters():
            if p.grad is not None:
                p -= 1e-3 * p.grad
        after = surrogate(G.segment_logprobs(policy, pj, trajs, segs, cfg)).item()
    assert after > before
    lp2 = G.segment_logprobs(policy, pj, trajs, segs, cfg)
    _, stats2 = G.grpo_loss(lp2, old, old, segs, adv, cfg)
    assert stats2["kl"] > 0


def _grads(model) -> dict:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("advantage", ["trajectory", "segments"])
def test_micro_batches_give_the_one_shot_gradient(j, advantage):
    """Gradient accumulation over micro-batches of one trajectory equals the one-shot update (fp32 tolerance)."""
    def hook(_m, _i, out):  # a mild "No" bias: regenerations happen, and the verdicts (rewards) still differ
        out[..., j.vocab.ids.no] += 0.5
        return out

    handle = j.model.lm_head.register_forward_hook(hook)
    try:
        _micro_vs_one_shot(j, advantage)
    finally:
        handle.remove()


def _micro_vs_one_shot(j, advantage):
    cfg = _cfg(max_rounds=2, advantage=advantage, clip_eps=0.02, beta=0.1)
    policy = copy.deepcopy(j.model).train()
    pj = tasks.Janus(policy, j.vocab)
    with torch.no_grad():
        trajs = G.rollout(pj, ["a red cat", "two green apples"], cfg, seed=1)
    G.score_trajectories(trajs, _callable_reward(), cfg)
    adv, segs = G.advantages(trajs, cfg.group_size), G.segments(trajs, cfg)
    assert max(len(t.result.attempts) for t in trajs) == 2, "the test needs regenerations"
    with torch.no_grad():
        old = G.segment_logprobs(policy, pj, trajs, segs, cfg)
        ref = [x - 0.05 for x in old]
        gen = torch.Generator().manual_seed(0)
        for p in policy.parameters():  # move away from the old policy: ratios != 1, some clipped
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    loss, stats = G.grpo_loss(G.segment_logprobs(policy, pj, trajs, segs, cfg), old, ref, segs, adv, cfg)
    loss.backward()
    one_shot = _grads(policy)
    policy.zero_grad(set_to_none=True)
    chunks = G.micro_batches(segs, len(trajs), 1)
    assert len(chunks) == len(trajs) == 6 and sorted(i for c in chunks for i in c) == list(range(len(segs)))
    coef = G.loss_coefficients(segs, old)
    total, sums = 0.0, {}
    for c in chunks:
        sub = [segs[i] for i in c]
        part, s = G.grpo_terms(G.segment_logprobs(policy, pj, trajs, sub, cfg), [old[i] for i in c],
                               [ref[i] for i in c], sub, adv, cfg, [coef[i] for i in c])
        part.backward()
        total += part.item()
        sums = {k: sums.get(k, 0.0) + v for k, v in s.items()}
    accumulated = _grads(policy)
    assert total == pytest.approx(loss.item(), rel=1e-5, abs=1e-7)
    assert G.token_stats(sums) == pytest.approx(stats, rel=1e-5)
    assert stats["clip_frac"] > 0 and stats["kl"] > 0
    assert one_shot.keys() == accumulated.keys() and len(one_shot) > 10
    for n, g in one_shot.items():  # fp32 summation order differs: relative to the tensor's scale
        err = (accumulated[n] - g).abs().max().item()
        assert err <= 1e-5 * g.abs().max().item() + 1e-8, (n, err, g.abs().max().item())


def test_segments_variant_streams(j, no_bias):
    cfg = _cfg(max_rounds=2, advantage="segments")
    with torch.no_grad():
        trajs = G.rollout(j, ["a red cat"], cfg, seed=2)
    G.score_trajectories(trajs, _callable_reward(), cfg)
    segs = G.segments(trajs, cfg)
    for i, t in enumerate(trajs):
        r1, se = t.rqa[0], float(t.verdicts[0])
        assert t.rewards == pytest.approx([r1, 1 - abs(r1 - se), t.rqa[t.result.final]])
        mine = [(s.kind, s.round, s.stream) for s in segs if s.traj == i]
        expect = [("image", 1, 1), ("text", 1, 2)] + ([("image", 2, 3)] if len(t.result.attempts) == 2 else [])
        assert mine == expect  # an accepted image 1 is trained once (R8)
    assert G.advantages(trajs, 3).shape == (3, 3)


def test_edit_rollout_logprobs(j, tmp_path):
    from janus_r1.training.toy import write_toy_edit

    cfg = _cfg(task="edit", cfg=4.0)
    rows, _ = __import__("janus_r1.training.data", fromlist=["x"]).load_edit_rows(
        [write_toy_edit(tmp_path)], j.vocab, need_output=False)
    with torch.no_grad():
        trajs = G.edit_rollout(j, tasks.load_images([rows[0].input]), [rows[0].instruction], cfg, seed=0)
    G.score_trajectories(trajs, R.CallableJudge(None, lambda a, b, i: [(0.2, 0.9)] * len(b)), cfg, j.image_size)
    assert trajs[0].rewards == [pytest.approx(0.5 * 0.2 + 1.0 * 0.9)]
    segs = G.segments(trajs, cfg)
    with torch.no_grad():
        lp = G.segment_logprobs(j.model, j, trajs, segs, cfg)
    assert len(lp) == 3 and all(x.shape == (j.num_image_tokens,) and bool((x <= 0).all()) for x in lp)


def test_bad_reward_values_are_errors():
    trajs = [SimpleNamespace(result=SimpleNamespace(attempts=[SimpleNamespace(image=None)], prompt="p"))]
    cfg = _cfg()
    for bad in ([1.5], [float("nan")], [], [None]):
        with pytest.raises(JanusR1Error):
            G.score_trajectories(trajs, R.CallableJudge(lambda i, p, b=bad: b), cfg)


def test_janus_judge_is_the_engine_score(j):
    from PIL import Image

    ims = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    assert R.JanusJudge(j).score(ims, ["a", "b"]) == [x.score for x in tasks.score(j, ims, ["a", "b"])]
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    p = torch.softmax(logits, -1)[0]
    assert R.yes_no_score(logits, [1, 2], [3]).item() == pytest.approx(((p[1] + p[2]) / (p[1] + p[2] + p[3])).item())
    with pytest.raises(JanusR1Error, match="unknown reward"):
        R.make_reward("bogus")


class _Handler(BaseHTTPRequestHandler):
    fails = 0

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if _Handler.fails > 0:
            _Handler.fails -= 1
            self.send_response(503)
            self.end_headers()
            return
        out = json.dumps({"scores": [0.25] * len(body["images"])}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


def test_http_judge_retries_then_raises():
    from PIL import Image

    srv = HTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_port}/score"
    ims = [Image.new("RGB", (8, 8))] * 2
    try:
        with pytest.warns(DeprecationWarning, match="http: reward protocol is deprecated: serve the judge with vLLM"):
            judge = R.make_reward("http:" + url, retries=2)
        judge.backoff = 0.0
        _Handler.fails = 2
        assert judge.score(ims, ["a", "b"]) == [0.25, 0.25]  # two 503s, then success
        _Handler.fails = 5
        with pytest.raises(JanusR1Error, match="failed after 3 tries"):
            judge.score(ims, ["a", "b"])  # never a silent 0 (R6)
    finally:
        srv.shutdown()
