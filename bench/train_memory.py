"""Host memory and checkpoint cost of a sharded training run, before and after issue 18, in one run.

Two real processes over gloo train GRPO (two steps, a checkpoint after each) on a random model with Janus-Pro's
layer structure (LLaMA decoder, SigLIP, VQ; ~0.5 B parameters by default -- 16 layers of width 1536 -- so that
memory is visible on a CPU machine), under FSDP2 and under DeepSpeed ZeRO-3, twice each:

* before: every rank loads the full fp32 model, the reference is an unsharded copy, checkpoints gather the full
  weights and AdamW state on rank 0 into safetensors (``load_sharded: false``, ``checkpoint_format: full``);
* after: meta skeleton + each rank's rows (ZeRO-3: each tensor partitioned as it is read), a sharded reference,
  sharded asynchronous DCP checkpoints.

ZeRO-3 also gathers differently. Before, the whole policy was one ZeRO-3 leaf, gathered for every forward and
backward. That path is gone, and "before" reproduces its peak by keeping every weight gathered
(``zero3_persist_numel`` above the model's size). After, each module is gathered when it runs, with at most
``zero3_live_numel`` elements kept for prefetch and reuse; the bench scales that to the model as DeepSpeed's
default scales to 7B (1e9 of 7.4e9 elements: 13.5 %).

Each rank records its peak RSS per phase (``JANUS_R1_MEMORY_TRACE``, training/memtrace.py): loading the policy,
building the reference, a training step, a checkpoint. Checkpoint cost: the time the step was blocked, the time
until the shard was on disk, and the bytes each rank wrote. Prints one table and the after/before ratios.

    python bench/train_memory.py --engines fsdp              # 0.52 B: ~10 min on 2 CPU cores, peaks ~13 GiB (rank 0)
    python bench/train_memory.py --engines zero3 --layers 6  # 0.23 B: ZeRO-3 "before" at 0.52 B needs > 24 GiB

Without ``--engines`` both engines run; ZeRO-3's old path (a full fp32 copy per rank, then DeepSpeed's bf16 module,
masters and states) does not fit two ranks of 0.52 B in 24 GiB, hence ``--layers 6`` for it on such a machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_model(path: Path, layers: int, hidden: int, vocab: int) -> int:
    """A random Janus model (micro vision / VQ, a LLaMA decoder of the given size) saved in bf16 (as released)."""
    import torch
    from transformers import JanusForConditionalGeneration

    from janus_r1.model.tiny import build_tiny_tokenizer, randomize_, tiny_config

    tok = build_tiny_tokenizer()
    cfg = tiny_config("micro", vocab_size=vocab, image_token_id=tok.convert_tokens_to_ids("<image_placeholder>"))
    t = cfg.text_config
    t.hidden_size, t.intermediate_size, t.num_hidden_layers = hidden, int(hidden * 2.6875), layers
    t.num_attention_heads = t.num_key_value_heads = max(hidden // 64, 1)
    t.head_dim = hidden // t.num_attention_heads
    cfg.vision_config.projection_dim = cfg.vq_config.projection_dim = cfg.vq_config.image_token_embed_dim = hidden
    model = randomize_(JanusForConditionalGeneration(cfg)).to(torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return n


LIVE_SHARE_7B = 1e9 / 7.4e9  # DeepSpeed's stage3_max_live_parameters over Janus-Pro-7B's parameters


def zero3_keys(after: bool, n: int) -> dict:
    """ZeRO-3's gathering before (every weight kept gathered: the old one-leaf peak) and after (per module)."""
    return {"zero3_live_numel": int(n * LIVE_SHARE_7B)} if after else {"zero3_persist_numel": 2**62}


def run(work: Path, model: Path, engine: str, after: bool, steps: int, n: int) -> dict:
    from janus_r1.training.toy import write_toy_prompts

    name = f"{engine}-{'after' if after else 'before'}"
    out, trace = work / name, work / f"{name}-trace"
    recipe = {"group_size": 2, "max_rounds": 2, "max_reflection": 4, "warmup_steps": 1, "convert_steps": 2,
              "save_every": 1, "inner_iterations": 1, "micro_batch": 1, "log_with": "none", "sharding": engine,
              "mixed_precision": "bf16", "gradient_checkpointing": True, "max_steps": steps, "keep_checkpoints": 1,
              "load_sharded": after, "checkpoint_format": "sharded" if after else "full",
              **(zero3_keys(after, n) if engine == "zero3" else {})}
    cfg = work / f"{name}.json"
    cfg.write_text(json.dumps(recipe))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           "-m", "janus_r1.training", "train-grpo", "--model", str(model), "--out", str(out), "--config", str(cfg),
           "--prompts", str(write_toy_prompts(work / "data"))]
    env = dict(os.environ, PYTHONPATH=str(ROOT), JANUS_R1_NO_PROGRESS="1", OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", JANUS_R1_MEMORY_TRACE=str(trace))
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{name} failed:\n{p.stderr[-4000:]}")
    res = {"wall": time.perf_counter() - t0, "ranks": {}}
    for r in (0, 1):
        recs = [json.loads(x) for x in (trace / f"rank{r}.jsonl").read_text().splitlines()]
        peaks: dict = {}
        growth: dict = {}  # the phase's own cost: its peak above the resident set at its start
        blocked = []
        prev = None
        for rec in recs:
            if rec["phase"] == "checkpoint-written":
                continue
            ph = "train" if rec["phase"] == "rollout" else rec["phase"]  # a GRPO step's rollout is its own mark
            peaks[ph] = max(peaks.get(ph, 0), rec["peak_rss"])
            if prev is not None:
                growth[ph] = max(growth.get(ph, 0), rec["peak_rss"] - prev["rss"])
            if ph == "checkpoint":
                blocked.append(rec["time"] - prev["time"])
            prev = rec
        written = [x for x in recs if x["phase"] == "checkpoint-written"]
        res["ranks"][r] = {"peaks": peaks, "growth": growth, "blocked": blocked, "write_s": [x["seconds"] for x in written],
                           "bytes": [x["bytes"] for x in written]}
    if not after:  # the gathered format: rank 0 writes model + optimizer, every rank its RNG file
        ck = next((out / "checkpoints").glob("step-*"))
        big = sum(f.stat().st_size for f in ck.iterdir() if f.name in ("model.safetensors", "optimizer.safetensors"))
        res["ranks"][0]["bytes"] = [big]
        res["ranks"][1]["bytes"] = [0]
    return res


def gib(x: float) -> str:
    return f"{x / 2**30:5.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=1536)
    ap.add_argument("--vocab", type=int, default=16384)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--engines", nargs="+", default=["fsdp", "zero3"])
    ap.add_argument("--work", default=None, help="keep the runs here (default: a temporary directory)")
    args = ap.parse_args()
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
        measure(args, Path(args.work))
    else:  # the runs' checkpoints take ~17 GB at the default size: removed afterwards
        with tempfile.TemporaryDirectory(prefix="janus-r1-train-memory-") as tmp:
            measure(args, Path(tmp))


def measure(args, work: Path) -> None:
    n = write_model(work / "model", args.layers, args.hidden, args.vocab)
    print(f"model: {n / 1e9:.3f} B parameters (fp32 state {gib(4 * n)} GiB, AdamW {gib(8 * n)} GiB); 2 processes, "
          f"gloo, GRPO {args.steps} steps, a checkpoint after each")
    phases = ["load", "reference", "train", "checkpoint", "export"]
    print("peak RSS GiB per phase (growth over the resident set at the phase's start in brackets)")
    print(f"{'run':14s} {'rank':>4s} " + " ".join(f"{p[:10]:>13s}" for p in phases)
          + f" {'ck block s':>10s} {'ck write s':>10s} {'ck GiB':>7s}")
    results = {}
    for engine in args.engines:
        for after in (False, True):
            res = results[(engine, after)] = run(work, work / "model", engine, after, args.steps, n)
            for r, d in res["ranks"].items():
                blocked = max(d["blocked"]) if d["blocked"] else 0.0
                write = max(d["write_s"]) if d["write_s"] else blocked
                print(f"{engine + ('-after' if after else '-before'):14s} {r:4d} "
                      + " ".join(f"{gib(d['peaks'].get(p, 0))} ({gib(d['growth'].get(p, 0)).strip()})".rjust(13)
                                 for p in phases)
                      + f" {blocked:10.2f} {write:10.2f} {gib(max(d['bytes'] or [0])):>7s}")
    print("\nafter / before (max over ranks):")
    for engine in args.engines:
        b, a = results[(engine, False)]["ranks"], results[(engine, True)]["ranks"]
        for p in phases[:4]:
            pb = max(b[r]["peaks"].get(p, 0) for r in b)
            pa = max(a[r]["peaks"].get(p, 0) for r in a)
            gb = max(b[r]["growth"].get(p, 0) for r in b)
            ga = max(a[r]["growth"].get(p, 0) for r in a)
            print(f"  {engine:6s} {p:10s} peak RSS {gib(pa)} / {gib(pb)} GiB = {pa / max(pb, 1):.2f}; its growth "
                  f"{gib(ga)} / {gib(gb)} GiB = {ga / max(gb, 1):.2f}")
        bb = max(max(b[r]["bytes"] or [0]) for r in b)
        ba = max(max(a[r]["bytes"] or [0]) for r in a)
        print(f"  {engine:6s} most bytes one rank writes per checkpoint: {gib(ba)} / {gib(bb)} GiB = {ba / bb:.2f}")
    print(f"(runs kept in {work})" if args.work else "")


if __name__ == "__main__":
    main()
