"""build-data's image sources (an engine's output folder, another generator's GenEval-layout folder), and
their scored label rows and files."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from ...errors import JanusR1Error
from .journal import Journal, bar, journal_rows
from .prompts import Prompt
from .reasons import explain, state_code

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


# --- sources -------------------------------------------------------------------------------------------------

@dataclass
class Source:
    name: str
    kind: str  # engine | folder
    path: str  # model (engine) or image folder (folder)

    @property
    def folder(self) -> Path:
        return Path(self.path)


def parse_source(value: str, kind: str) -> Source:
    name, sep, path = value.partition("=")
    if not sep:
        path = value
        name = "janus" if kind == "engine" and path == "tiny-random" else Path(path.rstrip("/")).name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name or ""):
        raise JanusR1Error(f"source name {name!r} of --{kind} {value!r}: use letters, digits, '_', '-', '.' "
                           "(NAME=PATH names it)")
    return Source(name, kind, path)


def prompt_folder(root: Path, promptid: int) -> Path:
    return root / f"{promptid:05d}"


def source_images(root: Path, promptid: int) -> list[Path]:
    """A prompt's images in a GenEval-layout folder, in name order ([] if the generator made none)."""
    d = prompt_folder(root, promptid) / "samples"
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def check_folder(src: Source, prompts: list[Prompt]) -> None:
    """Before anything is written: the folder exists, and its metadata (if any) names our prompts."""
    root = src.folder
    if not root.is_dir():
        raise JanusR1Error(f"--folder {src.name}={root}: not a directory")
    for p in prompts:
        meta = prompt_folder(root, p.promptid) / "metadata.jsonl"
        if not meta.is_file():
            continue
        try:
            first = meta.read_text(encoding="utf-8").splitlines()[0]
            text = json.loads(first).get("prompt")
        except (IndexError, ValueError, AttributeError, OSError, UnicodeDecodeError) as e:
            raise JanusR1Error(f"{meta}:1: not a JSON object with a prompt ({type(e).__name__})") from None
        if isinstance(text, str) and text.strip() not in (p.prompt, p.short):
            raise JanusR1Error(f"{meta}:1: its prompt {text.strip()[:60]!r} is not prompt {p.promptid} "
                               f"({p.where}: {p.short[:60]!r}); the folder was made from another prompt file")


def _rel(path: Path, out: Path) -> str:
    """Paths inside OUT are stored relative (the data set moves as one folder), others absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(out.resolve()))
    except ValueError:
        return str(path)


def read_image(path: Path):
    from ..data import open_image

    return open_image(str(path))


def score_source(src: Source, root: Path, prompts: list[Prompt], judge, out: Path, thre: float,
                 batch: int, seed: int, quiet: bool) -> list[dict]:
    """Judge every image of one source, one journal row per prompt; returns all rows (old and new)."""
    journal_path = out / ".journal" / f"{src.name}.jsonl"
    rows = {r["promptid"]: r for r in journal_rows(journal_path)}
    by_id = {p.promptid: p for p in prompts}
    for pid, r in rows.items():
        if pid not in by_id or r["prompt"] != by_id[pid].prompt:
            where = by_id[pid].where if pid in by_id else "the prompt file"
            raise JanusR1Error(f"{journal_path}: prompt {pid} was labelled for another text than {where}; this "
                               "--out belongs to another prompt file (or --expand changed): use a new --out")
    todo = [p for p in prompts if p.promptid not in rows and source_images(root, p.promptid)]
    with Journal(journal_path) as journal:
        pending: list[tuple[Prompt, list[Path]]] = []
        progress = bar(None, len(todo), f"judging {src.name}", quiet)

        def flush():
            if not pending:
                return
            ims, caps, owners = [], [], []
            for p, files in pending:
                for f in files:
                    try:
                        ims.append(read_image(f))
                    except JanusR1Error as e:
                        raise JanusR1Error(f"{e} (prompt {p.where}); replace or remove it, then run the same "
                                           "command again: the prompts judged so far are kept") from None
                    caps.append(p.prompt)
                    owners.append((p, f))
            scores = [float(s) for s in judge.score(ims, caps)]
            for s, (p, f) in zip(scores, owners):
                if not (math.isfinite(s) and 0.0 <= s <= 1.0):
                    raise JanusR1Error(f"the judge returned S = {s!r} for {f} (prompt {p.where}); S must be in [0, 1]")
            reasons = explain(judge, ims, caps, scores, seed)
            k = 0
            for p, files in pending:
                data = []
                for j, f in enumerate(files):
                    s, r = scores[k], reasons[k]
                    data.append({"id": j, "img_path": _rel(f, out), "reason": r, "prob": round(s, 6),
                                 "state": state_code(s >= 0.5, s, thre)})
                    k += 1
                data.sort(key=lambda d: -d["prob"])  # paper: a prompt's images sorted by S descending
                row = {"promptid": p.promptid, "prompt": p.prompt, "data": data}
                if p.short != p.prompt:
                    row["short"] = p.short
                journal.append(row)
                rows[p.promptid] = row
                if progress is not None:
                    progress.update(1)
            pending.clear()

        n = 0
        for p in todo:
            files = source_images(root, p.promptid)
            pending.append((p, files))
            n += len(files)
            if n >= batch:
                flush()
                n = 0
        flush()
        if progress is not None:
            progress.close()
    return [rows[k] for k in sorted(rows)]


def write_labels(path: Path, rows: list[dict]) -> None:
    """The label file, all at once (temp file + rename): JSONL, or Parquet with the same nested columns."""
    from ...outputs import atomic_write_bytes

    if path.suffix == ".parquet":
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist([{k: r[k] for k in ("promptid", "prompt", "data")} for r in rows]), buf)
        atomic_write_bytes(path, buf.getvalue())
        return
    atomic_write_bytes(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())


def summarise(rows: list[dict], thre: float) -> dict:
    probs = [d["prob"] for r in rows for d in r["data"]]
    n = len(probs)
    return {"prompts": len(rows), "images": n, "mean_s": round(sum(probs) / n, 4) if n else None,
            "positives": round(sum(p >= thre for p in probs) / n, 4) if n else None,
            "negatives": round(sum(p < 0.5 for p in probs) / n, 4) if n else None}
