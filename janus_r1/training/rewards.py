"""Reward models behind one interface: R_QA in [0, 1] per (image, prompt), and (S_flw, S_psv) per edit.

* :class:`JanusJudge` -- a Janus-Pro(-R1) model as judge (paper Fig. 5a): S = P(Yes)/(P(Yes)+P(No)) of the
  engine's own ``tasks.score`` (the same context and logits the introspective loop uses).
* :class:`VLMJudge` -- any transformers vision-language model (no remote code): the first-token distribution of a
  yes/no question, S = P(yes-variants)/(P(yes)+P(no)) over the *full* softmax (no sampling warper), with an
  optional ``decompose(prompt) -> [questions]`` hook whose per-question scores are averaged (paper B.2, DSG-style).
* :class:`HTTPJudge` -- an endpoint; :class:`CallableJudge` -- any Python function.

A failed call is retried, then raised as :class:`JanusR1Error` -- never a silent 0 (bug R6).
"""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.error
import urllib.request
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


class VLMJudge(Reward):
    """Any ``AutoModelForImageTextToText`` + ``AutoProcessor`` with a chat template."""

    def __init__(self, path: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 decompose: Callable[[str], list[str]] | None = None, model=None, processor=None) -> None:
        if model is None:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            try:
                processor = AutoProcessor.from_pretrained(path)
                model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype).to(device).eval()
            except Exception as e:
                raise JanusR1Error(f"cannot load the reward VLM {path!r}: {type(e).__name__}: {e}") from e
        self.model, self.processor, self.decompose = model, processor, decompose
        tok = getattr(processor, "tokenizer", processor)
        self.yes, self.no = _variant_ids(tok, ("yes", "Yes", "YES")), _variant_ids(tok, ("no", "No", "NO"))

    @torch.no_grad()
    def _ask(self, images: list, question: str) -> float:
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": question}]
        text = self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        inputs = self.processor(images=images, text=text, return_tensors="pt").to(self.model.device)
        logits = self.model(**inputs).logits[0, -1]
        return float(yes_no_score(logits, self.yes, self.no))

    def score(self, images, prompts):
        out = []
        for im, p in zip(images, prompts):
            qs = self.decompose(p) if self.decompose else [QUESTION_WITH_CAPTION.format(caption=p)]
            out.append(sum(self._ask([im], q) for q in qs) / len(qs))
        return out

    def score_edit(self, sources, outputs, instructions):
        return [(self._ask([a, b], EDIT_FOLLOW.format(instruction=i)), self._ask([a, b], EDIT_PRESERVE.format(instruction=i)))
                for a, b, i in zip(sources, outputs, instructions)]


def _png_b64(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


class HTTPJudge(Reward):
    """POST ``{"task": "t2i", "images": [png base64], "prompts": [...]}`` -> ``{"scores": [...]}``;
    edits: ``{"task": "edit", "sources", "outputs", "instructions"}`` -> ``{"scores": [[flw, psv], ...]}``."""

    def __init__(self, url: str, retries: int = 5, timeout: float = 120.0, backoff: float = 1.0) -> None:
        self.url, self.retries, self.timeout, self.backoff = url, retries, timeout, backoff

    def _post(self, payload: dict) -> list:
        body = json.dumps(payload).encode()
        last = ""
        for attempt in range(self.retries + 1):
            try:
                req = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    scores = json.loads(r.read().decode())["scores"]
                if not isinstance(scores, list):
                    raise ValueError("'scores' is not a list")
                return scores
            except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as e:
                last = f"{type(e).__name__}: {e}"
                if attempt < self.retries:
                    time.sleep(self.backoff * 2**attempt)
        raise JanusR1Error(f"reward endpoint {self.url} failed after {self.retries + 1} tries ({last}); "
                           "refusing to train on a made-up reward")

    def score(self, images, prompts):
        return self._post({"task": "t2i", "images": [_png_b64(i) for i in images], "prompts": list(prompts)})

    def score_edit(self, sources, outputs, instructions):
        return [tuple(x) for x in self._post({"task": "edit", "sources": [_png_b64(i) for i in sources],
                                               "outputs": [_png_b64(i) for i in outputs],
                                               "instructions": list(instructions)})]


def make_reward(spec: str, ref_janus=None, retries: int = 5, timeout: float = 120.0, device: str = "cpu") -> Reward:
    """``self`` (the frozen reference model judges), ``self:PATH``, ``vlm:PATH``, ``http(s)://URL`` or ``http:URL``."""
    if spec == "self":
        if ref_janus is None:
            raise JanusR1Error("reward 'self' needs the reference model")
        return JanusJudge(ref_janus)
    kind, _, arg = spec.partition(":")
    if kind == "self" and arg:
        from ..generation.tasks import Janus
        from ..model.loading import load_model

        model, vocab = load_model(arg, device=device)
        return JanusJudge(Janus(model.eval(), vocab))
    if kind == "vlm" and arg:
        return VLMJudge(arg, device=device)
    if kind in ("http", "https") and arg:
        url = spec if arg.startswith("//") else arg
        return HTTPJudge(url, retries=retries, timeout=timeout)
    raise JanusR1Error(f"unknown reward {spec!r}; use self, self:PATH, vlm:PATH or http:URL")
