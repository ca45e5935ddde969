"""DeepSpeed ZeRO-2 / ZeRO-3 in real processes (gloo, DeepSpeed's CPU accelerator): a 2-process run exports the
weights a 1-process run of the same steps exports, a run killed after a checkpoint resumes bit-identically, and
its checkpoints are the engine-neutral sharded checkpoints every engine reads (no DeepSpeed pickle is written or
loaded; each rank writes the weights it owns).

Set up as in test_training_fsdp.py: the 1-process run (the same engine on a one-member process group) accumulates
what the two ranks draw; with ``mixed_precision: no`` ZeRO computes in fp32, so the two agree to fp32 round-off.
The reference is DeepSpeed on one process, not the plain trainer: ZeRO steps AdamW on flat buffers, so a weight
that got no gradient in a step (the text head during an image-only SFT task) still decays, where torch's AdamW
skips it (the plain trainer and FSDP2); the losses and gradient norms are the same either way.
"""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("accelerate")
pytest.importorskip("deepspeed")

from test_training_distributed import _log, _run  # noqa: E402
from test_training_fsdp import GRPO, SFT, _final, assert_same_steps  # noqa: E402

from janus_r1.model.tiny import build_tiny_model  # noqa: E402
from janus_r1.training import dcp_checkpoint as DC  # noqa: E402

CASES = [("train-sft", SFT, "grad_accum"), ("train-grpo", GRPO, "rollout_batches")]


def _engine(stage: str) -> dict:
    """The recipe keys of an engine; ZeRO-3 partitions every weight (the tiny model's are all below DeepSpeed's
    persistence threshold), so each module is really gathered when it runs."""
    return {"sharding": stage, **({"zero3_persist_numel": 0} if stage == "zero3" else {})}


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
@pytest.mark.parametrize("cmd,recipe,accumulate", CASES)
def test_two_process_zero_matches_one_process_and_resumes_exactly(tmp_path, cmd, recipe, accumulate, stage):
    recipe = {**recipe, "max_steps": 3}
    sharded, single, cut = tmp_path / stage, tmp_path / "single", tmp_path / "cut"
    p = _run(cmd, tmp_path, {**recipe, **_engine(stage)}, sharded, procs=2)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((sharded / "replicas.json").read_text())["sharding"] == stage
    assert not list(sharded.rglob("*.pt")) and not list(sharded.rglob("*.bin"))  # nothing pickled
    p = _run(cmd, tmp_path, {**recipe, accumulate: 2, **_engine(stage)}, single)
    assert p.returncode == 0, p.stderr[-3000:]
    a = assert_same_steps(sharded, single, f"{cmd} {stage}")
    assert [r["step"] for r in _log(sharded)] == [1, 2, 3]
    plain = tmp_path / "plain"
    assert _run(cmd, tmp_path, {**recipe, accumulate: 2}, plain).returncode == 0
    for x, y, z in zip(_log(sharded), _log(single), _log(plain)):
        assert y["loss"] == pytest.approx(z["loss"], rel=1e-5)
        assert y["grad_norm"] == pytest.approx(z["grad_norm"], rel=1e-5)  # fp32 sums reduced in another order
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-3, abs=1e-5)
        assert x["grad_norm"] == pytest.approx(y["grad_norm"], rel=1e-3, abs=1e-5)
    ck = sharded / "checkpoints" / "step-00000003"
    specs = DC.tensor_specs(ck)  # a sharded checkpoint: each rank wrote its share of the weights and AdamW states
    opt = DC.read_full(ck, [k for k in specs if k.startswith(DC.OPT)], specs)
    assert opt and all(torch.isfinite(v).all() for v in opt.values())
    assert all((ck / "dcp" / f"__{r}_0.distcp").stat().st_size > 0 for r in (0, 1))
    # killed right after the step-2 checkpoint (step 3 has another learning rate), resumed on 2 processes:
    # bit-identical to the uninterrupted run
    p = _run(cmd, tmp_path, {**recipe, **_engine(stage)}, cut, procs=2, JANUS_R1_KILL_AFTER_STEP="2")
    assert p.returncode != 0 and (cut / "checkpoints" / "latest").read_text() == "step-00000002"
    p = _run(cmd, tmp_path, {**recipe, **_engine(stage)}, cut, procs=2)
    assert p.returncode == 0 and "resumed from" in p.stderr, p.stderr[-3000:]
    c = _final(cut)
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert [r["step"] for r in _log(cut)] == [1, 2, 3]
    assert [r["loss"] for r in _log(cut)] == [r["loss"] for r in _log(sharded)]


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_bf16_zero_keeps_fp32_masters_and_exact_frozen_weights(tmp_path, stage):
    """DeepSpeed's bf16 mode rounds the module (frozen SigLIP / VQ included) to bf16: the export still holds the
    fp32 masters of the trained weights (not bf16-representable after an update) and the exact frozen ones."""
    out = tmp_path / "run"
    recipe = {**SFT, "max_steps": 2, "mixed_precision": "bf16", **_engine(stage), "lr": 2e-4}
    p = _run("train-sft", tmp_path, recipe, out, procs=2)
    assert p.returncode == 0, p.stderr[-3000:]
    final, start = _final(out), build_tiny_model("micro", seed=0)[0].state_dict()
    frozen = [k for k in start if k.startswith(("model.vision_model.", "model.vqmodel."))]
    assert frozen and all(torch.equal(final[k], start[k]) for k in frozen)
    trained = [k for k in start if k.startswith("model.language_model.layers.") and k.endswith("proj.weight")]
    moved = [k for k in trained if not torch.equal(final[k], start[k])]
    assert len(moved) == len(trained), "every projection of the decoder moved"
    for k in moved:  # fp32 masters: the update is not rounded to bf16
        assert final[k].dtype == torch.float32
        assert not torch.equal(final[k], final[k].to(torch.bfloat16).float()), k
    assert all(r["loss"] == r["loss"] for r in _log(out))  # finite


def test_a_zero3_checkpoint_resumes_under_fsdp(tmp_path):
    """One checkpoint format for every engine: a ZeRO-3 run killed after step 1 continues under FSDP2, with its
    optimizer state (the first resumed step's loss is the uninterrupted ZeRO-3 run's)."""
    recipe = {**SFT, "max_steps": 2}
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert _run("train-sft", tmp_path, {**recipe, **_engine("zero3")}, full, procs=2).returncode == 0
    p = _run("train-sft", tmp_path, {**recipe, **_engine("zero3")}, cut, procs=2, JANUS_R1_KILL_AFTER_STEP="1")
    assert p.returncode != 0 and (cut / "checkpoints" / "latest").read_text() == "step-00000001"
    p = _run("train-sft", tmp_path, {**recipe, "sharding": "fsdp"}, cut, procs=2)
    assert p.returncode == 0 and "resumed from" in p.stderr, p.stderr[-3000:]
    assert [r["step"] for r in _log(cut)] == [1, 2]
    assert _log(cut)[1]["loss"] == pytest.approx(_log(full)[1]["loss"], rel=1e-5)
    a, c = _final(full), _final(cut)  # weights with a gradient agree (ZeRO also decays those without one)
    layers = [k for k in a if k.startswith("model.language_model.layers.")]
    assert layers and max((a[k] - c[k]).abs().max().item() for k in layers) < 1e-6



def test_zero3_loads_partitioned_into_the_same_weights_and_resumes_exactly(tmp_path):
    """ZeRO-3 with ``load_sharded`` (zero_load.py: a meta skeleton, each tensor partitioned as it is read, here from
    a 2-file DeepSeek-layout folder converted per tensor) trains exactly like the full per-rank load: same losses,
    KL, grad norms and bit-identical exported weights (frozen encoders included). A run loaded that way and killed
    after a checkpoint resumes from its sharded checkpoint bit-identically on 1 process (on 2: the tiny-random
    cases of the first test, which load the same way)."""
    from janus_r1.model.tiny_files import write_tiny

    model = str(write_tiny(tmp_path / "model", layout="deepseek", shards=2))
    recipe = {**GRPO, "max_steps": 2, **_engine("zero3"), "micro_batch": 0}
    outs = {}
    for lazy in (True, False):
        out = outs[lazy] = tmp_path / f"lazy-{lazy}"
        p = _run("train-grpo", tmp_path, {**recipe, "load_sharded": lazy}, out, procs=2, model=model)
        assert p.returncode == 0, p.stderr[-3000:]
        assert ("loaded partitioned over 2 process(es)" in p.stderr) == lazy  # the path under test ran (or not)
    for a, b in zip(_log(outs[True]), _log(outs[False]), strict=True):
        assert a["loss"] == b["loss"] and a["kl"] == b["kl"] and a["grad_norm"] == b["grad_norm"]
    a, b = _final(outs[True]), _final(outs[False])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    full, cut = tmp_path / "full-1", tmp_path / "cut-1"
    assert _run("train-grpo", tmp_path, recipe, full, model=model).returncode == 0
    p = _run("train-grpo", tmp_path, recipe, cut, model=model, JANUS_R1_KILL_AFTER_STEP="1")
    assert p.returncode != 0 and (cut / "checkpoints" / "latest").read_text() == "step-00000001"
    p = _run("train-grpo", tmp_path, recipe, cut, model=model)
    assert p.returncode == 0 and "resumed from" in p.stderr, p.stderr[-3000:]
    assert "checkpoints/step-00000001 loaded partitioned over 1 process(es)" in p.stderr  # from the checkpoint
    c, f = _final(cut), _final(full)
    assert c.keys() == f.keys() and all(torch.equal(c[k], f[k]) for k in c)
    assert [r["loss"] for r in _log(cut)] == [r["loss"] for r in _log(full)]


def test_zero3_gathers_one_module_at_a_time(tmp_path):
    """ZeRO-3 no longer gathers the policy as one leaf: with every weight partitioned and nothing kept for reuse
    (``zero3_persist_numel: 0``, ``zero3_live_numel: 0``), no weight is gathered when a decoder layer starts its
    forward, and only that layer's q_proj while its gradient is computed -- in the first update (DeepSpeed records
    the module order) and in the second (it follows it). Reading a weight's device or dtype inside the forward
    gathers nothing (``context.first_param``). The dummy calls that keep the module sequence the same on every
    rank change nothing: the loss is the plain model's."""
    import subprocess
    import sys
    from pathlib import Path

    from test_training_distributed import _env

    script = Path(__file__).with_name("zero3_gathering.py")
    p = subprocess.run([sys.executable, str(script)], env=_env(), capture_output=True, text=True, timeout=240,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["losses"][0] == pytest.approx(r["plain"], rel=1e-6) and r["losses"][1] != r["losses"][0]
    layers = sorted({k for _, k, _ in r["events"]})
    assert len(layers) >= 2 and len(r["events"]) == 2 * 2 * len(layers)  # 2 updates x (forward, backward)
    for kind, k, live in r["events"]:
        if kind == "forward":
            assert live == [], (k, live)
        else:
            assert live == [f"model.language_model.layers.{k}.self_attn.q_proj.weight"], (k, live)
    total = sum(r["numel"].values())
    assert r["numel"]["model.language_model.layers.0.self_attn.q_proj.weight"] < total / 50
