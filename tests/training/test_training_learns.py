"""The shipped training *learns* (issue 23): on the shapes world a short SFT teaches the verdict and a short GRPO
raises the reward. Learning, not timing, is asserted; ``bench/learns.py`` runs the whole chain and its targets.

Both tests use the shapes Janus (``shapes_model``) with its hand-set VQ (``shapes_vq``: exact tiles) and
understanding path. Everything else is the shipped path: ``janus-r1 build-data --judge shapes:``, ``train-sft``,
``train-grpo --reward shapes:``.
"""

from __future__ import annotations

import json
import random

import pytest

from janus_r1.training import shapes as W
from janus_r1.training import shapes_model as M
from janus_r1.training import shapes_vq as V
from janus_r1.training import shapes_world as SW


def _model(path, seed: int = 0, encoder: bool = False):
    model, tok = M.new_model(seed)
    V.build_tile_vq(model.model.vqmodel)
    if encoder:
        M.build_flat_encoder(model)
    return M.save_model(model, tok, path)


def _cli(*args: str) -> None:
    from janus_r1.cli import main

    assert main(list(args)) == 0


def _verdict_acc(model_dir, prompts: list[str], seed: int, wrong=SW.wrong_scene) -> float:
    from janus_r1.generation import tasks
    from janus_r1.model.loading import load_model

    model, vocab = load_model(str(model_dir), device="cpu", dtype="fp32")
    j = tasks.Janus(model.eval(), vocab)
    rng = random.Random(seed)
    images, ps, truth = [], [], []
    for p in prompts:
        for good in (True, False):
            images.append(W.render(W.sample_scene(p, rng) if good else wrong(p, rng)))
            ps.append(p)
            truth.append(good)
    got = [jd.score >= 0.5 for jd in tasks.score(j, images, ps)]
    return sum(g == t for g, t in zip(got, truth)) / len(truth)


def test_shapes_judge_reads_renderings_and_reasons():
    rng = random.Random(0)
    for p in W.all_prompts()[::7]:
        s, reason = W.judge(W.render(W.sample_scene(p, rng)), p)
        assert s == 1.0 and reason.startswith("Yes")
        s, reason = W.judge(W.render(SW.wrong_scene(p, rng)), p)
        assert s < 0.5 and reason.startswith("No") and "Reason: " in reason
    s, reason = W.judge(W.render([W.Placed("red", "dot", 0, 2), W.Placed("blue", "block", 2, 0)]),
                        "a red dot left of a blue block")
    assert reason.endswith("the red dot is not left of the blue block.") and 0 < s < 0.5
    # shapes are regions of cells: two touching dots are one bar, and an L of three tiles is no shape at all
    s, reason = W.judge(W.render([W.Placed("red", "dot", 0, 0), W.Placed("red", "dot", 0, 1)]), "two red dots")
    assert reason.endswith("there is no red dot.") and s < 0.5
    assert W.judge(W.render([W.Placed("red", "dot", 0, 0), W.Placed("red", "dot", 0, 1)]), "a red bar")[0] == 1.0
    ell = [W.Placed("green", "bar", 1, 1), W.Placed("green", "dot", 2, 1)]
    assert W.judge(W.render(ell), "a green bar")[1].endswith("there is no green bar.")
    assert "blob" in W.judge(W.render(ell + [W.Placed("green", "bar", 3, 2)]), "a green bar")[1]
    train, test = W.split_prompts(0)
    assert not set(train) & set(test) and len(train) + len(test) == len(W.all_prompts())


def test_a_world_folder_of_minimal_pairs(tmp_path):
    """``pairs``: near miss k is correct scene k % right with one change, and the rule judge rejects it; without
    ``pairs`` the folder is what it always was (the same seed draws the same images)."""
    from PIL import Image, ImageChops

    prompts = W.all_prompts()[::9]
    root = SW.write_world_folder(tmp_path / "pairs", prompts, right=3, wrong=6, empty=1, seed=2, pairs=True)
    changed = []
    for i, p in enumerate(prompts):
        ims = [Image.open(f) for f in sorted((root / f"{i:05d}" / "samples").glob("*.png"))]
        assert len(ims) == 10 and [W.judge(im, p)[0] == 1.0 for im in ims] == [True] * 3 + [False] * 7
        for k, im in enumerate(ims[3:9]):
            good = W.read_scene(ims[k % 3])
            bad = W.read_scene(im)
            # one object changed (recoloured, reshaped, dropped, doubled, added, drawn askew) or the scene mirrored
            kept = len(set(good) & set(bad))
            mirrored = set(bad) == {W.Placed(o.colour, o.shape, o.row, W.GRID - 1 - o.last_col) for o in good}
            assert kept >= len(good) - 1 or mirrored, (p, good, bad)
            changed.append(ImageChops.difference(ims[k % 3], im).getbbox() is not None)
    assert all(changed)
    old = SW.write_world_folder(tmp_path / "plain", prompts[:2], right=2, wrong=2, seed=3)
    rng = random.Random(3)
    for i, p in enumerate(prompts[:2]):
        want = [W.sample_scene(p, rng) for _ in range(2)] + [SW.wrong_scene(p, rng) for _ in range(2)]
        got = [W.read_scene(Image.open(f)) for f in sorted((old / f"{i:05d}" / "samples").glob("*.png"))]
        assert [set(x) for x in got] == [set(W.read_scene(W.render(x))) for x in want]


def test_an_object_drawn_askew_is_a_near_miss():
    """The skewed near miss (``SW._askew``): an object's rows or cells out of line, as a drawing model gets them wrong;
    the judge rejects it, reading a blob for touching pieces or the wrong objects for a diagonal."""
    rng = random.Random(5)
    for shape, want in (("block", "blob"), ("dot", "blob")):
        o = W.Placed("red", shape, 1, 1)
        pieces = SW._askew(o, rng)
        seen = W.read_scene(W.render(pieces))
        assert [x.shape for x in seen] == [want] and seen[0].colour == "red", (shape, seen)
        assert W.judge(W.render(pieces), f"a red {shape}")[0] < 0.5
    bars = {tuple(x.shape for x in W.read_scene(W.render(SW._askew(W.Placed("blue", "bar", 0, 1), random.Random(s)))))
            for s in range(20)}
    assert bars == {("blob",), ("dot", "dot")}  # below: a vertical pair; diagonal: two dots
    kinds = set()
    for seed in range(60):
        r = random.Random(seed)
        good = W.sample_scene("a green block left of a blue dot", r)
        bad = SW.near_miss(good, "a green block left of a blue dot", r)
        if bad is not None:
            kinds |= {x.shape for x in W.read_scene(W.render(bad))}
    assert "blob" in kinds  # near misses now include the askew kind


def test_shapes_reward_spec():
    from janus_r1.errors import JanusR1Error
    from janus_r1.training.rewards import make_reward

    judge = make_reward("shapes:")
    im = W.render([W.Placed("red", "dot", 0, 0)])
    assert judge.score([im, im], ["a red dot", "two red dots"]) == [1.0, pytest.approx(0.45 * 1.5 / 2)]
    with pytest.raises(JanusR1Error, match="no options"):
        make_reward("shapes:bogus")


def _empty(prompt: str, rng: random.Random) -> list:
    return []


def _world_with_empty_negatives(root, prompts: list[str], seed: int):
    """``--folder`` layout: per prompt two correct scenes and two empty canvases (the judge: "there is no ...")."""
    rng = random.Random(seed)
    for i, p in enumerate(prompts):
        d = root / f"{i:05d}" / "samples"
        d.mkdir(parents=True)
        for k, scene in enumerate([W.sample_scene(p, rng), W.sample_scene(p, rng), [], []]):
            W.render(scene).save(d / f"{k:04d}.png")


def test_sft_teaches_the_verdict(tmp_path):
    """build-data (rule judge) -> train-sft Task-II only: on held-out prompts the verdict tells a correct scene from
    an empty canvas (base: chance). Needs the hand-set understanding path (``build_flat_encoder``): with a random
    frozen SigLIP the verdict stays at chance. Near misses (``wrong_scene``) are not learnt in a test-sized run yet
    (issue 23, docs/training.md)."""
    train, heldout = W.split_prompts(0)
    base = _model(tmp_path / "base", encoder=True)
    W.write_prompts(tmp_path / "train.txt", train)
    _world_with_empty_negatives(tmp_path / "world", train, seed=1)
    _cli("build-data", str(tmp_path / "train.txt"), "--out", str(tmp_path / "data"), "--judge", "shapes:",
         "--folder", f"world={tmp_path / 'world'}", "--quiet")
    # a constant 1e-3 (measured: 3e-3 decaying to 3e-4 left the verdict at chance after 120 steps)
    cfg = {"mix": [0.0, 1.0, 0.0], "lr": 1e-3, "warmup_steps": 10, "min_lr": 1e-3, "batch_size": 16,
           "yes_no_weight": 0.8, "judge_history": 0, "weight_decay": 0.0, "num_workers": 0, "log_with": "none",
           "save_every": 100000, "async_save": False}
    (tmp_path / "sft.json").write_text(json.dumps(cfg))
    _cli("train-sft", "--model", str(base), "--data", str(tmp_path / "data" / "world_0.7.jsonl"), "--out",
         str(tmp_path / "sft"), "--config", str(tmp_path / "sft.json"), "--max-steps", "120", "--seed", "0")
    before = _verdict_acc(base, heldout, seed=7, wrong=_empty)
    after = _verdict_acc(tmp_path / "sft" / "final", heldout, seed=7, wrong=_empty)
    assert after >= 0.9 and before <= 0.6, (before, after)


def test_grpo_raises_the_reward(tmp_path):
    """train-grpo --reward shapes: from a random policy, the mean reward of the last steps beats the first steps'."""
    base = _model(tmp_path / "base", seed=1)
    prompts = [p for p in W.all_prompts() if " dot" in p and "left of" not in p]
    W.write_prompts(tmp_path / "prompts.txt", prompts)
    # segments: r1 scores image 1 whatever the verdict (with the trajectory reward a "No" makes r1 cancel, and
    # a random policy's images are bad enough that it learns to say "No" first -- docs/training.md)
    cfg = {"lr": 3e-3, "warmup_steps": 1, "convert_steps": 2, "convert_lr": 3e-3, "min_lr": 3e-3,
           "advantage": "segments", "group_size": 8, "prompts_per_step": 3, "max_rounds": 2, "max_reflection": 4,
           "beta": 0.0,
           "inner_iterations": 2, "weight_decay": 0.0, "log_with": "none", "save_every": 100000,
           "async_save": False}
    (tmp_path / "grpo.json").write_text(json.dumps(cfg))
    steps = 16
    _cli("train-grpo", "--model", str(base), "--prompts", str(tmp_path / "prompts.txt"), "--out",
         str(tmp_path / "grpo"), "--reward", "shapes:", "--config", str(tmp_path / "grpo.json"),
         "--max-steps", str(steps), "--seed", "0")
    log = [json.loads(x) for x in (tmp_path / "grpo" / "log.jsonl").read_text().splitlines()]
    assert len(log) == steps
    # the mean reward (r1 + r2 + r3: image 1, the verdict against the rule judge, the final image) of the last
    # steps beats the first steps' (measured: 1.02 -> 1.22; image 1's own reward 0.16 -> 0.24)
    first = sum(r["reward"] for r in log[:4]) / 4
    last = sum(r["reward"] for r in log[-4:]) / 4
    assert last > first + 0.1, [round(r["reward"], 3) for r in log]
