"""FSDP2 in real processes (gloo, CPU mesh): a 2-process sharded SFT / GRPO run exports the weights a 1-process
run of the same steps exports, and a sharded run killed after a checkpoint resumes bit-identically.

The 1-process run does the same work: SFT with ``grad_accum = 2`` draws the data of slots 0 and 1 (what ranks 0
and 1 draw with ``grad_accum = 1``); GRPO with ``rollout_batches = 2`` rolls out the prompts and seeds of slots 0
and 1. Gradients are averaged the same way (DDP/FSDP mean over ranks == mean over accumulated halves).
"""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("accelerate")

from safetensors.torch import load_file  # noqa: E402
from test_training_distributed import _log, _run  # noqa: E402

from janus_r1.model.tiny import build_tiny_model  # noqa: E402

SFT = {"warmup_steps": 1, "lr": 1e-3, "batch_size": 2, "save_every": 1, "num_workers": 0, "log_with": "none",
       "mix": [0.0, 0.0, 1.0], "gradient_checkpointing": True}  # one task: the task is drawn per micro-step
GRPO = {"group_size": 2, "max_rounds": 2, "max_reflection": 4, "warmup_steps": 1, "convert_steps": 2, "lr": 1e-3,
        "convert_lr": 5e-4, "min_lr": 1e-4, "save_every": 1, "inner_iterations": 2, "micro_batch": 1,
        "log_with": "none", "gradient_checkpointing": True,
        "rollout_rows": 2}  # one rollout batch per decode: 1 process x 2 batches draws what 2 processes draw
CASES = [("train-sft", SFT, "grad_accum"), ("train-grpo", GRPO, "rollout_batches")]


def _final(out):
    return load_file(str(out / "final" / "model.safetensors"))


def assert_same_steps(sharded, single, label: str) -> dict:
    """The exported weights of a 2-process run and of a 1-process run of the same steps agree (bf16 tolerance,
    relative to how far training moved them); returns the 2-process run's weights."""
    a, b = _final(sharded), _final(single)
    start = build_tiny_model("micro", seed=0)[0].state_dict()
    assert a.keys() == b.keys() == start.keys()
    moved = max((b[k] - start[k]).abs().max().item() for k in b)
    differ = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"{label}: largest weight change {moved:.3e}, 2-process vs 1-process difference {differ:.3e}")
    assert moved > 1e-3 and differ < 2e-3 * moved, (moved, differ)
    for k in a:
        assert a[k].dtype == start[k].dtype, k
        assert torch.allclose(a[k], b[k], rtol=4e-3, atol=1e-5), k
    return a


@pytest.mark.parametrize("cmd,recipe,accumulate", CASES)
def test_two_process_fsdp_matches_one_process_and_resumes_exactly(tmp_path, cmd, recipe, accumulate):
    recipe = {**recipe, "max_steps": 3}
    sharded, single, cut = tmp_path / "fsdp", tmp_path / "single", tmp_path / "cut"
    p = _run(cmd, tmp_path, {**recipe, "sharding": "fsdp"}, sharded, procs=2)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((sharded / "replicas.json").read_text())["sharding"] == "fsdp"
    p = _run(cmd, tmp_path, {**recipe, accumulate: 2}, single)
    assert p.returncode == 0, p.stderr[-3000:]
    a = assert_same_steps(sharded, single, f"{cmd} fsdp")
    assert [r["step"] for r in _log(sharded)] == [1, 2, 3]
    for x, y in zip(_log(sharded), _log(single)):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-3, abs=1e-5)
    # killed right after the step-1 checkpoint, resumed on 2 processes: bit-identical to the uninterrupted run
    p = _run(cmd, tmp_path, {**recipe, "sharding": "fsdp"}, cut, procs=2, JANUS_R1_KILL_AFTER_STEP="1")
    assert p.returncode != 0 and (cut / "checkpoints" / "latest").read_text() == "step-00000001"
    p = _run(cmd, tmp_path, {**recipe, "sharding": "fsdp"}, cut, procs=2)
    assert p.returncode == 0 and "resumed from" in p.stderr, p.stderr[-3000:]
    c = _final(cut)
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert [r["step"] for r in _log(cut)] == [1, 2, 3]  # the log continues, no step repeats
    assert [r["loss"] for r in _log(cut)] == [r["loss"] for r in _log(sharded)]
