"""``janus-r1 build-data``: the paper's data-building stage (spec §3.1) -- prompts -> M images per prompt from
several image sources -> a judge's score S and a reason per image -> the label files ``train-sft`` reads.

Pipeline (every step resumable; a killed run started again continues and writes no duplicate):

1. **Prompts** from a text or JSONL file (``janus_r1.batch.read_prompts``; prompt i has ``promptid`` i). With
   ``--expand openai:URL?model=NAME`` each short prompt is rewritten into a long one (3-5 sentences naming colour,
   shape, texture, spatial relations) by a chat server, with the paper's instruction and ``Short:``/``Long:``
   few-shot examples. The prompt list is kept in ``OUT/prompts.jsonl`` so a resumed run uses the same texts.
2. **Images**, per source:

   * ``--engine [NAME=]MODEL`` -- the engine draws M images per prompt (plain text-to-image, the paper's sampling
     defaults) with ``janus-r1 batch``'s machinery, data-parallel under ``accelerate launch`` / ``torchrun``, into
     ``OUT/images/NAME/`` (written atomically per prompt);
   * ``--folder [NAME=]DIR`` -- images made by another generator, in the GenEval layout that ``janus-r1 batch``
     itself writes: ``DIR/<promptid:05d>/samples/*.png`` (or .jpg/.jpeg/.webp; every image of the folder is
     used, in name order). An optional ``DIR/<promptid:05d>/metadata.jsonl`` whose ``prompt`` differs from the
     prompt (short or long) is an error -- a folder made from another prompt file would label wrong pairs.

3. **Scores and reasons** from any judge the trainer accepts (``make_reward``: ``openai:``, ``vlm:``, ``self:PATH``
   and whatever specs it learns later): S = P(yes)/(P(yes)+P(no)) for the paper's question, then a short reason
   from the same judge asked to justify the verdict S implies (so the reason agrees with S), in the released form
   ``"Yes, ..."`` / ``"No, ... Reason: ..."``, and the released ``state`` code. A judge with its own
   ``explain(images, prompts, scores) -> list[str]`` or ``judge(images, prompts) -> [(S, reason)]`` method (a rule
   judge) supplies its reasons itself.
4. **Output**: one label file per source, ``OUT/<NAME>_<thre>.jsonl`` (or ``.parquet``), one row per prompt,
   ``{"promptid", "prompt", "data": [{"id", "img_path", "reason", "prob", "state"}]}`` with the images sorted by
   S descending (the released files' form, spec §3.1), plus ``OUT/summary.json``.

Editing data (``--edit META.jsonl``): each ``{"sample_id", "text", "input", "output"}`` pair is scored with the
two questions of spec §4.7 and kept only if S_follow >= thre and S_preserve >= thre (paper: 0.7), into
``OUT/edit_<thre>.jsonl`` in the editing SFT format.

Resume: scored rows go to a journal ``OUT/.journal/<NAME>.jsonl``, one complete line per prompt, flushed and
fsynced; on start a torn last line (a kill mid-write) is cut off and the prompts already there are skipped. The
label files are rewritten from the journal atomically at the end of every run, so they never hold a half row.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import JanusR1Error

EXPAND_INSTRUCTION = (
    "Please generate the long prompt version of the short one according to the given examples. Long prompt version "
    "should consist of 3 to 5 sentences. Long prompt version must sepcify the color, shape, texture or spatial "
    "relation of the included objects. DO NOT generate sentences that describe any atmosphere.")
# The paper's few-shot pairs are not released; these follow its rule (3-5 sentences, colour/shape/texture/space).
EXPAND_EXAMPLES = [
    ("a cat on a sofa",
     "A small ginger cat with short, striped fur lies curled up on a sofa. The sofa is upholstered in dark green "
     "velvet with a smooth, slightly shiny texture. The cat rests on the left cushion, its white paws tucked under "
     "its chest. A round beige pillow leans against the armrest to the right of the cat."),
    ("two apples and a knife",
     "Two round apples sit side by side on a light wooden cutting board. The apple on the left is glossy red and "
     "the one on the right is pale green with a matte skin. A steel kitchen knife with a black plastic handle lies "
     "in front of the apples, its blade pointing to the right."),
]
REASON_QUESTION = ('Does this image match the description "{caption}"? The answer is {answer}. '
                   "Give the reason in one short sentence.")
YES_DEFAULT = "the image matches the description."
NO_PREFIX = "the image does not match the description. Reason: "
NO_DEFAULT = "it does not show what the description asks for."
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


# --- prompts -------------------------------------------------------------------------------------------------

def expansion_message(short: str, examples=EXPAND_EXAMPLES) -> str:
    """The user message for one short prompt: the paper's instruction, the Short:/Long: pairs, the open pair."""
    shots = "\n\n".join(f"Short: {s}\nLong: {long}" for s, long in examples)
    return f"{EXPAND_INSTRUCTION}\n\n{shots}\n\nShort: {short.strip()}\nLong:"


def clean_expansion(text: str) -> str:
    """The long prompt out of a chat answer: no ``Long:`` label, nothing after a following ``Short:``, one line."""
    text = re.split(r"\n\s*Short\s*:", text or "")[0]
    text = re.sub(r"^\s*Long\s*:\s*", "", text.strip())
    return " ".join(text.split())


def _chat(spec: str, timeout: float = 120.0, retries: int = 5):
    """An :class:`OpenAIJudge` used as a plain chat client (its transport, retries, key and ``?model=``)."""
    kind, _, arg = spec.partition(":")
    if kind != "openai" or not arg:
        raise JanusR1Error(f"--expand needs an OpenAI-protocol server, openai:URL?model=NAME (got {spec!r})")
    from .served_judge import OpenAIJudge, parse_openai_spec

    base, opts = parse_openai_spec(arg)
    return OpenAIJudge(base, timeout=timeout, retries=retries, **opts)


def chat_text(client, content: list[dict], max_tokens: int, temperature: float = 0.0) -> str:
    payload = {"model": client.served_model(), "messages": [{"role": "user", "content": content}],
               "max_tokens": max_tokens, "temperature": temperature}
    answer = client._call("/chat/completions", payload)
    try:
        text = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise JanusR1Error(f"chat server {client.base}: no choices[0].message.content in its answer: "
                           f"{json.dumps(answer)[:300]}") from None
    return text if isinstance(text, str) else ""


@dataclass
class Prompt:
    promptid: int
    prompt: str  # the text the images are drawn for and judged against (the long one after expansion)
    short: str
    where: str  # file:line of the prompt file
    questions: list[str] | None = None


def read_prompt_file(path: str) -> list[Prompt]:
    from ..batch import read_prompts
    from .data import Report, _questions

    items = read_prompts(path)
    jsonl = Path(path).suffix.lower() in (".jsonl", ".json")
    lines = [n for n, line in enumerate(Path(path).read_text(encoding="utf-8-sig").splitlines(), 1)
             if line.strip() and (jsonl or not line.strip().startswith("#"))]
    out = []
    for it, n in zip(items, lines):
        where = f"{path}:{n}"
        qs = _questions(it.meta, where, Report("fail")) if jsonl else None
        out.append(Prompt(it.index, it.prompt.strip(), it.prompt.strip(), where, qs))
    return out


def expand_prompts(prompts: list[Prompt], spec: str, out: Path, quiet: bool = False) -> list[Prompt]:
    """Rewrite each short prompt into a long one (paper §3.1), cached in ``OUT/prompts.jsonl`` for resumes."""
    cache = out / "prompts.jsonl"
    done = {r["promptid"]: r for r in _journal_rows(cache) if r.get("short") is not None}
    todo = [p for p in prompts if p.promptid not in done or done[p.promptid]["short"] != p.short]
    if todo:
        client = _chat(spec)
        from concurrent.futures import ThreadPoolExecutor

        def one(p: Prompt) -> dict:
            text = clean_expansion(chat_text(client, [{"type": "text", "text": expansion_message(p.short)}], 400))
            if not text:
                raise JanusR1Error(f"{p.where}: the expansion server returned no long prompt for {p.short[:60]!r}")
            return {"promptid": p.promptid, "short": p.short, "prompt": text}

        with _Journal(cache) as journal, ThreadPoolExecutor(min(client.concurrency, len(todo))) as pool:
            for row in _bar(pool.map(one, todo), len(todo), "expanding prompts", quiet):
                journal.append(row)
                done[row["promptid"]] = row
    for p in prompts:
        p.prompt = done[p.promptid]["prompt"]
    return prompts


# --- journal (resumable, no torn rows) -----------------------------------------------------------------------

def _journal_rows(path: Path) -> list[dict]:
    """The complete rows of a journal; a torn tail (a kill mid-write) is cut off the file."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    rows, good = [], 0
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            rows.append(json.loads(line))
        except ValueError:
            break
        good += len(line)
    if good < len(raw):
        with open(path, "r+b") as f:
            f.truncate(good)
    return rows


class _Journal:
    """Append complete JSON lines, each flushed and fsynced before the next prompt starts."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(self.path, "ab")
        return self

    def append(self, row: dict) -> None:
        self.f.write((json.dumps(row, ensure_ascii=False) + "\n").encode())
        self.f.flush()
        os.fsync(self.f.fileno())

    def __exit__(self, *exc) -> None:
        self.f.close()


def _bar(it, total: int, desc: str, quiet: bool):
    """A tqdm bar on stderr (``it`` None: a bar updated by hand); with ``quiet``, ``it`` itself (None: no bar)."""
    if quiet:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, unit="prompt", file=sys.stderr, dynamic_ncols=True)


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


# --- scores, reasons, states ---------------------------------------------------------------------------------

_LEAD = re.compile(r"^\s*(yes|no)\b[\s,.:;!-]*", re.IGNORECASE)


def released_reason(yes: bool, text: str) -> str:
    """The released data's form: ``"Yes, <why>"`` or ``"No, the image does not match ... Reason: <why>"``."""
    body = " ".join((text or "").split())
    body = _LEAD.sub("", body)
    if yes:
        return "Yes, " + (body or YES_DEFAULT)
    if "reason:" in body.lower():
        return "No, " + body
    return "No, " + NO_PREFIX + (body or NO_DEFAULT)


def state_code(yes: bool, prob: float, thre: float) -> int:
    """The released codes (spec §3.1): 4 Yes & S >= thre, 3 Yes & S < thre, 1 No & S >= thre, 0 No & S < thre."""
    return (4 if prob >= thre else 3) if yes else (1 if prob >= thre else 0)


def explain(judge, images: list, prompts: list[str], scores: list[float], seed: int = 0) -> list[str]:
    """A short reason per image from the same judge, in the released form, agreeing with S (yes iff S >= 0.5)."""
    yes = [s >= 0.5 for s in scores]
    own, pairs = getattr(judge, "explain", None), getattr(judge, "judge", None)
    if callable(own):
        texts = list(own(images, prompts, scores))
    elif callable(pairs):  # a rule judge's (S, reason) per image
        texts = [reason for _, reason in pairs(images, prompts)]
    else:
        from .judges import JanusJudge
        from .rewards import VLMJudge
        from .served_judge import OpenAIJudge

        if isinstance(judge, OpenAIJudge):
            texts = _explain_openai(judge, images, prompts, yes)
        elif isinstance(judge, VLMJudge):
            texts = [_explain_vlm(judge, im, p, y) for im, p, y in zip(images, prompts, yes)]
        elif isinstance(judge, JanusJudge):
            texts = _explain_janus(judge, images, prompts, yes, seed)
        else:
            texts = [""] * len(images)
    return [released_reason(y, t) for y, t in zip(yes, texts)]


def _reason_question(prompt: str, yes: bool) -> str:
    return REASON_QUESTION.format(caption=prompt, answer="yes" if yes else "no")


def _explain_openai(judge, images, prompts, yes) -> list[str]:
    from concurrent.futures import ThreadPoolExecutor

    from .served_judge import png_data_url

    def one(job):
        im, p, y = job
        content = [{"type": "image_url", "image_url": {"url": png_data_url(im)}},
                   {"type": "text", "text": _reason_question(p, y)}]
        return chat_text(judge, content, 64)

    judge.served_model()
    with ThreadPoolExecutor(max(1, min(judge.concurrency, len(images)))) as pool:
        return list(pool.map(one, zip(images, prompts, yes)))


def _explain_vlm(judge, image, prompt: str, yes: bool) -> str:
    import torch

    content = [{"type": "image"}, {"type": "text", "text": _reason_question(prompt, yes)}]
    text = judge.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    inputs = judge.processor(images=[image], text=text, return_tensors="pt").to(judge.model.device)
    with torch.no_grad():
        ids = judge.model.generate(**inputs, max_new_tokens=48, do_sample=False)
    tok = getattr(judge.processor, "tokenizer", judge.processor)
    return tok.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def _explain_janus(judge, images, prompts, yes, seed: int, tries: int = 3) -> list[str]:
    """The Janus judge's own reflection (spec §2.2); its first token is sampled, so rows whose sampled verdict
    disagrees with S are drawn again (other seeds), and left to the default wording if they never agree."""
    from ..generation import tasks

    texts = [""] * len(images)
    todo = list(range(len(images)))
    for t in range(tries):
        if not todo:
            break
        js = tasks.judge(judge.janus, [images[i] for i in todo], [prompts[i] for i in todo], max_reflection=64,
                         seed=seed + t)
        left = []
        for i, jd in zip(todo, js):
            if (jd.verdict == "Yes") == yes[i]:
                texts[i] = jd.reflection
            else:
                left.append(i)
        todo = left
    return texts


# --- the run -------------------------------------------------------------------------------------------------

def _rel(path: Path, out: Path) -> str:
    """Paths inside OUT are stored relative (the data set moves as one folder), others absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(out.resolve()))
    except ValueError:
        return str(path)


def _open_image(path: Path):
    from .data import open_image

    return open_image(str(path))


def score_source(src: Source, root: Path, prompts: list[Prompt], judge, out: Path, thre: float,
                 batch: int, seed: int, quiet: bool) -> list[dict]:
    """Judge every image of one source, one journal row per prompt; returns all rows (old and new)."""
    journal_path = out / ".journal" / f"{src.name}.jsonl"
    rows = {r["promptid"]: r for r in _journal_rows(journal_path)}
    by_id = {p.promptid: p for p in prompts}
    for pid, r in rows.items():
        if pid not in by_id or r["prompt"] != by_id[pid].prompt:
            where = by_id[pid].where if pid in by_id else "the prompt file"
            raise JanusR1Error(f"{journal_path}: prompt {pid} was labelled for another text than {where}; this "
                               "--out belongs to another prompt file (or --expand changed): use a new --out")
    todo = [p for p in prompts if p.promptid not in rows and source_images(root, p.promptid)]
    with _Journal(journal_path) as journal:
        pending: list[tuple[Prompt, list[Path]]] = []
        bar = _bar(None, len(todo), f"judging {src.name}", quiet)

        def flush():
            if not pending:
                return
            ims, caps, owners = [], [], []
            for p, files in pending:
                for f in files:
                    try:
                        ims.append(_open_image(f))
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
                if bar is not None:
                    bar.update(1)
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
        if bar is not None:
            bar.close()
    return [rows[k] for k in sorted(rows)]


def write_labels(path: Path, rows: list[dict]) -> None:
    """The label file, all at once (temp file + rename): JSONL, or Parquet with the same nested columns."""
    from ..outputs import atomic_write_bytes

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


def _fmt_thre(thre: float) -> str:
    return f"{thre:g}"


def _group(world: int):
    import torch.distributed as dist

    if world > 1 and os.environ.get("MASTER_ADDR") and dist.is_available() and not dist.is_initialized():
        import torch

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return dist
    return None


def make_judge(args, questions: dict | None = None):
    """The judge from its spec, exactly as the trainer makes its reward (``make_reward``): every spec the trainer
    learns works here too."""
    from . import rewards

    if args.judge.strip() == "self":
        raise JanusR1Error("--judge self needs a model: give self:PATH (a Janus-Pro / R1 folder or tiny-random)")
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return rewards.make_reward(args.judge, device=device, questions=questions or None)


def build_t2i(args) -> dict:
    from ..batch import PromptItem, barrier_and_summarise, dist_env, run_batch
    from ..outputs import atomic_write_bytes

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
    group = _group(world)
    if args.expand:
        if rank == 0:
            expand_prompts(prompts, args.expand, out, args.quiet)
        if group is not None:
            group.barrier()
        if rank != 0:
            done = {r["promptid"]: r["prompt"] for r in _journal_rows(out / "prompts.jsonl")}
            for p in prompts:
                p.prompt = done[p.promptid]
    if args.expand and judge is not None and getattr(judge, "questions", None):  # re-key to the long prompts
        judge.questions = {p.prompt: p.questions for p in prompts if p.questions}
    for s in sources:
        if s.kind != "engine":
            continue
        from ..api import JanusR1

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
        bar = _bar(None, len(mine), f"drawing {s.name}", args.quiet or rank != 0)
        for k in range(0, len(mine), args.batch_size):  # batch.py's machinery, a batch at a time for the bar
            chunk = mine[k : k + args.batch_size]
            done += run_batch(jr, chunk, root, rank=rank, world=world, seed=args.seed, batch_size=args.batch_size,
                              plain=True, num_images=args.num_images)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        del jr
        barrier_and_summarise(root, items, rank, world, done)
    if rank != 0:
        if group is not None:
            group.destroy_process_group()
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
    if group is not None:
        group.destroy_process_group()
    return summary


# --- editing -------------------------------------------------------------------------------------------------

def read_edit_rows(path: str) -> list[dict]:
    """``{"sample_id", "text", "input", "output"}`` rows; a bad row is one error with its file:line."""
    from .data import Report, _json_rows

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
    from ..outputs import atomic_write_bytes

    rows = read_edit_rows(args.edit)
    judge = make_judge(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    journal_path = out / ".journal" / "edit.jsonl"
    done = {r["sample_id"]: r for r in _journal_rows(journal_path)}
    todo = [r for r in rows if r["sample_id"] not in done]
    bar = _bar(None, len(todo), "judging edits", args.quiet)
    with _Journal(journal_path) as journal:
        for k in range(0, len(todo), args.judge_batch):
            chunk = todo[k : k + args.judge_batch]
            srcs = [_open_image(Path(r["input"])) for r in chunk]
            outs = [_open_image(Path(r["output"])) for r in chunk]
            pairs = judge.score_edit(srcs, outs, [r["text"] for r in chunk])
            for r, (f, pv) in zip(chunk, pairs):
                row = {k2: r[k2] for k2 in ("sample_id", "text", "input", "output")}
                row.update(s_follow=round(float(f), 6), s_preserve=round(float(pv), 6))
                journal.append(row)
                done[r["sample_id"]] = row
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
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
    from ..cli_options import _device, _float_in, _positive_int, _seed

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
