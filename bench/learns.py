"""Does the shipped pipeline learn? The whole Janus-Pro-R1 chain on the shapes world, from nothing, on a CPU.

    python bench/learns.py                    # work folder out/learns, seed 0
    python bench/learns.py --work /tmp/l --seed 1 --sft-steps 3000 --grpo-steps 30

Stages (the time of each is printed; "pre-training" is this bench's own, everything after it is the shipped CLI):

1. the world (``janus_r1.training.shapes``, its images ``shapes_world``): train / held-out prompt split, renderings of correct scenes, near
   misses (minimal pairs: each made from one of the prompt's correct scenes by one change) and empty canvases in
   ``build-data --folder`` layout (the stand-in for another generator such as FLUX);
2. pre-training (bench): a small Janus of the real architecture whose VQ model and understanding path are set by
   hand for the world (``shapes_model.build_base``: exact tiles), then plain text-to-image pre-training with the shipped ``train-sft`` restricted
   to Task-I (``mix: [1, 0, 0]``) on the correct renderings -- labelled by ``janus-r1 build-data --judge shapes:``;
   the result is the **base**;
3. ``janus-r1 build-data --engine base=BASE --folder world=DIR --judge shapes:`` -> label files;
4. ``janus-r1 train-sft`` on them (Task-I / II / III; 60 % of the batches Task-II, in ``judge_pairs``: a "Yes"
   and a "No" image of each prompt side by side; the hand-set aligner frozen) -> **sft**;
5. ``janus-r1 train-grpo --reward shapes:`` on the training prompts -> **grpo**;
6. evaluation of base / sft / grpo on the held-out prompts (never trained on) with the engine's introspective
   loop (``JanusR1.generate``, at most 3 images), every image judged by the rule judge.

Metrics per stage: ``first_acc`` (first image correct), ``final_acc`` (the image the loop returns),
``verdict_acc`` (the model's Yes/No on each image it judged vs the rule judge's S >= 0.5), ``regen_rate`` (samples
with a second image), ``aha_rate`` (samples whose first image was refused and whose final image is correct),
``mean_s`` (rule S of the final image); ``world_verdict``, the verdict on renderings of the held-out prompts (a
correct scene and a near miss made from it: balanced accuracy; what the verdict reads, apart from how the model
draws). The log line of each stage adds ``redraw_acc`` (redrawn images that are right) and ``verdict_by_reason``
(the verdict's accuracy per kind of rule-judge reason). Curves (PNG): pre-training / SFT loss per task, GRPO
reward and verdict accuracy, from each run's ``log.jsonl``. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from janus_r1.training import shapes as W  # noqa: E402
from janus_r1.training import shapes_model as M  # noqa: E402
from janus_r1.training import shapes_world as SW  # noqa: E402

PRETRAIN = {"mix": [1.0, 0.0, 0.0], "lr": 2e-3, "warmup_steps": 50, "min_lr": 2e-4, "batch_size": 16,
            "weight_decay": 0.0, "num_workers": 0, "log_with": "none", "save_every": 100000, "async_save": False}
# yes_no_weight 0.8 (the released code's Task-II loss): the one verdict token would otherwise weigh as much as
# one token of its reason. A constant 3e-4: at width 128 a constant 1e-3 left the model blind to the image (the
# same S for every image) and lowered text-to-image. The verdict is what learns slowest (docs/training.md, "Train
# your own"), so 60 % of the batches are Task-II, in pairs (a "Yes" and a "No" image of one prompt side by side),
# without earlier attempts in the context (judge_history 0; measured, Task-II alone, 1500 steps: held-out
# balanced verdict 0.71 against 0.59 with the paper's two). The aligner stays as set by hand (``freeze``): trained,
# Adam pulls its features together (after 4000 steps an empty cell's token and a coloured one's at cosine 0.4-0.7) and
# near misses stay at chance; frozen, Task-II alone for 3000 steps rejects doubled and added objects 0.90 / 0.93 of
# the time (trained: 0.24 / 0.31 after the whole SFT). 12000 steps: the chain then takes 25 of its 30 minutes
# (measured at 8000: SFT verdict on own images 0.77, first-image accuracy 0.23; at 12000: 0.76 and 0.52)
SFT = {"mix": [0.2, 0.6, 0.2], "lr": 3e-4, "warmup_steps": 50, "min_lr": 3e-4, "batch_size": 16,
       "weight_decay": 0.0, "num_workers": 0, "yes_no_weight": 0.8, "judge_pairs": True, "judge_history": 0,
       "freeze": ["aligner"], "log_with": "none", "save_every": 100000, "async_save": False}
# segments (the released code's three advantages): image 1 is rewarded for itself even after a "No" -- with the
# paper's trajectory reward r1 cancels whenever the first verdict is "No" (docs/training.md, GRPO)
GRPO = {"lr": 3e-4, "warmup_steps": 3, "convert_steps": 10, "convert_lr": 2e-4, "min_lr": 1e-4, "group_size": 7,
        "advantage": "segments", "prompts_per_step": 2, "max_rounds": 2, "max_reflection": 32, "beta": 0.02,
        "inner_iterations": 2, "weight_decay": 0.0, "freeze": ["aligner"], "log_with": "none", "save_every": 100000,
        "async_save": False}


def log(msg: str) -> None:
    print(f"[learns {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cli(*args: str) -> None:
    """One shipped command, as a user types it (``python -m janus_r1.cli``), in a fresh process."""
    env = dict(os.environ, JANUS_R1_NO_PROGRESS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get(
        "PYTHONPATH", ""), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "janus_r1.cli", *args]
    log("$ janus-r1 " + " ".join(args))
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-4000:] + r.stderr[-4000:])
        raise SystemExit(f"janus-r1 {args[0]} failed with exit code {r.returncode}")


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj, indent=1) + "\n")
    return path


def evaluate(model_dir: Path, prompts: list[str], n: int, seed: int) -> dict:
    """The engine's introspective loop (<= 3 images) on held-out prompts; every image judged by the rule judge."""
    from janus_r1.api import JanusR1

    r1 = JanusR1.from_pretrained(str(model_dir), device="cpu", dtype="fp32", progress=False)
    results = r1.generate(prompts, num_images=n, max_rounds=3, seed=seed, max_reflection=32)
    first = final = verdict_ok = judged = regen = aha = 0
    mean_s = 0.0
    by_reason: dict[str, list[int]] = {}  # the verdict's accuracy per kind of rule-judge reason
    redraws = [0, 0]  # redrawn images that are right, of all redrawn images
    for res in results:
        judged_by_rule = [W.judge(a.image, res.prompt) for a in res.attempts]
        s = [x for x, _ in judged_by_rule]
        ok = [x >= W.YES_PASS for x in s]
        first += ok[0]
        final += ok[res.final]
        mean_s += s[res.final]
        regen += len(res.attempts) > 1
        aha += (res.attempts[0].verdict == "No") and ok[res.final]
        redraws[0] += sum(ok[1:])
        redraws[1] += len(ok) - 1
        for a, x, (_, reason) in zip(res.attempts, s, judged_by_rule):
            if a.verdict is not None:
                judged += 1
                right = (a.verdict == "Yes") == (x >= 0.5)
                verdict_ok += right
                tally = by_reason.setdefault(reason_kind(reason), [0, 0])
                tally[0] += right
                tally[1] += 1
    k = len(results)
    return {**world_verdict(r1, prompts, seed), "first_acc": round(first / k, 4), "final_acc": round(final / k, 4),
            "verdict_acc": round(verdict_ok / max(judged, 1), 4), "regen_rate": round(regen / k, 4),
            "aha_rate": round(aha / k, 4), "mean_s": round(mean_s / k, 4), "samples": k,
            "redraw_acc": round(redraws[0] / max(redraws[1], 1), 4), "redraws": redraws[1],
            "verdict_by_reason": {r: f"{a}/{n}" for r, (a, n) in sorted(by_reason.items(), key=lambda x: -x[1][1])}}


def reason_kind(reason: str) -> str:
    """The rule judge's reason with its objects and numbers blanked: "correct", "there is no X", ..."""
    if not reason.startswith("No"):
        return "correct"
    r = re.sub(r"(red|green|blue|yellow) (dot|bar|block|blob)s?", "X", reason.split("Reason: ")[-1])
    return re.sub(r"\b(\d+|two|a)\b", "k", r).rstrip(".")


def world_verdict(r1, prompts: list[str], seed: int) -> dict:
    """The verdict on renderings of the held-out prompts (not the model's own images): per prompt one correct
    scene, one near miss made from it and one empty canvas; accuracy per kind, and balanced over correct and near
    misses (``world_verdict``) -- what the verdict reads, independent of how well the model draws."""
    import random

    rng = random.Random(seed)
    images, ps, kinds = [], [], []
    for p in prompts:
        good = W.sample_scene(p, rng)
        for kind, scene in (("correct", good), ("near_miss", SW.wrong_scene(p, rng, good)), ("empty", [])):
            images.append(W.render(scene))
            ps.append(p)
            kinds.append(kind)
    yes = [jd.score >= 0.5 for jd in r1.score(images, ps)]
    acc = {k: sum((y == (k == "correct")) for y, kk in zip(yes, kinds) if kk == k) / len(prompts)
           for k in ("correct", "near_miss", "empty")}
    return {"world_verdict": round((acc["correct"] + acc["near_miss"]) / 2, 4),
            **{f"world_{k}": round(v, 4) for k, v in acc.items()}}


def read_log(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def plot(path: Path, title: str, series: dict[str, list[tuple[float, float]]], smooth: int = 1) -> None:
    """A line chart with Pillow (no plotting library needed): one colour per series, moving average ``smooth``."""
    from PIL import Image, ImageDraw

    w, h, pad = 640, 360, 48
    im = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(im)
    pts = {k: v for k, v in series.items() if v}
    if not pts:
        return
    xs = [x for v in pts.values() for x, _ in v]
    ys = [y for v in pts.values() for _, y in v]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    d.rectangle([pad, pad // 2, w - pad // 2, h - pad], outline="black")
    d.text((pad, 4), title, fill="black")
    d.text((4, pad // 2), f"{y1:.3g}", fill="black")
    d.text((4, h - pad - 10), f"{y0:.3g}", fill="black")
    d.text((pad, h - pad + 4), f"step {x0:g}", fill="black")
    d.text((w - pad - 40, h - pad + 4), f"{x1:g}", fill="black")
    colours = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd"]
    for n, (name, v) in enumerate(pts.items()):
        c = colours[n % len(colours)]
        ys_s = [sum(y for _, y in v[max(0, i - smooth + 1): i + 1]) / len(v[max(0, i - smooth + 1): i + 1])
                for i in range(len(v))]
        line = [(pad + (x - x0) / (x1 - x0) * (w - 1.5 * pad), h - pad - (y - y0) / (y1 - y0) * (h - 1.5 * pad))
                for (x, _), y in zip(v, ys_s)]
        if len(line) > 1:
            d.line(line, fill=c, width=2)
        d.text((w - 200, pad // 2 + 6 + 12 * n), name, fill=c)
    im.save(path)


def curves(work: Path) -> list[str]:
    out = []
    for stage in ("pretrain", "sft"):
        rows = read_log(work / stage / "log.jsonl")
        series = {k: [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))]
                  for k in ("loss_t2i", "loss_judge", "loss_regen")}
        p = work / f"{stage}_loss.png"
        plot(p, f"{stage}: loss per task (moving average of 10)", series, smooth=10)
        out.append(str(p))
    rows = read_log(work / "grpo" / "log.jsonl")
    for key, title in (("reward", "GRPO: mean reward R_Gen + R_Comp"),
                       ("verdict_acc", "GRPO: verdict accuracy (rollouts vs rule judge)")):
        p = work / f"grpo_{key}.png"
        plot(p, title, {key: [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]})
        out.append(str(p))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="out/learns", help="work folder (emptied first unless --keep)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=int, default=M.BENCH_WIDTH, help="the language model's width")
    ap.add_argument("--pretrain-steps", type=int, default=3000)
    ap.add_argument("--sft-steps", type=int, default=12000)
    ap.add_argument("--grpo-steps", type=int, default=30)
    # 12, not 4: the verdict learns the mistakes it is shown, and the base's own (one object's cells out of line)
    # are what the SFT model makes; with 4 they were 4 % of the negatives (docs/training.md, "Train your own")
    ap.add_argument("--engine-images", type=int, default=12, help="M images per prompt the base draws")
    ap.add_argument("--eval-images", type=int, default=4, help="images per held-out prompt")
    ap.add_argument("--keep", action="store_true", help="reuse finished stages in --work")
    ap.add_argument("--max-prompts", type=int, default=0,
                    help="use only this many training and held-out prompts (0: all; a smoke run of the chain)")
    args = ap.parse_args()
    work = Path(args.work).resolve()
    if work.exists() and not args.keep:
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    times = {}

    def stage(name: str, t: float) -> None:
        times[name] = round(time.time() - t, 1)
        log(f"{name}: {times[name]} s")

    # 1. the world
    t = time.time()
    train, heldout = W.split_prompts(args.seed)
    if args.max_prompts:
        train, heldout = train[::max(1, len(train) // args.max_prompts)], heldout[::max(1, len(heldout) // args.max_prompts)]
    W.write_prompts(work / "train.txt", train)
    W.write_prompts(work / "heldout.txt", heldout)
    # the other generator: correct scenes, near misses and empty canvases (the easy negatives the verdict
    # starts from)
    SW.write_world_folder(work / "world", train, right=12, wrong=8, empty=4, seed=args.seed, pairs=True)
    stage("world", t)
    # 2. pre-training: the hand-set VQ, then plain text-to-image on correct renderings (Task-I only)
    t = time.time()
    if not (work / "vq-base" / "model.safetensors").exists():
        _, rep = M.build_base(work / "vq-base", seed=args.seed, width=args.width)
        log(f"VQ round trip: {rep}")
    stage("vq", t)
    t = time.time()
    if not (work / "pretrain" / "final").exists():
        cli("build-data", str(work / "train.txt"), "--out", str(work / "world-labels"), "--judge", "shapes:",
            "--folder", f"world={work / 'world'}", "--quiet")
        cli("train-sft", "--model", str(work / "vq-base"), "--data", str(work / "world-labels" / "world_0.7.jsonl"),
            "--out", str(work / "pretrain"), "--config", str(write_json(work / "pretrain.json", PRETRAIN)),
            "--max-steps", str(args.pretrain_steps), "--seed", str(args.seed))
    base = work / "pretrain" / "final"
    stage("pretrain_t2i", t)
    # 3. build-data: the base draws M images per training prompt, the rule judge scores them
    t = time.time()
    cli("build-data", str(work / "train.txt"), "--out", str(work / "data"), "--judge", "shapes:",
        "--engine", f"base={base}", "--folder", f"world={work / 'world'}", "--num-images", str(args.engine_images),
        "--seed", str(args.seed), "--device", "cpu", "--quiet")
    labels = sorted(str(p) for p in (work / "data").glob("*_0.7.jsonl"))
    stage("build_data", t)
    # 4. SFT, the three sub-tasks
    t = time.time()
    if not (work / "sft" / "final").exists():
        cli("train-sft", "--model", str(base), "--data", *labels, "--out", str(work / "sft"), "--config",
            str(write_json(work / "sft.json", SFT)), "--max-steps", str(args.sft_steps), "--seed", str(args.seed))
    stage("sft", t)
    # 5. GRPO with the rule judge as reward
    t = time.time()
    if not (work / "grpo" / "final").exists():
        cli("train-grpo", "--model", str(work / "sft" / "final"), "--prompts", str(work / "train.txt"), "--out",
            str(work / "grpo"), "--reward", "shapes:", "--config", str(write_json(work / "grpo.json", GRPO)),
            "--max-steps", str(args.grpo_steps), "--seed", str(args.seed))
    stage("grpo", t)
    # 6. held-out evaluation
    t = time.time()
    table = {}
    for name, path in (("base", base), ("sft", work / "sft" / "final"), ("grpo", work / "grpo" / "final")):
        table[name] = evaluate(path, heldout, args.eval_images, args.seed + 12345)
        log(f"{name}: {table[name]}")
    stage("evaluate", t)
    pngs = curves(work)
    keys = ("first_acc", "final_acc", "verdict_acc", "regen_rate", "aha_rate", "mean_s", "world_verdict")
    print(f"\nheld-out prompts: {len(heldout)} x {args.eval_images} images; training prompts: {len(train)}")
    print(f"{'stage':6} " + " ".join(f"{k:>13}" for k in keys))
    for name, row in table.items():
        print(f"{name:6} " + " ".join(f"{row[k]:>13.3f}" for k in keys))
    print("stage seconds: " + json.dumps(times))
    print("curves: " + ", ".join(pngs))
    summary = {k: {m: v[m] for m in keys} for k, v in table.items()}
    summary["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
