"""One-command training smoke for the first lent GPU(s): the real trainer, as a user runs it, on a random model
folder of a real geometry -- SFT steps, 2 GRPO steps, the checkpoint, a resume -- with seconds and peak memory per
phase, printed as ONE JSON line (progress on stderr).

    python bench/train_step.py                                   # one GPU: 1B, fp32 masters + bf16 compute
    python bench/train_step.py --device cpu --geometry micro     # the same on the CPU (G 2, 8 reflection tokens)
    bash bench/first_node.sh                                     # 8 GPUs: 7B, FSDP2, NCCL, resume on 4

What runs: ``janus-r1 train-sft`` with ``recipes/sft_t2i.yaml`` and ``janus-r1 train-grpo`` with
``recipes/grpo_t2i.yaml`` (precision, sharding, checkpointing, G, T, micro-batches as shipped) on a model folder
written once under ``--work`` (random weights: Janus-Pro-1B's / -7B's geometry in transformers' layout, or the micro
test model); the few overrides a smoke needs: the step counts, the toy data of ``training/toy.py``, the ``self``
judge (no judge server), one prompt per process. Then ``train-grpo`` again with one more step on
``--resume-procs`` processes: it must resume from the step-``--grpo-steps`` checkpoint (sharded checkpoints
resume on another number of processes) and log only the new step.

Per run and phase (the trainer's own marks, ``JANUS_R1_MEMORY_TRACE``, rank 0): seconds, peak GPU memory (the CUDA
allocator's) and peak host RSS. Phases: ``startup`` (imports, process group), ``load`` (policy), ``reference``,
``rollout`` and ``train`` (scoring + update; SFT: the step) per step, ``checkpoint`` (what the step waits for),
``export``. Exit status 0 when every run finished and the resume resumed, else 1 (the JSON says why).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "janus_r1" / "training" / "recipes"


def log(msg: str) -> None:
    print(f"[train_step] {msg}", file=sys.stderr, flush=True)


def write_model(geometry: str, path: Path) -> Path:
    """A random model folder (reused when present): the micro test model, or Janus-Pro-1B / -7B's geometry."""
    if (path / "config.json").is_file():
        return path
    if geometry in ("micro", "real"):
        from janus_r1.model.tiny_files import write_tiny

        return write_tiny(path, layout="transformers", geometry=geometry)
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from device_figures import random_model

    model, tok = random_model(geometry, torch.device("cpu"), torch.bfloat16)
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    tmp.rename(path)
    return path


def recipe(name: str, **over) -> dict:
    import yaml

    return {**yaml.safe_load((RECIPES / name).read_text()), **over}


def launch(cmd: str, cfg: dict, work: Path, name: str, model: Path, data: list[str], procs: int, device: str,
           timeout: float) -> dict:
    """One trainer run (``procs`` processes through accelerate's launcher when > 1); its trace and log."""
    out, trace = work / "runs" / cmd, work / "trace" / name
    shutil.rmtree(trace, ignore_errors=True)
    (work / "cfg").mkdir(parents=True, exist_ok=True)
    path = work / "cfg" / f"{name}.json"
    path.write_text(json.dumps(cfg))
    launcher = [sys.executable, "-m", "janus_r1.training"]
    if procs > 1:  # NCCL on GPUs; on CPUs the trainer selects gloo
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(procs),
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                    "--main_process_port", "0", "-m", "janus_r1.training"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               JANUS_R1_NO_PROGRESS="1", JANUS_R1_MEMORY_TRACE=str(trace), HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    args = launcher + [cmd, "--model", str(model), "--out", str(out), "--config", str(path), *data]
    log(f"{name}: {procs} process(es): {' '.join(args[-8:])}")
    t0 = time.time()
    try:
        p = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        rc, err = p.returncode, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, err = 124, (e.stderr or b"").decode("utf-8", "replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
    wall = time.time() - t0
    res: dict = {"procs": procs, "wall_s": round(wall, 2), "rc": rc, "phases": phases(trace, t0)}
    logf = out / "log.jsonl"
    res["steps"] = [json.loads(x)["step"] for x in logf.read_text().splitlines()] if logf.is_file() else []
    res["resumed"] = "resumed from" in err
    if rc != 0:
        res["error"] = err[-2000:]
    log(f"{name}: rc {rc} in {wall:.1f} s")
    return res


def phases(trace: Path, t0: float) -> dict:
    """Rank 0's marks -> {phase: seconds, peak GPU GiB, peak RSS GiB}; repeated phases (steps) as lists."""
    f = trace / "rank0.jsonl"
    if not f.is_file():
        return {}
    out: dict = {}
    prev = t0
    for i, rec in enumerate(json.loads(x) for x in f.read_text().splitlines()):
        if rec["phase"] == "checkpoint-written":  # the background write's own record, not a phase of the step
            out.setdefault("checkpoint_written_s", []).append(round(rec.get("seconds", 0.0), 2))
            continue
        name = "startup" if i == 0 and rec["phase"] == "start" else rec["phase"]
        gpu = rec.get("peak_gpu")
        fig = {"s": round(rec["time"] - prev, 3), "peak_gpu_gib": None if gpu is None else round(gpu / 2**30, 2),
               "peak_rss_gib": round(rec["peak_rss"] / 2**30, 2)}
        prev = rec["time"]
        if name in ("rollout", "train", "checkpoint"):
            out.setdefault(name, []).append(fig)
        else:
            out[name] = fig
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--geometry", default="1b", choices=["1b", "7b", "micro", "real"],
                   help="1b: fits one card with fp32 masters; 7b: FSDP over 8 (first_node.sh); micro: the CPU")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--procs", type=int, default=1, help="processes (GPUs) of the SFT and GRPO runs")
    p.add_argument("--resume-procs", type=int, default=None, help="processes of the resumed run (default --procs)")
    p.add_argument("--sft-steps", type=int, default=2)
    p.add_argument("--grpo-steps", type=int, default=2)
    p.add_argument("--group-size", type=int, default=None, help="G (default: the recipe's 7; the CPU: 2)")
    p.add_argument("--max-reflection", type=int, default=None, help="default: the recipe's 128 (the CPU: 8)")
    p.add_argument("--work", default=None, help="work folder (model folder kept for the next run; default: temp)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    args = p.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"bench": "train_step", "ok": False, "error": "no CUDA device: use --device cpu"}))
        return 1
    resume_procs = args.resume_procs or args.procs
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="janus-r1-train-step-"))
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "runs", ignore_errors=True)
    from janus_r1.training.toy import write_toy_prompts, write_toy_t2i

    t = time.time()
    model = write_model(args.geometry, work / f"model-{args.geometry}")
    result: dict = {"bench": "train_step", "geometry": args.geometry, "device": args.device,
                    "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
                    "torch": torch.__version__, "procs": args.procs, "resume_procs": resume_procs,
                    "model_write_s": round(time.time() - t, 1)}
    sharding = "fsdp" if max(args.procs, resume_procs) > 1 else "none"
    common = {"log_with": "none", "sharding": sharding, "warmup_steps": 1}
    sft = recipe("sft_t2i.yaml", **common, max_steps=args.sft_steps, save_every=args.sft_steps, num_workers=0,
                 grad_accum=1)
    if args.device == "cpu":  # a CPU smoke: the recipe's paths at a size that runs in a minute or two
        args.group_size, args.max_reflection = args.group_size or 2, args.max_reflection or 8
    grpo_over = {k: v for k, v in (("group_size", args.group_size), ("max_reflection", args.max_reflection)) if v}
    grpo = recipe("grpo_t2i.yaml", **common, **grpo_over, max_steps=args.grpo_steps, save_every=args.grpo_steps,
                  reward="self", prompts_per_step=1, rollout_batches=1, convert_steps=max(args.grpo_steps, 1))
    sft_data = ["--data", str(write_toy_t2i(work / "data", n_prompts=2))]
    prompts = ["--prompts", str(write_toy_prompts(work / "data"))]
    runs = result["runs"] = {}
    runs["sft"] = launch("train-sft", sft, work, "sft", model, sft_data, args.procs, args.device, args.timeout)
    runs["grpo"] = launch("train-grpo", grpo, work, "grpo", model, prompts, args.procs, args.device, args.timeout)
    if runs["grpo"]["rc"] == 0:
        more = {**grpo, "max_steps": args.grpo_steps + 1, "convert_steps": args.grpo_steps + 1}
        runs["resume"] = launch("train-grpo", more, work, "resume", model, prompts, resume_procs, args.device,
                                args.timeout)
    checks = {
        "sft_steps": runs["sft"]["steps"] == list(range(1, args.sft_steps + 1)),
        "grpo_steps": runs["grpo"]["steps"] == list(range(1, args.grpo_steps + 1)),
        "resumed": bool(runs.get("resume", {}).get("resumed")),
        "resume_steps": runs.get("resume", {}).get("steps") == list(range(1, args.grpo_steps + 2)),
    }
    result["checks"] = checks
    result["ok"] = all(r["rc"] == 0 for r in runs.values()) and all(checks.values())
    peaks = [f.get("peak_gpu_gib") for r in runs.values() for ph in r["phases"].values()
             for f in (ph if isinstance(ph, list) else [ph]) if isinstance(f, dict)]
    result["peak_gpu_gib"] = max((x for x in peaks if x is not None), default=None)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
