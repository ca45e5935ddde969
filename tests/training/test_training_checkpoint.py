"""Sharded checkpoints (torch.distributed.checkpoint) in real processes: their content is exactly the full state
the gathered format holds, they resume on another number of processes exactly as that format does, the export
writes a loadable model folder tensor by tensor, and a model folder loads sharded (each rank its rows) into the
same weights as the full load."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

pytest.importorskip("accelerate")

from safetensors.torch import load_file  # noqa: E402
from test_training_distributed import _log, _run  # noqa: E402
from test_training_fsdp import GRPO, SFT, _final  # noqa: E402

from janus_r1.training import dcp_checkpoint as DC  # noqa: E402
from janus_r1.training.cli import main as train_cli  # noqa: E402

STEP1 = "checkpoints/step-00000001"


def _sharded_tensors(ck) -> dict[str, torch.Tensor]:
    specs = DC.tensor_specs(ck)
    return DC.read_full(ck, sorted(specs), specs)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sharded_checkpoint_holds_the_full_state_and_resumes_on_other_world_sizes(tmp_path):
    """2 FSDP processes write each their shard; read back in full the tensors equal the gathered format's; a 2->1
    and a 1->2 resume continue exactly like resuming the gathered checkpoint (the format earlier versions wrote
    and resumed on any world size)."""
    recipe = {**SFT, "max_steps": 2, "sharding": "fsdp"}
    runs = {}
    for fmt in ("sharded", "full"):
        out = tmp_path / f"two-{fmt}"
        p = _run("train-sft", tmp_path, {**recipe, "checkpoint_format": fmt}, out, procs=2,
                 JANUS_R1_KILL_AFTER_STEP="1")
        assert p.returncode != 0 and (out / "checkpoints" / "latest").read_text() == "step-00000001", p.stderr[-2000:]
        runs[fmt] = out
    ck = runs["sharded"] / STEP1
    assert sorted(f.name for f in (ck / "dcp").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert not (ck / "model.safetensors").exists() and (ck / "model" / "config.json").is_file()
    sizes = [(ck / "dcp" / f"__{r}_0.distcp").stat().st_size for r in (0, 1)]
    assert min(sizes) > 0.3 * max(sizes)  # both ranks wrote a share, not rank 0 everything
    got = _sharded_tensors(ck)
    full = runs["full"] / STEP1
    weights = load_file(str(full / "model.safetensors"))
    optim = load_file(str(full / "optimizer.safetensors"))
    assert _same({k.removeprefix(DC.W): v for k, v in got.items() if k.startswith(DC.W)}, weights)
    assert _same({k.removeprefix(DC.OPT): v for k, v in got.items() if k.startswith(DC.OPT)},
                 {k.removeprefix("state."): v for k, v in optim.items()})
    state = json.loads((ck / "state.json").read_text())
    assert state["format"] == "sharded" and state["world"] == 2 and state["step"] == 1
    # 2 -> 1: both formats resumed on one process (grad_accum 2 = the two ranks' draws) end bit-identical
    one = {**recipe, "grad_accum": 2}
    for fmt, out in runs.items():
        p = _run("train-sft", tmp_path, {**one, "checkpoint_format": fmt}, out)
        assert p.returncode == 0 and "resumed from" in p.stderr, p.stderr[-3000:]
    assert _same(_final(runs["sharded"]), _final(runs["full"]))
    assert [r["loss"] for r in _log(runs["sharded"])] == [r["loss"] for r in _log(runs["full"])]
    # 1 -> 2
    ones = {}
    for fmt in ("sharded", "full"):
        out = tmp_path / f"one-{fmt}"
        p = _run("train-sft", tmp_path, {**one, "checkpoint_format": fmt}, out, JANUS_R1_KILL_AFTER_STEP="1")
        assert p.returncode != 0, p.stderr[-2000:]
        p = _run("train-sft", tmp_path, {**recipe, "checkpoint_format": fmt}, out, procs=2)
        assert p.returncode == 0 and "resumed from" in p.stderr, p.stderr[-3000:]
        ones[fmt] = out
    assert _same(_final(ones["sharded"]), _final(ones["full"]))


def test_export_command_writes_a_loadable_folder_from_either_format(tmp_path, capsys, monkeypatch):
    import tempfile

    from janus_r1.model.loading import load_model

    out = tmp_path / "run"
    p = _run("train-sft", tmp_path, {**SFT, "max_steps": 1, "save_every": 1}, out)
    assert p.returncode == 0, p.stderr[-3000:]
    final = _final(out)
    # cut into many files (index + shards), from the run directory (its latest checkpoint)
    assert train_cli(["train-export", str(out), "--out", str(tmp_path / "many"), "--max-shard-gb", "1e-5"]) == 0
    index = json.loads((tmp_path / "many" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 3 and index["weight_map"].keys() == final.keys()
    model, _ = load_model(str(tmp_path / "many"), device="cpu", dtype="fp32")
    assert _same({k: v for k, v in model.state_dict().items() if k in final}, final)
    # the gathered (old) format exports too: config and tokenizer from the base model it names
    old = tmp_path / "old"
    p = _run("train-sft", tmp_path, {**SFT, "max_steps": 1, "checkpoint_format": "full"}, old)
    assert p.returncode == 0, p.stderr[-3000:]
    shutil.rmtree(old / "final")
    scratch = tmp_path / "scratch"  # where the base model's config and tokenizer are written for the export
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert train_cli(["train-export", str(old / STEP1), "--out", str(tmp_path / "from-old")]) == 0
    assert not list(scratch.iterdir()), "the export left its scratch folder behind"
    assert _same(load_file(str(tmp_path / "from-old" / "model.safetensors")),
                 load_file(str(old / STEP1 / "model.safetensors")))
    load_model(str(tmp_path / "from-old"), device="cpu")
    capsys.readouterr()
    assert train_cli(["train-export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "neither a checkpoint directory" in err and not (tmp_path / "x").exists()


@pytest.mark.parametrize("layout", ["transformers", "deepseek"])
def test_sharded_loading_reads_each_ranks_rows_into_the_same_weights(tmp_path, layout):
    """A model folder loaded as a meta skeleton + each rank's rows (and the reference the same way, sharded) trains
    exactly like the full per-rank load: same losses, KL, and bit-identical weights; a run loaded that way and
    killed resumes from its sharded checkpoint into the skeleton bit-identically."""
    from janus_r1.model.tiny_files import write_tiny

    model = write_tiny(tmp_path / f"model-{layout}", layout=layout, shards=2)
    recipe = {**GRPO, "max_steps": 2, "sharding": "fsdp", "micro_batch": 0}
    outs = {}
    for lazy in (True, False):
        out = tmp_path / f"lazy-{lazy}"
        p = _run("train-grpo", tmp_path, {**recipe, "load_sharded": lazy}, out, procs=2, model=str(model))
        assert p.returncode == 0, p.stderr[-3000:]
        outs[lazy] = out
    for a, b in zip(_log(outs[True]), _log(outs[False])):
        assert a["loss"] == b["loss"] and a["kl"] == b["kl"] and a["grad_norm"] == b["grad_norm"]
    assert _same(_final(outs[True]), _final(outs[False]))
    if layout == "deepseek":
        return
    cut = tmp_path / "cut"
    p = _run("train-grpo", tmp_path, recipe, cut, procs=2, model=str(model), JANUS_R1_KILL_AFTER_STEP="1")
    assert p.returncode != 0 and (cut / "checkpoints" / "latest").read_text() == "step-00000001"
    p = _run("train-grpo", tmp_path, recipe, cut, procs=2, model=str(model))
    assert p.returncode == 0 and "resumed from" in p.stderr, p.stderr[-3000:]
    assert _same(_final(cut), _final(outs[True]))
