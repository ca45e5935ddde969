"""The text the nodes show and output: scores rounded to 3 decimals for reading (FLOAT outputs stay exact)."""

from __future__ import annotations

RULES = {"last": "last", "best": "best score"}  # the engine's final_rule -> the widget's words


def score(s: float | None) -> str:
    return "n/a" if s is None else f"{s:.3f}"


def final_line(r) -> str:
    """Which attempt became the output and by which rule, e.g. '=> final: image 2 of 3 (best score, S=0.212)';
    'accepted' when the paper's rule stopped at a Yes, 'the input' when the caller's image was kept."""
    a = r.final_attempt
    why = (
        "accepted" if r.final_rule == "last" and a.verdict == "Yes" else RULES.get(r.final_rule, r.final_rule)
    )
    where = ", the input" if a.source == "input" else ""
    return f"=> final: image {a.round} of {len(r.attempts)} ({why}{where}, S={score(a.score)})"


VERDICT_NOTE = (
    "note: Yes/No is the answer the model wrote, sampled (another seed may write the other); S = P(Yes) / "
    "(P(Yes) + P(No)) is computed, not sampled. A Yes with S < 0.5 (or a No with S >= 0.5) is the less likely "
    "answer, drawn by chance."
)


def verdict_note(judgements) -> str:
    """The note above, as a last line, when some sampled verdict disagrees with its S (else nothing): the node
    explains "Yes S=0.352" where the artist reads it, not only in the docs."""
    odd = any(
        j is not None and j.score is not None and (j.verdict == "Yes") != (j.score >= 0.5) for j in judgements
    )
    return f"\n{VERDICT_NOTE}" if odd else ""


def reasoning(results, header: str = "sample") -> str:
    """Each sample's rounds (verdict, S, reflection) and its final line; a header per sample when several."""
    parts = [
        (f"== {header} {n} ==\n" if len(results) > 1 else "") + f"{r.reasoning()}\n{final_line(r)}"
        for n, r in enumerate(results, 1)
    ]
    return "\n\n".join(parts) + verdict_note([a.judgement for r in results for a in r.attempts])


INDEX_NOTE = "images counted from 0, as best_index and Image From Batch count"


def judge_report(judgements, with_reason: bool) -> str:
    """'image 0: S=0.912  Yes  reason' per image, then the ranking. Images are counted from 0, the way the node's
    ``best_index`` output and core Image From Batch count (one convention, said once on the report)."""
    lines = [
        f"image {i}: S={score(j.score)}  {j.verdict}  {j.reflection.strip() if with_reason else ''}".rstrip()
        for i, j in enumerate(judgements)
    ]
    order = ranking([j.score for j in judgements])
    if len(order) > 1:
        lines.append("ranking (best first): " + ", ".join(f"image {i}" for i in order) + f" ({INDEX_NOTE})")
    return "\n".join(lines) + verdict_note(judgements)


def ranking(scores: list[float]) -> list[int]:
    """Indices best first; ties keep input order."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def answers(items, prompt_budget: int = 0) -> str:
    """The answers as shown on the node: the text alone for one image, else a header per image; an answer cut
    at max_new_tokens, or shortened to fit the prompt budget, says so."""

    def one(a) -> str:
        if getattr(a, "shortened", False):
            return a.text + f" [shortened to its last whole sentence within the {prompt_budget}-token prompt budget]"
        return a.text + ("" if a.finished else " [...] (cut at max_new_tokens)")

    if len(items) == 1:
        return one(items[0])
    return "\n\n".join(f"== image {n} ==\n{one(a)}" for n, a in enumerate(items, 1))
