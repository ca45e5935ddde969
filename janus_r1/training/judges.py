"""The judge interface and the question-decomposed judge that the in-process and served judges share.

Kept apart from :mod:`.rewards` (the reward factory) and :mod:`.served_judge` (the HTTP transport) so that
neither imports the other: rewards -> served_judge -> judges, and rewards -> judges.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import JanusR1Error

T2I_QUESTION = "Does this image match the description? Please directly respond with yes or no"
QUESTION_WITH_CAPTION = 'Does this image match the description "{caption}", please directly respond with yes or no.'
EDIT_PREAMBLE = ("Please evaluate the following image edit based on the provided instructions:\n\nImage-1: <image>\n"
                 "Image-2: <image>\nThe first image is the original image and the second image is the edited image\n"
                 "Editing Instructions: {instruction}\n")
EDIT_FOLLOW = EDIT_PREAMBLE + "Does the edited image follow the editing instructions? Please directly respond with yes or no."
EDIT_PRESERVE = EDIT_PREAMBLE + ("Does the area of the edited image that is unrelated to the editing instructions "
                                 "remain consistent with the original image? Please directly respond with yes or no.")


class Reward:
    def score(self, images, prompts: list[str]) -> list[float]:
        raise NotImplementedError

    def score_edit(self, sources, outputs, instructions: list[str]) -> list[tuple[float, float]]:
        raise JanusR1Error(f"{type(self).__name__} cannot score edits; use a vlm: or http: reward for editing")


class CallableJudge(Reward):
    def __init__(self, fn: Callable, edit_fn: Callable | None = None) -> None:
        self.fn, self.edit_fn = fn, edit_fn

    def score(self, images, prompts):
        return list(self.fn(images, prompts))

    def score_edit(self, sources, outputs, instructions):
        if self.edit_fn is None:
            return super().score_edit(sources, outputs, instructions)
        return list(self.edit_fn(sources, outputs, instructions))


class JanusJudge(Reward):
    """A Janus model judging with the engine's own scorer (frozen; typically the reference model)."""

    def __init__(self, janus) -> None:
        self.janus = janus

    def score(self, images, prompts):
        from ..generation import tasks

        return [jd.score for jd in tasks.score(self.janus, list(images), list(prompts))]


ANSWER_SUFFIX = " Please directly respond with yes or no."


def yes_no_question(question: str) -> str:
    """A decomposed question ("Is the dog red?") with the paper's instruction to answer with one word."""
    q = question.strip()
    return q if "yes or no" in q.lower() else q + ANSWER_SUFFIX


def yes_no_score(logits: torch.Tensor, yes_ids: list[int], no_ids: list[int]) -> torch.Tensor:
    """S = P(yes)/(P(yes)+P(no)) from first-token logits (..., V); the probabilities of the variants are summed."""
    p = torch.softmax(logits.float(), dim=-1)
    py, pn = p[..., yes_ids].sum(-1), p[..., no_ids].sum(-1)
    return py / (py + pn).clamp_min(1e-12)


def _variant_ids(tokenizer, words: tuple[str, ...]) -> list[int]:
    ids = set()
    for w in words:
        for text in (w, " " + w):
            enc = tokenizer.encode(text, add_special_tokens=False)
            if len(enc) == 1:
                ids.add(enc[0])
    if not ids:
        raise JanusR1Error(f"the judge's tokenizer has no single token for any of {words}")
    return sorted(ids)


class QuestionJudge(Reward):
    """A judge that answers one yes/no question about some images (``_ask``); decomposition and edits on top."""

    def __init__(self, questions: dict[str, list[str]] | None = None,
                 decompose: Callable[[str], list[str]] | None = None) -> None:
        self.questions, self.decompose = dict(questions or {}), decompose

    def _ask(self, images: list, question: str) -> float:
        raise NotImplementedError

    def _ask_all(self, jobs: list[tuple[list, str]]) -> list[float]:
        return [self._ask(ims, q) for ims, q in jobs]

    def questions_for(self, prompt: str) -> list[str]:
        """The prompt's own questions (paper B.2), else the single caption question."""
        qs = self.decompose(prompt) if self.decompose else self.questions.get(prompt.strip())
        return [yes_no_question(q) for q in qs] if qs else [QUESTION_WITH_CAPTION.format(caption=prompt)]

    def score(self, images, prompts):
        per = [self.questions_for(p) for p in prompts]
        flat = self._ask_all([([im], q) for im, qs in zip(images, per) for q in qs])
        out, pos = [], 0
        for qs in per:  # R_QA = the mean over the prompt's questions
            out.append(sum(flat[pos : pos + len(qs)]) / len(qs))
            pos += len(qs)
        return out

    def score_edit(self, sources, outputs, instructions):
        jobs = [([a, b], t.format(instruction=i)) for a, b, i in zip(sources, outputs, instructions)
                for t in (EDIT_FOLLOW, EDIT_PRESERVE)]
        s = self._ask_all(jobs)
        return [(s[2 * k], s[2 * k + 1]) for k in range(len(jobs) // 2)]
