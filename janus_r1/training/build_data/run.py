"""build-data's two runs (text-to-image labels, the editing filter) and its command line."""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import JanusR1Error
from .journal import Journal, bar, journal_rows
from .prompts import expand_prompts, read_prompt_file
from .sources import check_folder, parse_source, read_image, score_source, summarise, write_labels


def _fmt_thre(thre: float) -> str:
    return f"{thre:g}"


def make_judge(args, questions: dict | None = None):
    """The judge from its spec, exactly as the trainer makes its reward (``make_reward``): every spec the trainer
    learns works here too."""
    from .. import rewards

    if args.judge.strip() == "self":
        raise JanusR1Error("--judge self needs a model: give self:PATH (a Janus-Pro / R1 folder or tiny-random)")
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return rewards.make_reward(args.judge, device=device, questions=questions or None)


def _draw(args, prompts, sources, out: Path, judge, group, rank: int, world: int, local: int) -> None:
    """Expand the prompts (rank 0, the others wait for its file) and draw every engine's images, each rank its
    share, with a barrier per engine so that rank 0 labels only once every image is on disk."""
    from ...batch import PromptItem, barrier_and_summarise, run_batch

    if args.expand:
        if rank == 0:
            expand_prompts(prompts, args.expand, out, args.quiet)
        if group is not None:
            group.barrier()
        if rank != 0:
            done = {r["promptid"]: r["prompt"] for r in journal_rows(out / "prompts.jsonl")}
            for p in prompts:
                p.prompt = done[p.promptid]
    if args.expand and judge is not None and getattr(judge, "questions", None):  # re-key to the long prompts
        judge.questions = {p.prompt: p.questions for p in prompts if p.questions}
    for s in sources:
        if s.kind != "engine":
            continue
        from ...api import JanusR1

        device = args.device
        if device == "auto" and world > 1:
            import torch

            if torch.cuda.is_available():
                device = f"cuda:{local % torch.cuda.device_count()}"
        jr = JanusR1.from_pretrained(s.path, device=device, progress=not args.quiet)
        for p in prompts:  # the engine's (and train-sft's) 200-token budget, checked before drawing anything
            try:
                jr.janus.prompt_ids(p.prompt)
            except JanusR1Error as e:
                what = "its long prompt (OUT/prompts.jsonl)" if p.prompt != p.short else "the prompt"
                raise JanusR1Error(f"{p.where}: {what}: {e}") from None
        items = [PromptItem(p.promptid, p.prompt, {"prompt": p.prompt, "short": p.short}) for p in prompts]
        root = out / "images" / s.name
        mine = [it for it in items if it.index % world == rank]
        done: list[int] = []
        progress = bar(None, len(mine), f"drawing {s.name}", args.quiet or rank != 0)
        for k in range(0, len(mine), args.batch_size):  # batch.py's machinery, a batch at a time for the bar
            chunk = mine[k : k + args.batch_size]
            done += run_batch(jr, chunk, root, rank=rank, world=world, seed=args.seed, batch_size=args.batch_size,
                              plain=True, num_images=args.num_images)
            if progress is not None:
                progress.update(len(chunk))
        if progress is not None:
            progress.close()
        del jr
        barrier_and_summarise(root, items, rank, world, done)


def build_t2i(args) -> dict:
    from ...batch import dist_env, process_group
    from ...outputs import atomic_write_bytes

    rank, world, local = dist_env()
    prompts = read_prompt_file(args.prompts)
    sources = [parse_source(v, "engine") for v in args.engine] + [parse_source(v, "folder") for v in args.folder]
    if not sources:
        raise JanusR1Error("no image source: give --engine MODEL and/or --folder DIR (both may repeat)")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise JanusR1Error(f"two image sources share a name ({names}); name them NAME=PATH")
    for s in sources:
        if s.kind == "folder":
            check_folder(s, prompts)
    # the judge is built (its spec checked, an in-process judge loaded) before anything is written
    judge = make_judge(args, {p.prompt: p.questions for p in prompts if p.questions}) if rank == 0 else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with process_group(world) as group:  # every rank leaves it here: rank 0 labels without a group
        _draw(args, prompts, sources, out, judge, group, rank, world, local)
    if rank != 0:
        return {}
    thre = args.threshold
    summary: dict = {"threshold": thre, "judge": args.judge, "sources": {}}
    for s in sources:
        root = out / "images" / s.name if s.kind == "engine" else s.folder
        rows = score_source(s, root, prompts, judge, out, thre, args.judge_batch, args.seed, args.quiet)
        label = out / f"{s.name}_{_fmt_thre(thre)}.{args.format}"
        write_labels(label, rows)
        summary["sources"][s.name] = {"labels": str(label), **summarise(rows, thre)}
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary


# --- editing -------------------------------------------------------------------------------------------------

def read_edit_rows(path: str) -> list[dict]:
    """``{"sample_id", "text", "input", "output"}`` rows; a bad row is one error with its file:line."""
    from ..data import Report, _json_rows

    p = Path(path)
    if not p.is_file():
        raise JanusR1Error(f"edit metadata {p} does not exist")
    rows, seen = [], set()
    for where, obj in _json_rows(p, Report("fail")):
        text, src, dst = obj.get("text"), obj.get("input"), obj.get("output")
        if not (isinstance(text, str) and text.strip() and isinstance(src, str) and isinstance(dst, str)):
            raise JanusR1Error(f"{where}: an editing row needs text, input and output strings")
        sid = str(obj.get("sample_id", len(rows)))
        if sid in seen:
            raise JanusR1Error(f"{where}: sample_id {sid} appears twice")
        seen.add(sid)
        files = [Path(x).expanduser() for x in (src, dst)]
        files = [f if f.is_absolute() else p.parent / f for f in files]
        for f in files:
            if not f.is_file():
                raise JanusR1Error(f"{where}: image not found: {f}")
        rows.append({"sample_id": sid, "text": text.strip(), "input": str(files[0].resolve()),
                     "output": str(files[1].resolve()), "where": where})
    if not rows:
        raise JanusR1Error(f"{p} holds no editing row")
    return rows


def build_edit(args) -> dict:
    from ...outputs import atomic_write_bytes

    rows = read_edit_rows(args.edit)
    judge = make_judge(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    journal_path = out / ".journal" / "edit.jsonl"
    done = {r["sample_id"]: r for r in journal_rows(journal_path)}
    todo = [r for r in rows if r["sample_id"] not in done]
    progress = bar(None, len(todo), "judging edits", args.quiet)
    with Journal(journal_path) as journal:
        for k in range(0, len(todo), args.judge_batch):
            chunk = todo[k : k + args.judge_batch]
            srcs = [read_image(Path(r["input"])) for r in chunk]
            outs = [read_image(Path(r["output"])) for r in chunk]
            pairs = judge.score_edit(srcs, outs, [r["text"] for r in chunk])
            for r, (f, pv) in zip(chunk, pairs):
                row = {k2: r[k2] for k2 in ("sample_id", "text", "input", "output")}
                row.update(s_follow=round(float(f), 6), s_preserve=round(float(pv), 6))
                journal.append(row)
                done[r["sample_id"]] = row
            if progress is not None:
                progress.update(len(chunk))
    if progress is not None:
        progress.close()
    thre = args.threshold
    scored = [done[r["sample_id"]] for r in rows]
    kept = [r for r in scored if r["s_follow"] >= thre and r["s_preserve"] >= thre]
    label = out / f"edit_{_fmt_thre(thre)}.jsonl"
    atomic_write_bytes(label, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept).encode())
    n = len(scored)
    summary = {"threshold": thre, "judge": args.judge, "edit": {
        "labels": str(label), "pairs": n, "kept": len(kept),
        "mean_s_follow": round(sum(r["s_follow"] for r in scored) / n, 4),
        "mean_s_preserve": round(sum(r["s_preserve"] for r in scored) / n, 4)}}
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary


# --- CLI -----------------------------------------------------------------------------------------------------

def cmd_build_data(args) -> int:
    if (args.prompts is None) == (args.edit is None):
        raise JanusR1Error("give a prompt file (text-to-image data) or --edit METADATA (editing data)"
                           + (", not both" if args.edit else ""))
    summary = build_edit(args) if args.edit else build_t2i(args)
    if summary and not args.quiet:
        for name, s in ({"edit": summary["edit"]} if args.edit else summary["sources"]).items():
            if args.edit:
                print(f"edit: {s['kept']}/{s['pairs']} pairs kept (S_follow and S_preserve >= {args.threshold}), "
                      f"mean S_follow {s['mean_s_follow']}, mean S_preserve {s['mean_s_preserve']} -> {s['labels']}")
            else:
                print(f"{name}: {s['prompts']} prompts, {s['images']} images, mean S {s['mean_s']}, "
                      f"positives (S >= {args.threshold}) {s['positives']}, negatives (S < 0.5) {s['negatives']} "
                      f"-> {s['labels']}")
    return 0


def add_build_data_command(sub) -> None:
    from ...cli_options import _device, _float_in, _positive_int, _seed

    b = sub.add_parser("build-data", help="prompts -> images from several sources -> judge S + reason -> SFT labels")
    b.add_argument("prompts", nargs="?", default=None, help="prompt file: .txt (one a line) or .jsonl ({\"prompt\"})")
    b.add_argument("--out", required=True, help="output folder: <source>_<thre>.jsonl, images/, summary.json")
    b.add_argument("--judge", required=True,
                   help="any reward spec train-grpo takes: openai:URL?model=NAME | vlm:PATH | self:PATH | ...")
    b.add_argument("--engine", action="append", default=[], metavar="[NAME=]MODEL",
                   help="draw images with this Janus-Pro / R1 model (folder or tiny-random); may repeat")
    b.add_argument("--folder", action="append", default=[], metavar="[NAME=]DIR",
                   help="images from another generator: DIR/<promptid:05d>/samples/*.png; may repeat")
    b.add_argument("--num-images", type=_positive_int, default=18,
                   help="M images per prompt from each engine (paper 18)")
    b.add_argument("--expand", default=None, metavar="openai:URL?model=NAME",
                   help="rewrite short prompts into long ones with this chat server (paper §3.1)")
    b.add_argument("--edit", default=None, metavar="META.jsonl",
                   help="editing data instead: keep pairs with S_follow and S_preserve >= --threshold")
    b.add_argument("--threshold", type=_float_in(0.0, 1.0), default=0.7, help="thre of the state codes / edit filter (0.7)")
    b.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl", help="label file format")
    b.add_argument("--batch-size", type=_positive_int, default=1, help="prompts an engine decodes together")
    b.add_argument("--judge-batch", type=_positive_int, default=16, help="images scored per judge call")
    b.add_argument("--seed", type=_seed, default=0, help="prompt i is drawn with seed + i (default 0)")
    b.add_argument("--device", type=_device, default="auto", help="auto | cpu | cuda | cuda:N (engines and in-process judges)")
    b.add_argument("--quiet", action="store_true", help="no progress bars or summary lines")
    b.set_defaults(func=cmd_build_data)
