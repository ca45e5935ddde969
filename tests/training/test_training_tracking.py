"""Run logs and evaluation: log.jsonl continued on resume, TensorBoard scalars (per-task SFT losses, GRPO
statistics), tracker selection errors, the periodic held-out evaluation (GenEval layout, self-score, Yes-rate)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from janus_r1 import JanusR1Error
from janus_r1.training import tracking as TR
from janus_r1.training.evaluation import Evaluator

ROOT = Path(__file__).resolve().parents[2]


def _tb_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_continue_log_drops_steps_after_the_checkpoint(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": s / 10}) + "\n" for s in range(1, 6)) + '{"step": 6, "lo')
    assert TR.continue_log(log, 3) == 3  # steps 4, 5 and the line cut by the kill
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1, 2, 3]
    assert TR.continue_log(log, 3) == 0 and TR.continue_log(tmp_path / "none.jsonl", 3) == 0


def test_tracker_writes_jsonl_and_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    t = TR.Tracker(tmp_path, "sft", {"lr": 1e-3, "mix": (0.2, 0.3, 0.5), "data": ["a.jsonl"]}, 0, "tensorboard")
    for s in (1, 2):
        t.log({"step": s, "loss": 1.0 / s, "loss_t2i": 2.0 / s, "lr": 1e-3, "task": "t2i", "kl": float("nan")})
    t.finish()
    got = _tb_scalars(tmp_path / "tensorboard" / "sft")
    assert got["loss"] == [(1, 1.0), (2, 0.5)] and got["loss_t2i"] == [(1, 2.0), (2, 1.0)] and "kl" not in got
    assert [json.loads(x)["task"] for x in (tmp_path / "log.jsonl").read_text().splitlines()] == ["t2i", "t2i"]
    other_rank = TR.Tracker(tmp_path / "r1", "sft", {}, 0, "tensorboard", main=False)
    other_rank.log({"step": 1, "loss": 1.0})
    assert not (tmp_path / "r1").exists()


def test_tracker_selection():
    from accelerate.utils import is_wandb_available

    assert TR.resolve_trackers("none") == []
    with pytest.raises(JanusR1Error, match="log_with: unknown tracker 'mlflow'"):
        TR.resolve_trackers("tensorboard,mlflow")
    if not is_wandb_available():
        with pytest.raises(JanusR1Error, match="log_with asks for wandb but it is not installed: pip install wandb"):
            TR.resolve_trackers("wandb")


def test_task_losses_and_reward_spread():
    from types import SimpleNamespace

    assert TR.task_losses([1.0, 2.0, 4.0], ["t2i", "judge", "t2i"]) == {"loss_t2i": 2.5, "loss_judge": 2.0}
    trajs = [SimpleNamespace(rewards=r) for r in ([1.0], [3.0], [0.5, 1.5])]
    assert TR.reward_spread(trajs)["reward_std"] == pytest.approx(torch.tensor([1.0, 3.0, 2.0]).std(
        unbiased=False).item())


def _prompts(tmp_path) -> Path:
    p = tmp_path / "heldout.jsonl"
    p.write_text('{"prompt": "a red cat", "tag": "single_object", "include": [{"class": "cat", "count": 1}]}\n'
                 '{"prompt": "two blue chairs", "tag": "counting"}\n{"prompt": "a green apple", "tag": "colors"}\n')
    return p


def test_evaluation_hook_writes_geneval_layout_and_self_scores(micro, tmp_path):
    from janus_r1.batch import read_prompts

    short = {"max_rounds": 2, "max_reflection": 8}
    ev = Evaluator(str(_prompts(tmp_path)), every=5, out=tmp_path / "run", seed=7, max_steps=12, **short)
    assert [ev.due(s) for s in (1, 5, 10, 11, 12)] == [False, True, True, False, True]
    items = read_prompts(ev.write_prompt_file())
    assert [(it.prompt, it.meta) for it in items] == [(it.prompt, it.meta) for it in ev.items]
    rng_before, py_before = torch.get_rng_state(), random.getstate()
    got = ev.run(micro.model, micro.vocab, step=5)
    assert torch.equal(torch.get_rng_state(), rng_before) and random.getstate() == py_before
    target = tmp_path / "run" / "eval" / "step-00000005"
    assert json.loads((target / "summary.json").read_text())["complete"] == 3
    assert json.loads((target / "00000" / "metadata.jsonl").read_text())["include"] == [{"class": "cat", "count": 1}]
    assert all((target / f"{i:05d}" / "samples" / "0000.png").is_file() for i in range(3))
    # independently: the same introspective runs (batch seeds seed + index), scored by the engine itself
    want = [micro.generate(it.prompt, seed=7 + it.index, **short)[0] for it in items]
    first = [r.attempts[0] for r in want]
    assert got["eval_self_score"] == pytest.approx(sum(a.score for a in first) / 3, abs=1e-6)
    assert got["eval_yes_rate"] == pytest.approx(sum(a.verdict == "Yes" for a in first) / 3)
    assert got["eval_regen_rate"] == pytest.approx(sum(len(r.attempts) > 1 for r in want) / 3)


def _train(cmd: str, tmp_path: Path, recipe: dict, data: list[str]) -> subprocess.CompletedProcess:
    cfg = tmp_path / f"{cmd}.json"
    cfg.write_text(json.dumps(recipe))
    env = dict(os.environ, PYTHONPATH=str(ROOT), JANUS_R1_NO_PROGRESS="1", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    args = [sys.executable, "-m", "janus_r1.training", cmd, "--model", "tiny-random", "--out", str(tmp_path / cmd),
            "--config", str(cfg), *data]
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_sft_run_logs_per_task_losses_bad_images_and_evaluation_and_resumes_its_log(tmp_path):
    pytest.importorskip("tensorboard")
    from janus_r1.training.toy import write_toy_t2i

    labels = write_toy_t2i(tmp_path / "data", n_prompts=2)
    (tmp_path / "data" / "p0_3.png").write_bytes(b"broken")  # a negative: found when a step first needs it
    recipe = {"max_steps": 2, "warmup_steps": 1, "batch_size": 4, "save_every": 1, "lr": 1e-3, "num_workers": 1,
              "log_with": "tensorboard", "eval_every": 2, "eval_prompts": str(_prompts(tmp_path)), "mix": [1, 1, 1]}
    p = _train("train-sft", tmp_path, recipe, ["--data", str(labels)])
    assert p.returncode == 0, p.stderr[-3000:]
    out = tmp_path / "train-sft"
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    for r in log:
        assert r[f"loss_{r['task']}"] == pytest.approx(r["loss"])  # one micro-batch: its task's loss is the loss
    assert log[-1]["bad_images"] >= 1 and "skipped a bad image" in p.stderr and "p0_3.png" in p.stderr
    assert {"eval_self_score", "eval_yes_rate", "eval_regen_rate"} <= set(log[1]) and "eval_yes_rate" not in log[0]
    assert (out / "eval" / "prompts.jsonl").is_file() and (out / "eval" / "step-00000002" / "summary.json").is_file()
    tb = _tb_scalars(out / "tensorboard" / "sft")
    assert {"loss", "lr", "grad_norm", f"loss_{log[0]['task']}", "eval_self_score"} <= set(tb)
    # a run that died after logging step 3 but before its checkpoint: resuming continues the log from step 2
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "loss": 99.0}) + "\n")
    p = _train("train-sft", tmp_path, {**recipe, "max_steps": 3, "eval_every": 0}, ["--data", str(labels)])
    assert p.returncode == 0 and "resumed from" in p.stderr, p.stderr[-3000:]
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and log[2]["loss"] != 99.0


def test_grpo_run_logs_its_statistics(tmp_path):
    pytest.importorskip("tensorboard")
    from janus_r1.training.toy import write_toy_prompts

    recipe = {"max_steps": 1, "group_size": 2, "max_rounds": 2, "max_reflection": 4, "warmup_steps": 1,
              "convert_steps": 2, "save_every": 1, "log_with": "tensorboard"}
    p = _train("train-grpo", tmp_path, recipe, ["--prompts", str(write_toy_prompts(tmp_path / "data"))])
    assert p.returncode == 0, p.stderr[-3000:]
    [rec] = [json.loads(x) for x in (tmp_path / "train-grpo" / "log.jsonl").read_text().splitlines()]
    keys = {"reward", "reward_std", "yes_rate", "aha_rate", "kl", "clip_frac", "lr", "grad_norm", "loss"}
    assert keys <= set(rec) and rec["reward_std"] >= 0
    tb = _tb_scalars(tmp_path / "train-grpo" / "tensorboard" / "grpo")
    assert keys - {"aha_rate"} <= set(tb)  # aha_rate is NaN without a second image: not a point


def test_wandb_run_id_is_stored_and_reused_on_resume(tmp_path, monkeypatch):
    """A resumed run passes the stored id to W&B (with resume="allow"): one W&B run, not one per resume."""
    import accelerate.tracking

    started = []

    class FakeWandB:
        def __init__(self, project, **kw):
            started.append(kw)

        def start(self):
            pass

        def store_init_configuration(self, cfg):
            pass

        def finish(self):
            pass

    monkeypatch.setattr(accelerate.tracking, "WandBTracker", FakeWandB)
    monkeypatch.setattr(TR, "resolve_trackers", lambda log_with: ["wandb"])
    out = tmp_path / "run"
    TR.Tracker(out, "grpo", {}, 0, "wandb").finish()
    TR.Tracker(out, "grpo", {}, 5, "wandb").finish()  # the resumed run
    assert len(started) == 2 and started[0]["id"] == started[1]["id"] == (out / "wandb-run-id").read_text()
    assert started[1]["resume"] == "allow" and len(started[0]["id"]) == 16
    other = tmp_path / "other"
    assert TR.wandb_run_id(other) != started[0]["id"]  # another --out, another W&B run
