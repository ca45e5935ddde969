"""build-data's prompts: the prompt file, and the paper's short -> long expansion through a chat server
(spec §3.1)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ...errors import JanusR1Error
from .journal import Journal, bar, journal_rows

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
    from ..served_judge import OpenAIJudge, parse_openai_spec

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
    from ...batch import read_prompts
    from ..data import Report, _questions

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
    done = {r["promptid"]: r for r in journal_rows(cache) if r.get("short") is not None}
    todo = [p for p in prompts if p.promptid not in done or done[p.promptid]["short"] != p.short]
    if todo:
        client = _chat(spec)
        from concurrent.futures import ThreadPoolExecutor

        def one(p: Prompt) -> dict:
            text = clean_expansion(chat_text(client, [{"type": "text", "text": expansion_message(p.short)}], 400))
            if not text:
                raise JanusR1Error(f"{p.where}: the expansion server returned no long prompt for {p.short[:60]!r}")
            return {"promptid": p.promptid, "short": p.short, "prompt": text}

        with Journal(cache) as journal, ThreadPoolExecutor(min(client.concurrency, len(todo))) as pool:
            for row in bar(pool.map(one, todo), len(todo), "expanding prompts", quiet):
                journal.append(row)
                done[row["promptid"]] = row
    for p in prompts:
        p.prompt = done[p.promptid]["prompt"]
    return prompts
