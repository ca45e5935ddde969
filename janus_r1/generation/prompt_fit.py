"""Answers meant as prompts: Ask's text fed to a generator must fit the 200-token caption budget the model was
trained on (``Janus.prompt_ids`` refuses a longer prompt). An answer asked for with a budget stops decoding at
about that length and, when it would not fit, ends at its last whole sentence that does (else its last whole
word) -- a prompt cut mid-sentence reads worse than a shorter one."""

from __future__ import annotations

import dataclasses
import re

from ..model.vocabulary import t2i_prompt
from .checks import check_int
from .facade import Janus

_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")
_WORD_END = re.compile(r"\S(?=\s|$)")


def check_budget(budget) -> int | None:
    """``None`` or 0: no budget; else the prompt's token budget, template included."""
    if budget is None:
        return None
    return check_int("prompt_budget", budget, 0) or None


def prompt_tokens(j: Janus, text: str) -> int:
    """Tokens of ``text`` as a text-to-image prompt, template included (what ``Janus.prompt_ids`` counts)."""
    return len(j.vocab.encode_with_bos(t2i_prompt(text)))


def answer_cap(j: Janus, max_new_tokens: int, budget: int) -> int:
    """At most the answer tokens a prompt of ``budget`` tokens holds next to its template."""
    return max(1, min(int(max_new_tokens), budget - prompt_tokens(j, "")))


def fit_text(j: Janus, text: str, budget: int) -> str:
    """``text`` itself when it fits a ``budget``-token prompt; else its longest prefix that fits and ends a
    sentence, or failing that a word."""
    if prompt_tokens(j, text) <= budget:
        return text
    for pattern in (_SENTENCE_END, _WORD_END):
        ends = [m.end() for m in pattern.finditer(text)]
        for end in reversed(ends):
            cut = text[:end].strip()
            if cut and prompt_tokens(j, cut) <= budget:
                return cut
    return ""


def fit_answers(j: Janus, answers: list, budget: int) -> list:
    """Each :class:`~.ask.Answer` whose text would not fit a ``budget``-token prompt, or was cut at the length
    limit, ends at its last whole sentence that fits; ``shortened`` says so."""
    out = []
    for a in answers:
        text = fit_text(j, a.text, budget)
        if not a.finished and text == a.text:  # cut mid-sentence by the length limit: end at a whole sentence
            ends = [m.end() for m in _SENTENCE_END.finditer(text)]
            text = text[: ends[-1]].strip() if ends else text
        out.append(dataclasses.replace(a, text=text, shortened=text != a.text))
    return out
