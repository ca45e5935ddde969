"""The SFT DataLoader: the trainer's seeded draws, the same order with any number of workers, resumable at a step,
bad images skipped (redrawn from the same stream) and reported."""

from __future__ import annotations

import random

import pytest

from janus_r1.training import data as D
from janus_r1.training import loader as L
from janus_r1.training import sft as S
from janus_r1.training.config import SFTConfig
from janus_r1.training.seeds import derive_seed
from janus_r1.training.toy import write_toy_t2i


@pytest.fixture(scope="module")
def vocab():
    from janus_r1.model.tiny import build_tiny_tokenizer
    from janus_r1.model.vocabulary import Vocabulary

    return Vocabulary(build_tiny_tokenizer())


def _pools(tmp_path, vocab, **cfg):
    recs, _ = D.load_t2i_labels([write_toy_t2i(tmp_path, n_prompts=3)], vocab)
    c = SFTConfig(max_steps=6, batch_size=2, grad_accum=2, **cfg)
    pools = S.Pools(recs, c)
    return pools, c


def _key(step_items):
    return [(mb.task, [(s.prompt, s.target, s.current, tuple(s.history), s.drop) for s in mb.samples])
            for mb in step_items]


def test_items_are_the_trainers_seeded_draws_with_their_images(tmp_path, vocab):
    pools, c = _pools(tmp_path, vocab)
    mix = pools.mix()
    steps = L.SFTSteps(pools, c, rank=1, mix=mix, world=2)
    for step in range(3):
        for m, mb in enumerate(steps[step]):  # the task of (step, m), the samples of slot m * world + rank
            task = random.Random(derive_seed(c.seed, "task", step, m)).choices(S.TASKS, weights=mix)[0]
            rng = random.Random(derive_seed(c.seed, "data", step, m * 2 + 1))
            want = [pools.draw(task, rng) for _ in range(c.batch_size)]
            assert mb.task == task and _key([mb]) == _key([L.MicroBatch(task, want)]) and not mb.bad
            need = {p for s in mb.samples for p in L.sample_paths(s)}
            assert set(mb.images) == need and all(im.mode == "RGB" for im in mb.images.values())


def test_order_is_the_same_with_workers_and_resumes_at_a_step(tmp_path, vocab):
    pools, c = _pools(tmp_path, vocab)
    plain = [_key(x) for x in L.sft_stream(pools, c, 0, 0, pools.mix(), workers=0)]
    assert len(plain) == 6 and len({str(k) for k in plain}) == 6
    assert [_key(x) for x in L.sft_stream(pools, c, 0, 0, pools.mix(), workers=2, prefetch=2)] == plain
    assert [_key(x) for x in L.sft_stream(pools, c, 0, 4, pools.mix(), workers=2)] == plain[4:]
    other_rank = [_key(x) for x in L.sft_stream(pools, c, 1, 0, pools.mix(), workers=0, world=2)]
    assert other_rank != plain and [k[0][0] for k in other_rank] == [k[0][0] for k in plain]  # same task


def test_bad_images_are_skipped_redrawn_and_reported(tmp_path, vocab):
    pools, c = _pools(tmp_path, vocab)
    (tmp_path / "p0_0.png").write_bytes(b"corrupt")  # a generation positive of prompt 0
    (tmp_path / "p1_4.png").unlink()  # a negative of prompt 1
    bad = {str(tmp_path / "p0_0.png"), str(tmp_path / "p1_4.png")}
    first = list(L.sft_stream(pools, c, 0, 0, pools.mix(), workers=2))
    again = list(L.sft_stream(pools, c, 0, 0, pools.mix(), workers=0))
    assert [_key(x) for x in first] == [_key(x) for x in again]  # skipping is deterministic too
    reports = [msg for step in first for mb in step for msg in mb.bad]
    assert reports and all(("cannot read image" in m and "p0_0.png" in m) or ("image not found" in m and
                                                                             "p1_4.png" in m) for m in reports)
    used = {p for step in first for mb in step for s in mb.samples for p in L.sample_paths(s)}
    assert not used & bad and all(len(mb.samples) == 2 for step in first for mb in step)


def test_a_data_set_of_bad_images_is_an_error(tmp_path, vocab):
    pools, c = _pools(tmp_path, vocab)
    for f in tmp_path.glob("*.png"):
        f.write_bytes(b"x")
    from janus_r1 import JanusR1Error

    with pytest.raises(JanusR1Error, match=r"64 draws in a row hit bad images \(last: cannot read image"):
        L.SFTSteps(pools, c, 0, pools.mix())[0]


def test_judge_pairs_put_a_yes_and_a_no_image_of_one_prompt_side_by_side(tmp_path, vocab):
    """``judge_pairs``: every Task-II micro-batch is pairs (positive, negative) of one prompt; an odd batch ends with
    one ordinary draw; the other tasks are unchanged; prompts with only one kind are never paired."""
    recs, _ = D.load_t2i_labels([write_toy_t2i(tmp_path, n_prompts=3)], vocab)
    recs[0].images = [x for x in recs[0].images if x.prob >= 0.7]  # a prompt with positives only
    probs = {x.path: x.prob for r in recs for x in r.images}
    c = SFTConfig(max_steps=20, batch_size=5, mix=(1.0, 1.0, 0.0), judge_pairs=True)
    pools = S.Pools(recs, c)
    assert [r.prompt for r, _, _ in pools.pairs] == [r.prompt for r in recs[1:]]
    steps = L.SFTSteps(pools, c, rank=0, mix=pools.mix())
    judged = 0
    for step in range(c.max_steps):
        (mb,) = steps[step]
        assert len(mb.samples) == 5
        if mb.task != "judge":
            continue
        judged += 1
        for yes, no in zip(mb.samples[0:4:2], mb.samples[1:4:2]):
            assert yes.prompt == no.prompt != recs[0].prompt and (yes.verdict, no.verdict) == ("Yes", "No")
            assert probs[yes.current] >= 0.7 and probs[no.current] < 0.5
            assert all(probs[p] < 0.5 and p != no.current for p, _ in no.history)
    assert judged >= 5


def test_judge_pairs_without_any_prompt_having_both_kinds_is_one_clear_error(tmp_path, vocab):
    from janus_r1.errors import JanusR1Error
    from janus_r1.training.config import load_config

    recs, _ = D.load_t2i_labels([write_toy_t2i(tmp_path, n_prompts=2)], vocab)
    for r in recs:
        r.images = [x for x in r.images if x.prob < 0.5]
    with pytest.raises(JanusR1Error, match="judge_pairs needs prompts with both a positive"):
        S.Pools(recs, SFTConfig(judge_pairs=True))
    S.Pools(recs, SFTConfig(judge_pairs=True, mix=(1.0, 0.0, 1.0)))  # no Task-II: nothing to pair
    with pytest.raises(JanusR1Error, match="judge_pairs .* needs batch_size >= 2"):
        load_config(SFTConfig, None, {"judge_pairs": True, "batch_size": 1})
    with pytest.raises(JanusR1Error, match="judge_pairs must be true or false"):
        load_config(SFTConfig, None, {"judge_pairs": "yes"})


def test_the_judge_pairs_flag_reaches_the_config(tmp_path, monkeypatch):
    from janus_r1.cli import main
    from janus_r1.training import trainer

    seen = []
    monkeypatch.setattr(trainer, "train_sft", lambda cfg: seen.append(cfg) or tmp_path)
    for flag, want in (([], False), (["--judge-pairs"], True)):
        assert main(["train-sft", "--model", "m", "--data", "d.jsonl", "--out", str(tmp_path), *flag]) == 0
        assert seen[-1].judge_pairs is want
