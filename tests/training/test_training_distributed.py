"""Real processes: a 2-process gloo run of SFT and of GRPO (identical replicas), kill-and-resume is bit-identical,
the exported model loads in the engine and generates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("accelerate")

from safetensors.torch import load_file  # noqa: E402

from janus_r1.training.dcp_checkpoint import checkpoint_weights  # noqa: E402
from janus_r1.training.toy import write_toy_prompts, write_toy_t2i  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SFT_RECIPE = {"warmup_steps": 1, "lr": 1e-3, "batch_size": 2, "save_every": 1}
GRPO_RECIPE = {"group_size": 2, "max_rounds": 2, "max_reflection": 4, "warmup_steps": 1, "convert_steps": 2,
               "lr": 1e-3, "convert_lr": 5e-4, "min_lr": 1e-4, "save_every": 1, "inner_iterations": 2}


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JANUS_R1_NO_PROGRESS="1", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    env.update(extra)
    return env


def _run(cmd, tmp_path, recipe, out, procs=1, model="tiny-random", **env):
    cfg = tmp_path / f"{cmd}.json"
    cfg.write_text(json.dumps(recipe))
    launcher = [sys.executable, "-m", "janus_r1.training"]
    if procs > 1:  # on CPU, accelerate's --multi_gpu launcher starts torchrun; the trainer then selects gloo
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(procs),
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                    "0", "-m", "janus_r1.training"]
    data = (["--data", str(write_toy_t2i(tmp_path / "data", n_prompts=2))] if cmd == "train-sft"
            else ["--prompts", str(write_toy_prompts(tmp_path / "data"))])
    args = launcher + [cmd, "--model", model, "--out", str(out), "--config", str(cfg), *data, "--max-steps",
                       str(recipe["max_steps"])]
    return subprocess.run(args, cwd=ROOT, env=_env(**env), capture_output=True, text=True, timeout=240)


def _log(out):
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("cmd,recipe", [("train-sft", SFT_RECIPE), ("train-grpo", GRPO_RECIPE)])
def test_two_process_gloo_run_keeps_replicas_identical(tmp_path, cmd, recipe):
    out = tmp_path / "run"
    p = _run(cmd, tmp_path, {**recipe, "max_steps": 2}, out, procs=2)
    assert p.returncode == 0, p.stderr[-3000:]
    rep = json.loads((out / "replicas.json").read_text())
    assert len(rep["digests"]) == 2 and rep["in_sync"], rep
    log = _log(out)
    assert [r["step"] for r in log] == [1, 2] and all(r["grad_norm"] > 0 for r in log[1:])
    final = checkpoint_weights(out / "checkpoints" / "step-00000002")
    assert any(not torch.equal(v, final[k]) for k, v in
               checkpoint_weights(out / "checkpoints" / "step-00000001").items())


@pytest.mark.parametrize("cmd,recipe", [("train-sft", SFT_RECIPE), ("train-grpo", GRPO_RECIPE)])
def test_killed_and_resumed_run_is_bit_identical(tmp_path, cmd, recipe):
    recipe = {**recipe, "max_steps": 3}
    full, cut = tmp_path / "full", tmp_path / "cut"
    p = _run(cmd, tmp_path, recipe, full)
    assert p.returncode == 0, p.stderr[-3000:]
    p = _run(cmd, tmp_path, recipe, cut, JANUS_R1_KILL_AFTER_STEP="1")
    assert p.returncode == -9, p.stderr[-3000:]  # SIGKILL right after the step-1 checkpoint
    assert (cut / "checkpoints" / "latest").read_text() == "step-00000001" and not (cut / "final").exists()
    p = _run(cmd, tmp_path, recipe, cut)
    assert p.returncode == 0 and "resumed from" in p.stderr, p.stderr[-3000:]
    a = load_file(str(full / "final" / "model.safetensors"))
    b = load_file(str(cut / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in _log(full)] == [r["loss"] for r in _log(cut)][-3:]
    if cmd == "train-grpo":
        from janus_r1.api import JanusR1
        from janus_r1.model.loading import load_model

        model, vocab = load_model(str(full / "final"), device="cpu")
        state = model.state_dict()
        ck = checkpoint_weights(full / "checkpoints" / "step-00000003")
        assert all(torch.equal(state[k], ck[k]) for k in ck)
        [res] = JanusR1(model, vocab).generate("a red cat", max_rounds=2, seed=0, max_reflection=4)
        assert res.image.size == (64, 64) and res.attempts[0].judgement is not None


@pytest.mark.parametrize("cmd,recipe", [("train-sft", SFT_RECIPE), ("train-grpo", GRPO_RECIPE)])
def test_a_frozen_aligner_stays_as_loaded_while_the_rest_trains(tmp_path, cmd, recipe):
    out = tmp_path / "run"
    p = _run(cmd, tmp_path, {**recipe, "max_steps": 2, "freeze": ["aligner"]}, out)
    assert p.returncode == 0, p.stderr[-3000:]
    one = checkpoint_weights(out / "checkpoints" / "step-00000001")
    two = checkpoint_weights(out / "checkpoints" / "step-00000002")
    aligner = [k for k in one if "aligner" in k and "generation_aligner" not in k]
    assert aligner and all(torch.equal(one[k], two[k]) for k in aligner)
    assert any(not torch.equal(one[k], two[k]) for k in one if "language_model" in k)


def test_freezing_an_unknown_part_is_one_clear_error():
    from janus_r1.errors import JanusR1Error
    from janus_r1.training.config import SFTConfig, load_config

    with pytest.raises(JanusR1Error, match="freeze is a list of parts among aligner, generation_aligner"):
        load_config(SFTConfig, None, {"freeze": ["vision_model"]})
    assert load_config(SFTConfig, None, {"freeze": ["aligner", "generation_head"]}).freeze == (
        "aligner", "generation_head")


def test_the_freeze_flag_reaches_both_configs(tmp_path, monkeypatch):
    from janus_r1.cli import main
    from janus_r1.training import trainer

    seen = []
    monkeypatch.setattr(trainer, "train_sft", lambda cfg: seen.append(cfg) or tmp_path)
    monkeypatch.setattr(trainer, "train_grpo", lambda cfg: seen.append(cfg) or tmp_path)
    assert main(["train-sft", "--model", "m", "--data", "d.jsonl", "--out", str(tmp_path), "--freeze", "aligner"]) == 0
    assert main(["train-grpo", "--model", "m", "--prompts", "p.txt", "--out", str(tmp_path), "--freeze", "aligner",
                 "generation_head"]) == 0
    assert [c.freeze for c in seen] == [("aligner",), ("aligner", "generation_head")]
