"""Training data: SFT label files, editing metadata, RL prompt lists -- validated, every problem with file:line.

Formats (spec §3.1, §4.7):
  * T2I labels, JSONL (one prompt per line) or Parquet (``parquet.py``: the released shards, per-prompt or
    per-image rows, image paths or embedded image bytes):
    ``{"promptid", "prompt", "data": [{"id", "img_path" | "image", "reason", "prob", "state"}, ...]}``. Several
    files (one per image source) are merged by ``promptid`` -- Janus-Pro negatives are *not* lost (bug S2).
  * editing SFT (JSONL): ``{"sample_id", "text", "input", "output"}``.
  * RL prompts: a text file (one prompt per line), or JSONL / Parquet with ``prompt`` (or ``caption``) and
    optionally ``questions`` (the prompt's decomposed yes/no questions, paper B.2: a list of strings, or a DSG
    style ``{id: question}`` mapping); RL editing: JSONL ``{"image1" (or "input"), "text"}``.

A bad row (unparsable line, missing field, ``prob`` outside [0, 1], prompt over the token budget) fails the run
(``on_bad_row="fail"``) or is skipped and counted (``"skip"``); :class:`Report` holds the counts and the first
messages, and is logged by the trainer. Images are *not* opened at start-up unless ``check_images=True``: the
training data loader (``loader.py``) verifies each image when it first loads it, skipping and counting bad ones.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..errors import JanusR1Error
from ..model.vocabulary import Vocabulary, t2i_prompt
from .parquet import REF_PREFIX, image_ref, parquet_rows, read_image_ref


@dataclass
class Report:
    """What validation found: counts per reason, the first messages (file:line: what), rows kept."""

    on_bad_row: str = "fail"
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)

    def bad(self, where: str, reason: str, detail: str) -> None:
        msg = f"{where}: {detail}"
        if self.on_bad_row == "fail":
            raise JanusR1Error(msg + " (use on_bad_row: skip / --skip-bad-rows to skip and count such rows)")
        self.skipped[reason] += 1
        if len(self.messages) < 20:
            self.messages.append(msg)

    def summary(self) -> str:
        n = sum(self.skipped.values())
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items()))
        return f"{self.kept} rows kept, {n} skipped" + (f" ({parts})" if n else "")


@dataclass
class Labelled:
    """One image of a prompt with its judge score S, reason and the released ``state`` code."""

    path: str
    reason: str
    prob: float
    state: int | None
    where: str


@dataclass
class PromptRecord:
    promptid: str
    prompt: str
    images: list[Labelled]
    where: str


@dataclass
class EditRecord:
    sample_id: str
    instruction: str
    input: str
    output: str | None
    where: str


def _lines(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            yield from enumerate(f, 1)
    except OSError as e:
        raise JanusR1Error(f"{path}: cannot read ({e})") from e
    except UnicodeDecodeError as e:
        raise JanusR1Error(f"{path}: not UTF-8 text ({e})") from e


def _json_rows(path: Path, report: Report):
    """``(where, object)`` of every row of a JSONL or Parquet file (Parquet: image bytes as references)."""
    if path.suffix.lower() == ".parquet":
        for where, obj, binary in parquet_rows(path):
            yield where, _attach_refs(obj, binary, path, int(where.rsplit(":", 1)[1]))
        return
    for n, line in _lines(path):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except ValueError as e:
            report.bad(where, "invalid JSON", f"not valid JSON ({e})")
            continue
        if not isinstance(obj, dict):
            report.bad(where, "invalid JSON", f"expected a JSON object, found {type(obj).__name__}")
            continue
        yield where, obj


def _attach_refs(obj: dict, binary: set, path: Path, row: int) -> dict:
    """Put an embedded-image reference where the scan left out image bytes (top level or in ``data[k]``)."""
    for keys in binary:
        if len(keys) == 1:
            obj[keys[0]] = image_ref(path, row, [keys[0]])
        elif len(keys) == 2 and isinstance(obj.get(keys[0]), list):
            for k, item in enumerate(obj[keys[0]]):
                if isinstance(item, dict):
                    item[keys[1]] = image_ref(path, row, [keys[0], k, keys[1]])
    return obj


def _resolve(path_value, base: Path) -> str:
    if isinstance(path_value, dict):  # an HF Image struct whose bytes were not embedded
        path_value = path_value.get("path")
    if isinstance(path_value, str) and path_value.startswith(REF_PREFIX):
        return path_value
    p = Path(str(path_value)).expanduser()
    return str(p if p.is_absolute() else base / p)


def open_image(path: str) -> Image.Image:
    """An RGB image from a file path or an embedded-image reference; :class:`JanusR1Error` if unusable."""
    from ..generation.checks import load_images

    try:
        if path.startswith(REF_PREFIX):
            return load_images([read_image_ref(path)])[0]
        with Image.open(path) as im:
            im.load()
            return load_images([im])[0]
    except JanusR1Error:
        raise
    except FileNotFoundError:
        raise JanusR1Error(f"image not found: {path}") from None
    except Exception as e:  # PIL raises many types for corrupt files
        raise JanusR1Error(f"cannot read image {path} ({type(e).__name__}: {e})") from None


def check_image(path) -> str | None:
    """None if ``path`` (a file or an embedded-image reference) is a readable image, else why not."""
    path = str(path)
    if not path.startswith(REF_PREFIX) and not Path(path).is_file():
        return f"image not found: {path}"
    try:
        open_image(path)
    except JanusR1Error as e:
        return str(e)
    return None


def prompt_tokens(vocab: Vocabulary, prompt: str) -> int:
    return len(vocab.encode_with_bos(t2i_prompt(prompt)))


def _text(obj: dict, key: str) -> str | None:
    v = obj.get(key)
    return v if isinstance(v, str) and v.strip() else None


def load_t2i_labels(paths, vocab: Vocabulary, image_root: str | None = None, on_bad_row: str = "fail",
                    check_images: bool = False, max_prompt_tokens: int = 200) -> tuple[list[PromptRecord], Report]:
    """Read and validate T2I label files; records of the same ``promptid`` across files are merged."""
    report = Report(on_bad_row)
    records: dict[str, PromptRecord] = {}
    for path in [Path(p) for p in ([paths] if isinstance(paths, str) else paths)]:
        base = Path(image_root) if image_root else path.parent
        for where, obj in _json_rows(path, report):
            if "data" not in obj and ("img_path" in obj or "image" in obj):  # one row per image
                obj = {"promptid": obj.get("promptid"), "prompt": obj.get("prompt"), "data": [obj]}
            prompt, data = _text(obj, "prompt"), obj.get("data")
            if "promptid" not in obj or prompt is None or not isinstance(data, list):
                report.bad(where, "missing field", "a label row needs promptid, a non-empty prompt and a data list")
                continue
            n_tok = prompt_tokens(vocab, prompt)
            if n_tok > max_prompt_tokens:
                report.bad(where, "prompt over budget",
                           f"prompt is {n_tok} tokens with its template, over the budget of {max_prompt_tokens}")
                continue
            pid = str(obj["promptid"])
            rec = records.get(pid)
            if rec is None:
                rec = records[pid] = PromptRecord(pid, prompt, [], where)
            elif rec.prompt.strip() != prompt.strip():
                report.bad(where, "promptid conflict",
                           f"promptid {pid} has another prompt text at {rec.where}")
                continue
            for k, item in enumerate(data):
                iw = f"{where} (data[{k}])"
                if not isinstance(item, dict) or item.get("img_path", item.get("image")) is None or "prob" not in item:
                    report.bad(iw, "missing field", "an image entry needs img_path (or image) and prob")
                    continue
                prob = item["prob"]
                if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not math.isfinite(prob) \
                        or not 0.0 <= prob <= 1.0:
                    report.bad(iw, "prob outside [0, 1]", f"prob must be a number in [0, 1] (got {prob!r})")
                    continue
                img = _resolve(item.get("img_path", item.get("image")), base)
                if check_images and (why := check_image(img)):
                    report.bad(iw, "bad image", why)
                    continue
                state = item.get("state")
                rec.images.append(Labelled(img, str(item.get("reason") or ""), float(prob),
                                           state if isinstance(state, int) else None, iw))
                report.kept += 1
    return [r for r in records.values() if r.images], report


def load_edit_rows(paths, vocab: Vocabulary, image_root: str | None = None, on_bad_row: str = "fail",
                   check_images: bool = False, need_output: bool = True,
                   max_instruction_tokens: int = 90) -> tuple[list[EditRecord], Report]:
    """Editing SFT metadata (``sample_id, text, input, output``) or RL editing rows (``image1``/``input``, ``text``)."""
    report = Report(on_bad_row)
    out: list[EditRecord] = []
    for path in [Path(p) for p in ([paths] if isinstance(paths, str) else paths)]:
        base = Path(image_root) if image_root else path.parent
        for where, obj in _json_rows(path, report):
            ins = _text(obj, "text")
            src = obj.get("input", obj.get("image1"))
            dst = obj.get("output")
            if ins is None or src is None or (need_output and dst is None):
                need = "text, input, output" if need_output else "text and input (or image1)"
                report.bad(where, "missing field", f"an editing row needs {need}")
                continue
            n_tok = len(vocab.encode_continuation(ins.strip()))
            if n_tok > max_instruction_tokens:
                report.bad(where, "prompt over budget",
                           f"instruction is {n_tok} tokens, over the budget of {max_instruction_tokens}")
                continue
            paths_ok = True
            files = [_resolve(src, base)] + ([_resolve(dst, base)] if dst is not None else [])
            for f in files:
                if check_images and (why := check_image(f)):
                    report.bad(where, "bad image", why)
                    paths_ok = False
                    break
            if not paths_ok:
                continue
            out.append(EditRecord(str(obj.get("sample_id", len(out))), ins.strip(), files[0],
                                  files[1] if len(files) > 1 else None, where))
            report.kept += 1
    return out, report


def _questions(obj: dict, where: str, report: Report) -> list[str] | None:
    """A row's decomposed questions: a list of strings or a DSG-style ``{id: question}`` mapping (None if absent)."""
    qs = obj.get("questions", obj.get("question"))
    if qs is None:
        return None
    if isinstance(qs, dict):
        qs = [qs[k] for k in sorted(qs, key=lambda k: (len(str(k)), str(k)))]
    if not isinstance(qs, list) or not qs or not all(isinstance(q, str) and q.strip() for q in qs):
        report.bad(where, "bad questions", "'questions' must be a non-empty list of question strings")
        return None
    return [q.strip() for q in qs]


def _prompt_rows(p: Path, report: Report):
    """``(where, prompt, questions)`` of a text file (one prompt a line) or a JSONL / Parquet file."""
    if p.suffix.lower() not in (".jsonl", ".json", ".parquet"):
        for n, line in _lines(p):
            if line.strip():
                yield f"{p}:{n}", line.strip(), None
        return
    for where, obj in _json_rows(p, report):
        text = _text(obj, "prompt") or _text(obj, "caption")
        if text is None:
            report.bad(where, "missing field", "a prompt row needs a non-empty 'prompt' (or 'caption')")
            continue
        yield where, text.strip(), _questions(obj, where, report)


def load_prompts(path, vocab: Vocabulary, on_bad_row: str = "fail",
                 max_prompt_tokens: int = 200) -> tuple[list[str], Report]:
    """RL prompts: a text file with one prompt per line, or JSONL / Parquet rows with ``prompt``/``caption``."""
    p = Path(path)
    report = Report(on_bad_row)
    prompts: list[str] = []
    for where, text, _ in _prompt_rows(p, report):
        n_tok = prompt_tokens(vocab, text)
        if n_tok > max_prompt_tokens:
            report.bad(where, "prompt over budget",
                       f"prompt is {n_tok} tokens with its template, over the budget of {max_prompt_tokens}")
            continue
        prompts.append(text)
        report.kept += 1
    if not prompts:
        raise JanusR1Error(f"{p}: no usable prompt ({report.summary()})")
    return prompts, report


def load_questions(path) -> dict[str, list[str]]:
    """prompt -> its decomposed questions, for the prompts of ``path`` that have them (the judge asks each one
    and averages, paper B.2); prompts without questions get the single caption question."""
    report = Report("fail")
    return {text: qs for _, text, qs in _prompt_rows(Path(path), report) if qs}
