"""Reward models behind one interface: R_QA in [0, 1] per (image, prompt), and (S_flw, S_psv) per edit.

* :class:`JanusJudge` -- a Janus-Pro(-R1) model as judge (paper Fig. 5a): S = P(Yes)/(P(Yes)+P(No)) of the
  engine's own ``tasks.score`` (the same context and logits the introspective loop uses).
* :class:`OpenAIJudge` (``openai:URL``) -- a judge served by vLLM / SGLang / any OpenAI-compatible
  ``/chat/completions`` endpoint: the image goes as a base64 PNG data URL, the answer is one token with
  ``logprobs``/``top_logprobs`` and S = P(yes)/(P(yes)+P(no)) over the returned top first tokens. This is how the
  paper's InternVL2.5-26B judge is meant to run: one server, not a 26B copy per training rank.
* :class:`VLMJudge` (``vlm:PATH``) -- any transformers vision-language model in-process (no remote code), the
  full first-token softmax; bf16 on a GPU.
* :class:`HTTPJudge` -- the deprecated ``http:URL`` protocol of our own; :class:`CallableJudge` -- a function.

Question decomposition (paper App. B.2): a prompt with questions (``questions={prompt: [...]}``, read from the
prompt file's ``questions`` field, or a ``decompose`` function) has each question asked separately about the image
and R_QA is their **mean**; a prompt without questions gets the one caption question (§4.3, the released scorer).
A failed call is retried with exponential backoff, then raised as :class:`JanusR1Error` -- never a silent 0 (R6).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from ..errors import JanusR1Error
from .judges import (  # noqa: F401  (re-exported: the reward interface lives in judges.py)
    ANSWER_SUFFIX,
    EDIT_FOLLOW,
    EDIT_PREAMBLE,
    EDIT_PRESERVE,
    QUESTION_WITH_CAPTION,
    T2I_QUESTION,
    CallableJudge,
    JanusJudge,
    QuestionJudge,
    Reward,
    _variant_ids,
    yes_no_question,
    yes_no_score,
)


def judge_dtype(device) -> torch.dtype:
    """bf16 on a GPU (a 26B judge in fp32 is ~104 GB; the judges ship in bf16), fp32 on the CPU."""
    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


class VLMJudge(QuestionJudge):
    """Any ``AutoModelForImageTextToText`` + ``AutoProcessor`` with a chat template (bf16 on a GPU by default)."""

    def __init__(self, path: str, device: str = "cpu", dtype: torch.dtype | None = None,
                 decompose: Callable[[str], list[str]] | None = None, model=None, processor=None,
                 questions: dict[str, list[str]] | None = None) -> None:
        super().__init__(questions, decompose)
        if model is None:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            from ..model.compat import dtype_kwargs

            dtype = judge_dtype(device) if dtype is None else dtype
            try:
                processor = AutoProcessor.from_pretrained(path)
                model = AutoModelForImageTextToText.from_pretrained(path, **dtype_kwargs(dtype)).to(device).eval()
            except Exception as e:
                raise JanusR1Error(f"cannot load the reward VLM {path!r}: {type(e).__name__}: {e}") from e
        self.model, self.processor = model, processor
        tok = getattr(processor, "tokenizer", processor)
        self.yes, self.no = _variant_ids(tok, ("yes", "Yes", "YES")), _variant_ids(tok, ("no", "No", "NO"))

    @torch.no_grad()
    def _ask(self, images: list, question: str) -> float:
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": question}]
        text = self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        inputs = self.processor(images=images, text=text, return_tensors="pt").to(self.model.device)
        logits = self.model(**inputs).logits[0, -1]
        return float(yes_no_score(logits, self.yes, self.no))


class HTTPJudge(Reward):
    """Deprecated (``http:URL``; use ``openai:URL``): POST ``{"task": "t2i", "images": [png base64], "prompts"}``
    -> ``{"scores": [...]}``; edits: ``{"task": "edit", "sources", "outputs", "instructions"}`` -> ``[[f, p]]``."""

    def __init__(self, url: str, retries: int = 5, timeout: float = 120.0, backoff: float = 1.0,
                 budget: float | None = None) -> None:
        warnings.warn("the http: reward protocol is deprecated: serve the judge with vLLM or SGLang and use "
                      "openai:URL (docs/training.md)", DeprecationWarning, stacklevel=2)
        self.url, self.retries, self.timeout, self.backoff, self.budget = url, retries, timeout, backoff, budget

    def _post(self, payload: dict) -> list:
        import time

        from .served_judge import request_json

        deadline = None if self.budget is None else time.monotonic() + self.budget
        scores = request_json(self.url, payload, self.timeout, self.retries, self.backoff, None, deadline).get("scores")
        if not isinstance(scores, list):
            raise JanusR1Error(f"reward endpoint {self.url} answered without a 'scores' list")
        return scores

    def score(self, images, prompts):
        return self._post({"task": "t2i", "images": [_b64(i) for i in images], "prompts": list(prompts)})

    def score_edit(self, sources, outputs, instructions):
        return [tuple(x) for x in self._post({"task": "edit", "sources": [_b64(i) for i in sources],
                                               "outputs": [_b64(i) for i in outputs],
                                               "instructions": list(instructions)})]


def _b64(image) -> str:
    from .served_judge import png_data_url

    return png_data_url(image).split(",", 1)[1]


def make_reward(spec: str, ref_janus=None, retries: int = 5, timeout: float = 120.0, device: str = "cpu",
                questions: dict[str, list[str]] | None = None, budget: float | None = None) -> Reward:
    """``self`` (the frozen reference model judges), ``self:PATH``, ``vlm:PATH``, ``openai:URL?model=NAME`` (a
    served judge), ``shapes:`` (the shapes world's rule judge), or the deprecated ``http:URL``. ``questions`` maps
    a prompt to its decomposed questions; ``budget``: seconds a served judge may spend on one score call's
    requests and retries, all together."""
    if spec == "self":
        if ref_janus is None:
            raise JanusR1Error("reward 'self' needs the reference model")
        judge = JanusJudge(ref_janus)
        judge.uses_reference = True  # a sharded reference is gathered while it judges
        return judge
    kind, _, arg = spec.partition(":")
    if kind == "self" and arg:
        from ..generation.tasks import Janus
        from ..model.loading import load_model

        model, vocab = load_model(arg, device=device)
        return JanusJudge(Janus(model.eval(), vocab))
    if kind == "vlm" and arg:
        return VLMJudge(arg, device=device, questions=questions)
    if kind == "openai" and arg:
        from .served_judge import OpenAIJudge, parse_openai_spec

        base, opts = parse_openai_spec(arg)
        judge = OpenAIJudge(base, timeout=timeout, retries=retries, questions=questions, budget=budget, **opts)
        judge.remote = True  # scored in a thread while the log-probs are computed (trainer._overlaps)
        return judge
    if kind == "shapes":  # the shapes world's rule judge (shapes.py): pixels in, S and a reason out
        from .shapes import make_shapes_judge

        return make_shapes_judge(arg)
    if kind in ("http", "https") and arg:
        url = spec if arg.startswith("//") else arg
        judge = HTTPJudge(url, retries=retries, timeout=timeout, budget=budget)
        judge.remote = True
        return judge
    raise JanusR1Error(f"unknown reward {spec!r}; use self, self:PATH, vlm:PATH, openai:URL?model=NAME or shapes:")
