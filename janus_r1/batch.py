"""Batch generation over a prompt file, data-parallel across processes (``accelerate launch`` / ``torchrun``).

Each process takes every ``world``-th prompt (by line order), so any number of GPUs or machines splits one file
without coordination; a process group (gloo on CPU, nccl on GPU) is only used for a final barrier so rank 0 can
write ``summary.json``. Output follows the GenEval layout: ``OUT/<index:05d>/metadata.jsonl``,
``OUT/<index:05d>/samples/<k:04d>.png`` (final images), plus ``attempts/`` and ``trace.json`` per prompt. A prompt
whose ``trace.json`` exists is skipped, so an interrupted run resumes where it stopped.

Every prompt is seeded with ``seed + index``; with ``batch_size=1`` its images are identical whatever the number
of processes (with larger batches, the sampled images depend on which prompts share a batch).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import JanusR1Error


@dataclass
class PromptItem:
    index: int
    prompt: str
    meta: dict
    line: int = 0  # 1-based line in the prompt file (error messages: file:line)


def read_prompts(path: str | Path) -> list[PromptItem]:
    """A ``.txt`` file (one prompt per line; blank lines and ``#`` comments skipped) or ``.jsonl`` (objects with
    a ``prompt`` field; other fields are kept as metadata, e.g. GenEval's ``tag``/``include``)."""
    from .generation.checks import read_regular_file

    p = Path(path)
    if p.is_dir():
        raise JanusR1Error(f"prompt file {p} is a directory; give a .txt or .jsonl file.")
    if not p.exists():
        raise JanusR1Error(f"prompt file {p} does not exist.")
    raw = read_regular_file(p, "prompt file")
    try:
        text_all = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise JanusR1Error(f"prompt file {p}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset "
                           f"{e.start}); save it as UTF-8.") from None
    items: list[PromptItem] = []
    jsonl = p.suffix.lower() in (".jsonl", ".json")
    for lineno, line in enumerate(text_all.splitlines(), 1):
        text = line.strip()
        if not text or (not jsonl and text.startswith("#")):
            continue
        if jsonl:
            try:
                obj = json.loads(text)
            except ValueError as e:
                raise JanusR1Error(f"{p}:{lineno}: not valid JSON ({e}).") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
                raise JanusR1Error(f"{p}:{lineno}: expected an object with a non-empty \"prompt\" string.")
            items.append(PromptItem(len(items), obj["prompt"], obj, lineno))
        else:
            items.append(PromptItem(len(items), text, {"prompt": text}, lineno))
    if not items:
        raise JanusR1Error(f"{p} holds no prompt.")
    return items


def check_budgets(items: list[PromptItem], path: str | Path, prompt_ids) -> None:
    """Every prompt of the file within its token budget, before the first one is drawn: ``prompt_ids(text)``
    raises :class:`JanusR1Error` for one over it, re-raised as ``file:line: ...``."""
    for it in items:
        try:
            prompt_ids(it.prompt)
        except JanusR1Error as e:
            raise JanusR1Error(f"{path}:{it.line}: {e}") from None


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) as set by accelerate launch / torchrun; (0, 1, 0) when run plainly."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def run_batch(jr, items: list[PromptItem], out: Path, *, rank: int = 0, world: int = 1, seed: int = 0,
              batch_size: int = 1, plain: bool = False, num_images: int = 1, hooks=None,
              **gen_kwargs) -> list[int]:
    """Generate this rank's share of ``items`` into ``out``; returns the indices done by this call. Each prompt's
    folder is written as one set (:func:`janus_r1.outputs.write_files_together`), ``trace.json`` last."""
    from .outputs import png_bytes, result_files, write_files_together

    mine = [it for it in items if it.index % world == rank and not (out / f"{it.index:05d}" / "trace.json").exists()]
    done: list[int] = []
    for start in range(0, len(mine), batch_size):
        chunk = mine[start : start + batch_size]
        prompts = [it.prompt for it in chunk]
        kw = dict(num_images=num_images, seed=seed + chunk[0].index, **gen_kwargs)
        if hooks is not None:
            kw["hooks"] = hooks
        results = jr.text_to_image(prompts, **kw) if plain else jr.generate(prompts, **kw)
        for n, it in enumerate(chunk):
            mine_res = results[n * num_images : (n + 1) * num_images]
            files = {f"samples/{k:04d}.png": png_bytes(r.final_attempt.image) for k, r in enumerate(mine_res)}
            files["metadata.jsonl"] = (json.dumps(it.meta, ensure_ascii=False) + "\n").encode()
            attempts = result_files(mine_res, {"index": it.index, "prompt": it.prompt, "rank": rank})
            trace = attempts.pop("trace.json")
            files.update({f"attempts/{name}": data for name, data in attempts.items()})
            files["trace.json"] = trace  # trace.json last: marks the prompt done
            write_files_together(out / f"{it.index:05d}", files, last="trace.json")
            done.append(it.index)
    return done


@contextmanager
def process_group(world: int) -> Iterator:
    """The launcher's process group (gloo on CPU, nccl on GPU) for a run's barriers, or None when run plainly or
    when one already exists (the trainer's). A group started here is destroyed on the way out, whatever happens:
    one still alive when the interpreter exits can abort the process (SIGABRT) and hide the real error."""
    import torch.distributed as dist

    started = False
    if world > 1 and os.environ.get("MASTER_ADDR") and dist.is_available() and not dist.is_initialized():
        import torch

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        started = True
    try:
        yield dist if dist.is_available() and dist.is_initialized() else None
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()


def barrier_and_summarise(out: Path, items: list[PromptItem], rank: int, world: int, done: list[int]) -> None:
    """With a process group (:func:`process_group`), wait for every rank; rank 0 then records what the directory
    holds."""
    import torch.distributed as dist

    counts = [len(done)]
    if dist.is_available() and dist.is_initialized():
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, len(done))
        counts = gathered
        dist.barrier()
    if rank == 0:
        from .outputs import atomic_write_bytes

        complete = sorted(int(p.parent.name) for p in out.glob("*/trace.json"))
        summary = {"prompts": len(items), "complete": len(complete), "world_size": world,
                   "done_per_rank_this_run": counts, "missing": sorted(set(range(len(items))) - set(complete))}
        atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
