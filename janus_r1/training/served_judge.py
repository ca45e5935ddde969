"""A judge served over the OpenAI-compatible chat-completions protocol (vLLM, SGLang, LMDeploy, ...).

``openai:http://HOST:PORT/v1?model=NAME`` in a recipe's ``reward``: each yes/no question is one request whose user
message holds the image(s) as base64 PNG ``image_url`` data URLs and the question text; the server returns the
first generated token's ``top_logprobs`` and S = P(yes)/(P(yes)+P(no)) is summed over the yes/no variants among
them. Standard library only (urllib, threads): no client package to install on the training nodes.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPException

from ..errors import JanusR1Error
from .judges import QuestionJudge

IMAGE_SLOT = "<image>"
MAX_PAUSE = 60.0  # seconds between two tries at most: a restarting server (minutes) is polled, not abandoned


def png_data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def request_json(url: str, payload: dict | None, timeout: float, retries: int, backoff: float,
                 headers: dict | None = None, deadline: float | None = None):
    """POST ``payload`` (GET when None) and decode the JSON answer. Connection errors, timeouts, HTTP 408/429/5xx
    are retried ``retries`` times with backoff ``backoff * 2**k`` (at most a minute); another HTTP error or a body that is not JSON
    is raised at once (retrying cannot fix it). Every failure is a :class:`JanusR1Error`.

    ``deadline`` (``time.monotonic()`` seconds): the retry budget. No try starts, and no try waits, past it -- so a
    training step learns of a dead judge within the budget, before the collectives' timeout kills the job with a
    message that names no judge."""
    body = None if payload is None else json.dumps(payload).encode()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    last, t0 = "", time.monotonic()
    tries = 0
    for attempt in range(retries + 1):
        wait = timeout if deadline is None else min(timeout, deadline - time.monotonic())
        if wait <= 0:
            break
        tries += 1
        try:
            with urllib.request.urlopen(urllib.request.Request(url, body, hdrs), timeout=wait) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode("utf-8", "replace")
            if e.code not in (408, 429) and e.code < 500:
                raise JanusR1Error(f"reward server {url} answered HTTP {e.code}: {detail}") from None
            last = f"HTTP {e.code}: {detail}"
        except (urllib.error.URLError, OSError, HTTPException) as e:  # refused, reset, timed out (TimeoutError)
            last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        else:
            try:
                return json.loads(raw)
            except ValueError:
                raise JanusR1Error(f"reward server {url} answered with something that is not JSON: "
                                   f"{raw[:200]!r}") from None
        if attempt < retries:
            pause = min(backoff * 2**attempt, MAX_PAUSE)
            if deadline is not None and time.monotonic() + pause >= deadline:
                break
            time.sleep(pause)
    budget = "" if deadline is None else "; retry budget spent"
    raise JanusR1Error(f"reward server {url} failed after {tries} tries in {time.monotonic() - t0:.1f} s "
                       f"(timeout {timeout} s each; last: {last or 'none'}{budget}); refusing to train on a made-up "
                       "reward")


def first_token_yes_no(top: list, question: str, missing: str = "error") -> float:
    """S from the first generated token's ``top_logprobs`` (OpenAI format: ``[{"token", "logprob"}, ...]``).

    A token counts as yes / no when its text, stripped of whitespace and lower-cased, is ``yes`` / ``no`` (so
    "Yes", " yes", "YES", "\u2581No" from sentencepiece after stripping are all variants); the probabilities of all
    variants are summed. An answer absent from the top N counts as 0 (the released scorer's rule for tokens its
    warper dropped). If *neither* appears, S is undefined: ``missing="error"`` raises, ``"zero"`` returns 0.0.
    """
    py = pn = 0.0
    seen = []
    for t in top:
        tok, lp = t["token"], float(t["logprob"])
        if not isinstance(tok, str) or not math.isfinite(lp) and lp != -math.inf:
            raise TypeError(f"bad top_logprobs entry {t!r}")
        seen.append(tok)
        word = tok.replace("\u2581", " ").replace("\u0120", " ").strip().lower()
        py += math.exp(lp) if word == "yes" else 0.0
        pn += math.exp(lp) if word == "no" else 0.0
    if py + pn > 0:
        return py / (py + pn)
    if missing == "zero":
        return 0.0
    raise JanusR1Error(f"the judge answered neither yes nor no among its top {len(top)} first tokens "
                       f"{seen[:8]} for {question[:80]!r}; check the served chat template, raise top_logprobs, "
                       "or add missing=zero to the reward spec to score such answers 0")


class OpenAIJudge(QuestionJudge):
    """A judge behind an OpenAI-compatible ``{base}/chat/completions`` (vLLM, SGLang, LMDeploy, ...).

    One request per question: a user message with the image(s) as ``image_url`` data URLs and the question text
    (an edit question's ``<image>`` slots are where its two images go), ``max_tokens=1``, ``temperature=1`` (so
    the returned log-probs are the model's own softmax whatever the server's convention), ``logprobs=true``,
    ``top_logprobs=N``. Requests run ``concurrency`` at a time so the server can batch them.
    """

    def __init__(self, base_url: str, model: str | None = None, top_logprobs: int = 20, timeout: float = 120.0,
                 retries: int = 5, backoff: float = 1.0, concurrency: int = 16, missing: str = "error",
                 questions: dict[str, list[str]] | None = None,
                 decompose: Callable[[str], list[str]] | None = None, budget: float | None = None) -> None:
        super().__init__(questions, decompose)
        if missing not in ("error", "zero"):
            raise JanusR1Error(f"missing must be error or zero (got {missing!r})")
        if top_logprobs < 1 or concurrency < 1 or retries < 0 or timeout <= 0:
            raise JanusR1Error("top_logprobs and concurrency must be >= 1, retries >= 0 and timeout > 0")
        self.base, self.model, self.top = base_url.rstrip("/"), model, top_logprobs
        self.timeout, self.retries, self.backoff, self.concurrency = timeout, retries, backoff, concurrency
        self.missing = missing
        self.budget, self.deadline = budget, None  # seconds for one score call's tries, all requests together
        key = os.environ.get("JANUS_R1_JUDGE_API_KEY")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    def _call(self, path: str, payload: dict | None):
        return request_json(self.base + path, payload, self.timeout, self.retries, self.backoff, self.headers,
                            self.deadline)

    def served_model(self) -> str:
        """The ``model`` of the spec, or the one model ``GET {base}/models`` lists."""
        if self.model is None:
            try:
                ids = [m["id"] for m in self._call("/models", None)["data"]]
            except (KeyError, TypeError) as e:
                raise JanusR1Error(f"{self.base}/models did not list models ({e}); add ?model=NAME") from None
            if len(ids) != 1:
                raise JanusR1Error(f"{self.base} serves {ids}; name one with ?model=NAME in the reward spec")
            self.model = ids[0]
        return self.model

    def request(self, images: list, question: str) -> dict:
        parts = question.split(IMAGE_SLOT)
        content: list[dict] = []
        if len(parts) == len(images) + 1:  # interleave: text, image, text, image, text
            for k, text in enumerate(parts):
                content += [{"type": "text", "text": text}] if text else []
                if k < len(images):
                    content.append({"type": "image_url", "image_url": {"url": png_data_url(images[k])}})
        else:
            content = [{"type": "image_url", "image_url": {"url": png_data_url(im)}} for im in images]
            content.append({"type": "text", "text": question})
        return {"model": self.served_model(), "messages": [{"role": "user", "content": content}], "max_tokens": 1,
                "temperature": 1.0, "logprobs": True, "top_logprobs": self.top}

    def _ask(self, images: list, question: str) -> float:
        answer = self._call("/chat/completions", self.request(images, question))
        try:
            top = answer["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            if not isinstance(top, list) or not top:
                raise TypeError("top_logprobs is empty")
            return first_token_yes_no(top, question, self.missing)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            if isinstance(e, JanusR1Error):
                raise
            raise JanusR1Error(
                f"reward server {self.base}: no usable choices[0].logprobs.content[0].top_logprobs in its answer "
                f"({type(e).__name__}: {e}); it must honour logprobs/top_logprobs (vLLM, SGLang do): "
                f"{json.dumps(answer)[:300]}") from None

    def _ask_all(self, jobs):
        self.deadline = None if self.budget is None else time.monotonic() + self.budget
        self.served_model()
        if self.concurrency == 1 or len(jobs) < 2:
            return [self._ask(ims, q) for ims, q in jobs]
        with ThreadPoolExecutor(min(self.concurrency, len(jobs))) as pool:
            return list(pool.map(lambda job: self._ask(*job), jobs))


OPENAI_OPTIONS = {"model": str, "top_logprobs": int, "concurrency": int, "missing": str}


def parse_openai_spec(arg: str) -> tuple[str, dict]:
    """``http(s)://HOST:PORT/v1?model=NAME&top_logprobs=20&concurrency=16&missing=error`` -> (base URL, options)."""
    url = urllib.parse.urlsplit(arg)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise JanusR1Error(f"openai: needs an http(s) base URL such as openai:http://127.0.0.1:8000/v1 (got {arg!r})")
    opts: dict = {}
    for key, value in urllib.parse.parse_qsl(url.query, keep_blank_values=True):
        if key not in OPENAI_OPTIONS:
            raise JanusR1Error(f"unknown option {key!r} in the reward spec; known: {', '.join(OPENAI_OPTIONS)}")
        try:
            opts[key] = OPENAI_OPTIONS[key](value)
        except ValueError:
            raise JanusR1Error(f"reward spec option {key}={value!r} is not an integer") from None
    return urllib.parse.urlunsplit((url.scheme, url.netloc, url.path, "", "")), opts
