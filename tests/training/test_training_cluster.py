"""What a real cluster run needs and the CPU can check in one process: the sharded reference of a model folder
is bf16 when the run computes in bf16, the HSDP mesh, gradient sync only on the last micro-batch, the collective
timeout and the judge's retry budget, rollouts in as few decodes as fit."""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from janus_r1.training.config import GRPOConfig, load_config


@contextlib.contextmanager
def one_rank_group():
    """A gloo process group of one rank in this process (FSDP2 and device meshes need one)."""
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = dist.TCPStore("127.0.0.1", port, 1, is_master=True)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("layout", ["deepseek"])
def test_sharded_reference_of_a_model_folder_is_bf16(tmp_path, layout):
    """``materialise.build_reference`` from a model folder on disk (meta skeleton, sharded, each rank its rows):
    bf16 parameters holding the folder's weights cast to bf16 -- not fp32 ones (twice the memory and traffic)."""
    from janus_r1.model.loading import load_model
    from janus_r1.model.tiny_files import write_tiny
    from janus_r1.training import materialise as M

    folder = write_tiny(tmp_path / "model", layout=layout, shards=2)
    cfg = GRPOConfig(model=str(folder), dtype="fp32", mixed_precision="bf16", sharding="fsdp")
    assert M.reference_dtype(cfg) == torch.bfloat16
    skel, _ = M.skeleton(str(folder), torch.bfloat16)
    assert {p.dtype for p in skel.parameters()} == {torch.bfloat16} and all(p.is_meta for p in skel.parameters())
    want = load_model(str(folder), device="cpu", dtype="fp32")[0].state_dict()
    with one_rank_group():
        ref = M.build_reference(cfg, torch.device("cpu"), world=2, sharded_load=True)
        assert ref.sharded
        got = {n: p.full_tensor() if hasattr(p, "full_tensor") else p for n, p in ref.model.named_parameters()}
    assert got and {p.dtype for p in got.values()} == {torch.bfloat16}
    for n, p in got.items():
        assert torch.equal(p, want[n].to(torch.bfloat16)), n
    buffers = dict(ref.model.named_buffers())
    assert all(b.dtype == torch.float32 for n, b in buffers.items() if "inv_freq" in n)  # rotary tables as built


class _Judge(BaseHTTPRequestHandler):
    """An OpenAI-compatible judge that answers every question with P(yes) = 0.7 -- except those about the caption
    ``bad``, answered HTTP 400 (what a misconfigured server says: retrying cannot fix it)."""

    bad = ""

    def do_POST(self):  # noqa: N802
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = req["messages"][0]["content"][-1]["text"]
        if _Judge.bad in text:
            body, code = b'{"error": {"message": "the judge cannot read this caption"}}', 400
        else:
            top = [{"token": "Yes", "logprob": math.log(0.7)}, {"token": "No", "logprob": math.log(0.3)}]
            body, code = json.dumps({"choices": [{"logprobs": {"content": [{**top[0], "top_logprobs": top}]}}]}).encode(), 200
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_a_judge_failing_on_one_rank_stops_every_rank_with_its_message(tmp_path):
    """2 gloo processes, the served judge fails for rank 1's prompt only: both ranks exit (no collective left
    waiting for the process group's timeout), rank 1 with the judge's error, rank 0 with the same message naming
    rank 1; nothing is exported."""
    pytest.importorskip("accelerate")
    from test_training_distributed import _run

    from janus_r1.training.toy import PROMPTS
    from janus_r1.training.trainer import _prompt_batch

    _Judge.bad = _prompt_batch(PROMPTS, 0, 1, 2, 1, 1024)[0]  # slot 1 of step 0: rank 1's prompt
    assert _prompt_batch(PROMPTS, 0, 0, 2, 1, 1024)[0] != _Judge.bad
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        recipe = {"group_size": 2, "max_rounds": 1, "max_reflection": 4, "warmup_steps": 1, "convert_steps": 2,
                  "max_steps": 1, "log_with": "none", "reward_retries": 0,
                  "reward": f"openai:http://127.0.0.1:{srv.server_port}/v1?model=judge"}
        out = tmp_path / "run"
        p = _run("train-grpo", tmp_path, recipe, out, procs=2)
    finally:
        srv.shutdown()
        srv.server_close()
    # the two ranks write to one stderr at the same moment: their lines may run together
    said = "answered HTTP 400: {\"error\": {\"message\": \"the judge cannot read this caption\"}}"
    assert p.returncode != 0 and p.stderr.count(said) == 2, p.stderr[-3000:]
    assert f"error: reward server http://127.0.0.1:{srv.server_port}/v1/chat/completions {said}" in p.stderr
    assert f"error: the judge failed on rank 1: reward server http://127.0.0.1:{srv.server_port}" in p.stderr
    assert not (out / "final").exists()


def test_judge_retry_budget_and_collective_timeout_are_recipe_keys():
    """The served judge stops retrying when the budget is spent (not after its count of tries); the budget must
    end before the collectives' timeout, which the accelerator's process group gets from the recipe."""
    import time
    from datetime import timedelta

    from janus_r1 import JanusR1Error
    from janus_r1.training.served_judge import OpenAIJudge

    judge = OpenAIJudge("http://127.0.0.1:9/v1", model="m", retries=1000, backoff=0.05, timeout=5, budget=0.6)
    t0 = time.monotonic()
    with pytest.raises(JanusR1Error, match=r"127.0.0.1:9/v1/chat/completions failed after \d+ tries .*retry budget"):
        judge._ask_all([([], "x")])
    assert 0.3 < time.monotonic() - t0 < 3
    cfg = load_config(GRPOConfig)
    assert (cfg.collective_timeout_minutes, cfg.reward_budget_minutes) == (60.0, 20.0)
    with pytest.raises(JanusR1Error, match="reward_budget_minutes .* below collective_timeout_minutes"):
        load_config(GRPOConfig, overrides={"reward_budget_minutes": 30, "collective_timeout_minutes": 30})
    pytest.importorskip("accelerate")
    from janus_r1.training.policy import make_accelerator

    acc = make_accelerator(load_config(GRPOConfig, overrides={"collective_timeout_minutes": 90}))
    assert acc.init_handler.timeout == timedelta(minutes=90)


def test_hsdp_on_a_2x2_mesh_matches_one_process(tmp_path):
    """4 gloo processes as 2 replicas x 2 shards (``fsdp_shard_group: 2``, what 2 nodes of 2 GPUs would run), 2
    micro-batches per update (the first skips the all-reduce between replicas): the weights one process
    exports after the same 8 micro-batches."""
    pytest.importorskip("accelerate")
    from test_training_distributed import _log, _run
    from test_training_fsdp import SFT, assert_same_steps

    recipe = {**SFT, "max_steps": 2, "save_every": 2}
    hsdp, single = tmp_path / "hsdp", tmp_path / "single"
    p = _run("train-sft", tmp_path, {**recipe, "sharding": "fsdp", "fsdp_shard_group": 2, "grad_accum": 2}, hsdp,
             procs=4)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((hsdp / "replicas.json").read_text())["mesh"] == [2, 2]
    p = _run("train-sft", tmp_path, {**recipe, "grad_accum": 8}, single)
    assert p.returncode == 0, p.stderr[-3000:]
    assert_same_steps(hsdp, single, "hsdp 2x2")
    for x, y in zip(_log(hsdp), _log(single)):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-3, abs=1e-5)


def test_mesh_shape_and_the_all_reduce_flag_per_micro_batch():
    """``fsdp_shard_group`` g: a 1-D mesh at 0 or g = world, else (world / g, g), an error when g does not divide
    the processes; on a 2-D mesh the replicas' all-reduce is on only for the last micro-batch (a 1-D mesh has
    none to skip)."""
    from janus_r1 import JanusR1Error
    from janus_r1.training import sharding

    assert sharding.mesh_shape(8, 0) == (8,) and sharding.mesh_shape(8, 8) == (8,)
    assert sharding.mesh_shape(32, 8) == (4, 8) and sharding.mesh_shape(4, 2) == (2, 2)
    with pytest.raises(JanusR1Error, match="fsdp_shard_group 3 does not divide the 8 processes"):
        sharding.mesh_shape(8, 3)
    with pytest.raises(JanusR1Error, match="needs sharding: fsdp"):
        load_config(GRPOConfig, overrides={"fsdp_shard_group": 8, "sharding": "zero2"})
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    with one_rank_group():
        for shape in ((1, 1), (1,)):
            model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
            mesh = init_device_mesh("cpu", shape, mesh_dim_names=("replicate", "shard")[-len(shape):])
            fully_shard(model[0], mesh=mesh)
            fully_shard(model, mesh=mesh)
            groups = [m._get_fsdp_state()._fsdp_param_group for m in (model, model[0])]
            flags = []
            for last in (False, False, True):
                sharding.set_gradient_sync(model, last)
                flags.append([g.all_reduce_grads for g in groups])
            assert sharding.mesh_of(model) == list(shape)
            assert flags == ([[False, False], [False, False], [True, True]] if len(shape) == 2 else [[True, True]] * 3)


def test_two_process_fsdp_bf16_param_dtype_matches_one_process(tmp_path):
    """The recipes' precision (fp32 masters, ``mixed_precision: bf16``) under FSDP2 on 2 gloo processes: bf16
    parameters gathered for the rollouts and the forwards, gradients reduced in fp32 -- against one process under
    bf16 autocast doing the same work (``rollout_batches: 2``). The residual stream is bf16 under FSDP's
    param_dtype and fp32 under autocast, so the bound is bf16's: the same rollouts (rewards), the same gradient
    norm within 5 %, an update of the same size and direction (AdamW's eps 1 makes the step proportional to the
    gradient), fp32 weights exported."""
    pytest.importorskip("accelerate")
    from test_training_distributed import _log, _run
    from test_training_fsdp import GRPO, _final

    from janus_r1.model.tiny import build_tiny_model

    recipe = {**GRPO, "max_steps": 1, "mixed_precision": "bf16", "inner_iterations": 1, "lr": 1e-2,
              "convert_lr": 5e-3, "min_lr": 1e-3, "eps": 1.0}
    sharded, single = tmp_path / "fsdp", tmp_path / "single"
    p = _run("train-grpo", tmp_path, {**recipe, "sharding": "fsdp"}, sharded, procs=2)
    assert p.returncode == 0, p.stderr[-3000:]
    p = _run("train-grpo", tmp_path, {**recipe, "rollout_batches": 2}, single)
    assert p.returncode == 0, p.stderr[-3000:]
    [x], [y] = _log(sharded), _log(single)
    assert x["reward"] == pytest.approx(y["reward"], abs=1e-2)
    assert x["grad_norm"] == pytest.approx(y["grad_norm"], rel=0.05)
    a, b = _final(sharded), _final(single)
    start = build_tiny_model("micro", seed=0)[0].state_dict()
    assert a.keys() == b.keys() == start.keys() and all(a[k].dtype == start[k].dtype for k in a)
    da = torch.cat([(a[k] - start[k]).flatten() for k in a if a[k].is_floating_point()])
    db = torch.cat([(b[k] - start[k]).flatten() for k in a if a[k].is_floating_point()])
    cos = float(torch.nn.functional.cosine_similarity(da, db, 0))
    print(f"fsdp bf16 vs one process: update cosine {cos:.4f}, norms {float(da.norm()):.4e} {float(db.norm()):.4e}")
    assert db.norm() > 1e-3 and cos > 0.9 and float(da.norm() / db.norm()) == pytest.approx(1.0, abs=0.05)


def test_rollout_batches_share_one_decode_when_they_fit(monkeypatch):
    """``rollout_batches: 3``: on the CPU (no memory limit) one decode takes all 6 trajectories, seeded by the first
    slot, groups numbered as before; ``rollout_rows`` = one batch decodes each batch by its own slot's seed,
    exactly what separate processes draw; a memory budget from the formula that holds two batches gives 2
    decodes (2 + 1 batches)."""
    from types import SimpleNamespace

    from janus_r1.generation.tasks import Janus
    from janus_r1.model.memory import memory_needed
    from janus_r1.model.tiny import build_tiny_model
    from janus_r1.model.vocabulary import Vocabulary
    from janus_r1.training import grpo as G
    from janus_r1.training import trainer as T
    from janus_r1.training.seeds import derive_seed
    from janus_r1.training.toy import PROMPTS

    model, tok = build_tiny_model("micro", seed=0)
    j = Janus(model.eval(), Vocabulary(tok))
    cfg = GRPOConfig(group_size=2, rollout_batches=3, max_rounds=2, max_reflection=4)
    calls = []
    real = G.rollout
    monkeypatch.setattr(G, "rollout", lambda j_, prompts, c, seed: calls.append((list(prompts), seed))
                        or real(j_, prompts, c, seed))

    def run_of(c):
        acc = SimpleNamespace(num_processes=1, process_index=0, device=torch.device("cpu"))
        return SimpleNamespace(acc=acc, j=j, model=j.model, step=0, full_params=contextlib.nullcontext,
                               rollout_precision=contextlib.nullcontext, log_main=lambda m: None)

    slots = [T._prompt_batch(PROMPTS, 0, k, 3, 1, cfg.seed) for k in range(3)]
    seeds = [derive_seed(cfg.seed, "rollout", 0, k) % 2**62 for k in range(3)]
    merged = T._rollouts(run_of(cfg), cfg, PROMPTS)
    assert calls == [([p for s in slots for p in s], seeds[0])]  # one decode instead of three
    assert [(t.group, t.result.prompt) for t in merged] == [(k, slots[k][0]) for k in range(3) for _ in range(2)]
    calls.clear()
    one = GRPOConfig(group_size=2, rollout_batches=3, max_rounds=2, max_reflection=4, rollout_rows=2)
    apart = T._rollouts(run_of(one), one, PROMPTS)
    assert calls == [(slots[k], seeds[k]) for k in range(3)]
    alone = real(j, slots[1], one, seeds[1])  # batch 1 is what the process of slot 1 draws alone
    assert [a.codes for t in alone for a in t.result.attempts] == \
        [a.codes for t in apart[2:4] for a in t.result.attempts]
    need2 = memory_needed(model, "generate", 4, 2, 4, cfg.max_prompt_tokens)
    assert T.batches_per_decode(model, cfg, need2) == 2 and T.batches_per_decode(model, cfg, need2 - 1) == 1
    assert T.batches_per_decode(model, cfg, None) == 3 and T.batches_per_decode(model, one, None) == 1


def test_a_model_folder_fills_an_hsdp_sharded_skeleton(tmp_path):
    """``materialise.fill`` on parameters sharded over a 2-D (replicate x shard) mesh reads each rank's rows of
    the shard dimension: a model folder's weights, exactly."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from janus_r1.model.loading import load_model
    from janus_r1.model.tiny_files import write_tiny
    from janus_r1.training import materialise as M
    from janus_r1.training.policy import Policy

    folder = write_tiny(tmp_path / "model", layout="transformers")
    want = load_model(str(folder), device="cpu", dtype="fp32")[0].state_dict()
    with one_rank_group():
        model, _ = M.skeleton(str(folder), torch.float32)
        root = Policy(model)
        mesh = init_device_mesh("cpu", (1, 1), mesh_dim_names=("replicate", "shard"))
        for layer in model.model.language_model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(root, mesh=mesh)
        M.fill(root, str(folder), torch.float32, torch.device("cpu"))
        got = {n: p.full_tensor() for n, p in model.named_parameters()}
    assert got.keys() <= want.keys() and len(got) > 10
    assert all(torch.equal(got[n], want[n]) for n in got)
