"""The ``openai:`` reward against a real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions protocol.

The server (stdlib ``http.server`` in a thread) wraps a tiny transformers VLM saved to disk: it decodes the
``image_url`` data URLs, applies the processor's chat template and returns the first token's real ``top_logprobs``
-- what vLLM / SGLang return. Scores are checked against P(yes)/(P(yes)+P(no)) computed from the VLM directly.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from PIL import Image
from test_training_vlm_judge import build_tiny_vlm

from janus_r1 import JanusR1Error
from janus_r1.training.rewards import EDIT_FOLLOW, QUESTION_WITH_CAPTION, make_reward, yes_no_question
from janus_r1.training.served_judge import OpenAIJudge, first_token_yes_no, parse_openai_spec


class _Handler(BaseHTTPRequestHandler):
    vlm = None  # (model, processor)
    mode = "ok"  # ok | slow | 500-then-ok | 400 | no-logprobs | not-json | neither
    fails = 0
    calls: list = []

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        self._send(200, json.dumps({"object": "list", "data": [{"id": "tiny-vlm", "object": "model"}]}).encode())

    def do_POST(self):  # noqa: N802
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.calls.append((self.path, req))
        mode = _Handler.mode
        if mode == "slow":
            time.sleep(1.0)
        if mode == "400":
            return self._send(400, b'{"error": {"message": "model tiny does not exist"}}')
        if mode == "500-then-ok" and _Handler.fails > 0:
            _Handler.fails -= 1
            return self._send(500, b'{"error": "overloaded"}')
        if mode == "not-json":
            return self._send(200, b"<html>proxy error</html>")
        if mode == "no-logprobs":
            return self._send(200, json.dumps({"choices": [{"message": {"content": "Yes"}, "logprobs": None}]}).encode())
        if req.get("max_tokens", 1) > 1:  # a reason or a long prompt (build-data): a few greedy tokens of the VLM
            choice = {"index": 0, "message": {"role": "assistant", "content": self._text(req)}, "finish_reason": "length"}
            return self._send(200, json.dumps({"object": "chat.completion", "choices": [choice]}).encode())
        top = [{"token": "Maybe", "logprob": -0.1}] if mode == "neither" else self._top(req)
        choice = {"index": 0, "message": {"role": "assistant", "content": top[0]["token"]}, "finish_reason": "length",
                  "logprobs": {"content": [{**top[0], "top_logprobs": top}]}}
        self._send(200, json.dumps({"object": "chat.completion", "model": req["model"], "choices": [choice]}).encode())

    @staticmethod
    def _inputs(req: dict):
        model, proc = _Handler.vlm
        parts = req["messages"][0]["content"]
        images = [Image.open(io.BytesIO(base64.b64decode(p["image_url"]["url"].split(",", 1)[1])))
                  for p in parts if p["type"] == "image_url"]
        content = [{"type": "image"} if p["type"] == "image_url" else {"type": "text", "text": p["text"]}
                   for p in parts]
        text = proc.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        return proc(images=images or None, text=text, return_tensors="pt")

    @staticmethod
    def _text(req: dict) -> str:
        model, proc = _Handler.vlm
        inputs = _Handler._inputs(req)
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=min(8, req["max_tokens"]), do_sample=False)
        return proc.tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    @staticmethod
    def _top(req: dict) -> list[dict]:
        model, proc = _Handler.vlm
        with torch.no_grad():
            logits = model(**_Handler._inputs(req)).logits[0, -1]
        lp, ids = torch.log_softmax(logits.float(), -1).topk(req["top_logprobs"])
        return [{"token": proc.tokenizer.decode([i]), "logprob": float(v)} for v, i in zip(lp, ids.tolist())]

    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    d = build_tiny_vlm(tmp_path_factory.mktemp("vlm"))
    _Handler.vlm = (AutoModelForImageTextToText.from_pretrained(d).eval(), AutoProcessor.from_pretrained(d))
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    # Handler threads are joined on close: a daemon thread still inside torch when the interpreter exits (a "slow"
    # request the client gave up on) aborts the process ("terminate called without an active exception").
    srv.daemon_threads, srv.block_on_close = False, True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}/v1"
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _reset():
    _Handler.mode, _Handler.fails, _Handler.calls = "ok", 0, []


def _direct(question: str, images: list) -> float:
    """P(yes)/(P(yes)+P(no)) over the VLM's full softmax, yes/no = the single-token variants of its tokenizer."""
    model, proc = _Handler.vlm
    tok = proc.tokenizer
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": question}]
    text = proc.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    with torch.no_grad():
        p = torch.softmax(model(**proc(images=images, text=text, return_tensors="pt")).logits[0, -1].float(), -1)

    def ids(words):
        return sorted({e[0] for w in words for e in [tok.encode(w, add_special_tokens=False)] if len(e) == 1})

    yes, no = ids(["yes", "Yes", "YES", " yes", " Yes", " YES"]), ids(["no", "No", "NO", " no", " No", " NO"])
    assert yes and no
    return float(p[yes].sum() / (p[yes].sum() + p[no].sum()))


RED, BLUE = Image.new("RGB", (50, 40), (255, 0, 0)), Image.new("RGB", (40, 50), (0, 0, 255))


def test_score_is_p_yes_over_yes_plus_no_from_the_served_top_logprobs(server):
    judge = make_reward(f"openai:{server}?model=tiny-vlm&top_logprobs=485", retries=0)
    assert isinstance(judge, OpenAIJudge) and (judge.model, judge.top) == ("tiny-vlm", 485)
    s = judge.score([RED, BLUE], ["a red square", "a blue square"])
    want = [_direct(QUESTION_WITH_CAPTION.format(caption=c), [im])
            for c, im in [("a red square", RED), ("a blue square", BLUE)]]
    assert s == pytest.approx(want, abs=1e-5) and s[0] != s[1] and all(0 < x < 1 for x in s)
    path, req = _Handler.calls[0]
    assert path == "/v1/chat/completions"
    assert {k: req[k] for k in ("model", "max_tokens", "temperature", "logprobs", "top_logprobs")} == \
        {"model": "tiny-vlm", "max_tokens": 1, "temperature": 1.0, "logprobs": True, "top_logprobs": 485}
    part = req["messages"][0]["content"][0]
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith("data:image/png;base64,")


def test_question_decomposition_asks_each_question_and_averages(server):
    qs = ["Is there a square?", "Is the square red?", "Is it on a white background?"]
    judge = make_reward(f"openai:{server}?top_logprobs=485", questions={"a red square": qs}, retries=0)
    [s, plain] = judge.score([RED, RED], ["a red square", "something else"])
    per = [_direct(yes_no_question(q), [RED]) for q in qs]
    assert s == pytest.approx(sum(per) / 3, abs=1e-5)
    assert plain == pytest.approx(_direct(QUESTION_WITH_CAPTION.format(caption="something else"), [RED]), abs=1e-5)
    asked = [r["messages"][0]["content"][-1]["text"] for p, r in _Handler.calls if p.endswith("/completions")]
    assert sorted(asked) == sorted([q + " Please directly respond with yes or no." for q in qs] +
                                   [QUESTION_WITH_CAPTION.format(caption="something else")])
    assert judge.model == "tiny-vlm"  # discovered from GET /v1/models


def test_edit_questions_interleave_the_two_images(server):
    judge = make_reward(f"openai:{server}?model=tiny-vlm&top_logprobs=485&concurrency=1", retries=0)
    [(flw, psv)] = judge.score_edit([RED], [BLUE], ["make it blue"])
    parts = _Handler.calls[0][1]["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "text", "image_url", "text"]
    q = EDIT_FOLLOW.format(instruction="make it blue")
    assert parts[0]["text"] + "<image>" + parts[2]["text"] + "<image>" + parts[4]["text"] == q
    assert 0 < flw < 1 and 0 < psv < 1 and flw != psv


def test_server_errors_are_retried_with_backoff_then_raised(server):
    judge = OpenAIJudge(server, model="m", retries=2, backoff=0.01, top_logprobs=485)
    _Handler.mode, _Handler.fails = "500-then-ok", 2
    assert 0 < judge.score([RED], ["x"])[0] < 1 and len(_Handler.calls) == 3  # two 500s, then the answer
    _Handler.mode, _Handler.fails, _Handler.calls = "500-then-ok", 99, []
    with pytest.raises(JanusR1Error, match=r"failed after 3 tries .*HTTP 500.*refusing to train on a made-up"):
        judge.score([RED], ["x"])
    assert len(_Handler.calls) == 3


def test_timeouts_are_retried_then_raised(server):
    judge = OpenAIJudge(server, model="m", retries=1, backoff=0.01, timeout=0.2)
    _Handler.mode = "slow"
    t0 = time.monotonic()
    with pytest.raises(JanusR1Error, match=r"failed after 2 tries .*timeout 0.2 s each; last: (TimeoutError|timeout)"):
        judge.score([RED], ["x"])
    assert len(_Handler.calls) == 2 and time.monotonic() - t0 < 5


def test_client_errors_and_malformed_answers_fail_at_once(server):
    judge = OpenAIJudge(server, model="m", retries=3, backoff=0.01)
    for mode, needle in [("400", "answered HTTP 400: .*model tiny does not exist"),
                         ("not-json", "not JSON: b'<html>proxy error"),
                         ("no-logprobs", r"no usable choices\[0\].logprobs.content\[0\].top_logprobs"),
                         ("neither", r"neither yes nor no among its top 1 first tokens \['Maybe'\]")]:
        _Handler.mode, _Handler.calls = mode, []
        with pytest.raises(JanusR1Error, match=needle):
            judge.score([RED], ["x"])
        assert len(_Handler.calls) == 1  # not retried: retrying cannot fix it
    _Handler.mode = "neither"
    assert OpenAIJudge(server, model="m", missing="zero").score([RED], ["x"]) == [0.0]


def test_refused_connection_is_retried_then_raised():
    judge = OpenAIJudge("http://127.0.0.1:9/v1", model="m", retries=1, backoff=0.01, timeout=1)
    with pytest.raises(JanusR1Error, match=r"127.0.0.1:9/v1/chat/completions failed after 2 tries"):
        judge.score([RED], ["x"])


def test_yes_no_variants_and_absent_answers():
    import math

    top = [{"token": " Yes", "logprob": math.log(0.3)}, {"token": "yes", "logprob": math.log(0.1)},
           {"token": "\u2581NO", "logprob": math.log(0.2)}, {"token": "Nope", "logprob": math.log(0.3)}]
    assert first_token_yes_no(top, "q") == pytest.approx(0.4 / 0.6)
    assert first_token_yes_no(top[:2], "q") == 1.0  # "no" outside the top N counts as 0
    assert first_token_yes_no(top[3:], "q", missing="zero") == 0.0


def test_spec_syntax():
    assert parse_openai_spec("https://judge:8000/v1?model=OpenGVLab/InternVL2_5-26B&top_logprobs=20") == \
        ("https://judge:8000/v1", {"model": "OpenGVLab/InternVL2_5-26B", "top_logprobs": 20})
    with pytest.raises(JanusR1Error, match="unknown option 'topk'"):
        make_reward("openai:http://h/v1?topk=3")
    with pytest.raises(JanusR1Error, match="needs an http"):
        make_reward("openai:judge:8000")
    with pytest.raises(JanusR1Error, match="missing must be error or zero"):
        make_reward("openai:http://h/v1?missing=half")
    with pytest.warns(DeprecationWarning, match="use openai:URL"):
        make_reward("http:http://h/score")
