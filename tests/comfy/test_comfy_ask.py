"""The Ask node on the real ComfyUI executor: its STRING list is the engine's own answers (same tiny model, same
pixels), one per image, shown on the node; image_b compares two; bad inputs are one clear error."""

from __future__ import annotations

import pytest
from test_comfy_nodes import graph

QUESTION = "What is in this picture?"


def load(name: str) -> dict:
    return {"class_type": "LoadImage", "inputs": {"image": name}}


def batch(a: str, b: str) -> dict:
    return {"class_type": "ImageBatch", "inputs": {"image1": [a, 0], "image2": [b, 0]}}


def ask(image: str, **over) -> dict:
    inputs = {
        "model": ["1", 0],
        "image": [image, 0],
        "question": QUESTION,
        "seed": 3,
        "max_new_tokens": 8,
        "temperature": 0.0,
        "top_p": 0.95,
        **over,
    }
    return {"class_type": "JanusR1Ask", "inputs": inputs}


def preview(src: str) -> dict:
    """Core Preview Any: runs once per item of the Ask node's list output, showing each."""
    return {"class_type": "PreviewAny", "inputs": {"source": [src, 0]}}


@pytest.fixture(scope="module")
def engine(tiny_model):
    from janus_r1 import JanusR1

    return JanusR1.from_pretrained(str(tiny_model), device="cpu", dtype="fp32", progress=False)


@pytest.fixture(scope="module")
def pics(test_images):
    from PIL import Image

    return {name: Image.open(path).convert("RGB") for name, path in test_images.items()}


def test_ask_outputs_the_engines_answers_one_per_image(worker, engine, pics):
    p = graph(
        load("janus_r1_example_a.png"),  # 2
        load("janus_r1_example_b.png"),  # 3
        batch("2", "3"),  # 4: both 96x64, a batch of two
        ask("4"),  # 5: greedy
        preview("5"),  # 6
        ask("4", temperature=0.8, top_p=0.9, seed=11, question="Describe this image in detail."),  # 7
        preview("7"),  # 8
    )
    res = worker.execute(p)
    assert res.get("success"), res["events"][-3:]
    out = res["outputs"]
    a, b = pics["janus_r1_example_a.png"], pics["janus_r1_example_b.png"]
    greedy = engine.ask([a, b], QUESTION, max_new_tokens=8, temperature=0.0, seed=3)
    assert out["6"]["text"] == [x.text for x in greedy]  # the list output: one STRING per image, batch order
    shown = out["5"]["text"][0]  # shown on the node, a header per image
    assert shown.startswith("== image 1 ==\n") and "== image 2 ==" in shown
    assert all(x.text in shown for x in greedy)
    sampled = engine.ask([a, b], "Describe this image in detail.", max_new_tokens=8, temperature=0.8, top_p=0.9,
                         seed=11)
    assert out["8"]["text"] == [x.text for x in sampled]
    assert any(t[0] == "5" for t in res["progress"])  # a progress bar per token
    streamed = [t[1] for t in res["texts"] if t[0] == "5"]  # the answer streamed while it is written
    assert streamed and streamed[0].startswith("[answer]")


def test_image_b_shows_both_images_with_the_question(worker, engine, pics):
    p = graph(
        load("janus_r1_example_a.png"),  # 2
        load("janus_r1_example_b.png"),  # 3
        ask("2", image_b=["3", 0], question="Which one is red?"),  # 4
        preview("4"),  # 5
    )
    res = worker.execute(p)
    assert res.get("success"), res["events"][-3:]
    a, b = pics["janus_r1_example_a.png"], pics["janus_r1_example_b.png"]
    [both] = engine.ask([[a, b]], "Which one is red?", max_new_tokens=8, seed=3)
    assert res["outputs"]["5"]["text"] == [both.text]


@pytest.mark.parametrize(
    "over, where",
    [
        ({"question": "  "}, "question"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"seed": -2}, "seed"),
    ],
)
def test_bad_widgets_are_validation_errors(worker, over, where):
    res = worker.validate(graph(load("janus_r1_example_a.png"), ask("2", **over), preview("3")))
    assert not res["valid"]
    errs = res["node_errors"]["3"]["errors"]
    assert any(where in str(e) for e in errs), errs


def test_image_b_count_mismatch_is_one_clear_error(worker):
    p = graph(
        load("janus_r1_example_a.png"),  # 2
        load("janus_r1_example_b.png"),  # 3
        batch("2", "3"),  # 4: two images
        batch("4", "2"),  # 5: three images
        ask("4", image_b=["5", 0]),  # 6
        preview("6"),  # 7
    )
    res = worker.execute(p)
    errs = [e[1] for e in res["events"] if e[0] == "execution_error"]
    assert len(errs) == 1 and errs[0]["node_id"] == "6"
    assert errs[0]["exception_message"].strip() == (
        "Janus-R1: image_b has 3 images but image has 2; give one image_b for all, or one per image."
    )


def test_ask_schema_reads_the_engines_defaults(object_info):
    from janus_r1 import defaults

    info = object_info["JanusR1Ask"]
    assert (info["display_name"], info["category"]) == ("Janus-R1 Ask", "Janus-R1/ask")
    assert (info["output"], info["output_name"], info["output_is_list"]) == (["STRING"], ["text"], [True])
    req = info["input"]["required"]
    assert info["input_order"]["required"] == ["model", "image", "question", "seed", "max_new_tokens",
                                               "temperature", "top_p"]
    assert info["input_order"]["optional"] == ["image_b", "prompt_budget"]
    assert info["input"]["optional"]["image_b"][0] == "IMAGE"
    assert info["input"]["optional"]["prompt_budget"][1]["default"] == defaults.MAX_PROMPT_TOKENS
    assert req["question"][1]["default"] == defaults.ASK_QUESTION == "Describe this image in detail."
    assert req["question"][1]["multiline"] is True
    assert req["max_new_tokens"][1]["default"] == defaults.ASK_MAX_NEW_TOKENS
    assert (req["temperature"][1]["default"], req["temperature"][1]["min"]) == (defaults.ASK_TEMPERATURE, 0.0)
    assert req["top_p"][1]["default"] == defaults.ASK_TOP_P
    assert not req["seed"][1].get("control_after_generate")  # a greedy answer stays cached between queues


@pytest.mark.parametrize("kind", ["two channels", "five dims", "empty batch", "zero width"])
@pytest.mark.parametrize("socket", ["image", "image_b"])
def test_bad_image_batch_is_one_clear_error(worker, socket, kind):
    odd = {"class_type": "JanusR1TestOddImage", "inputs": {"kind": kind}}  # tests/comfy/testing_nodes
    node = ask("3") if socket == "image" else ask("2", image_b=["3", 0])
    p = graph(load("janus_r1_example_a.png"), odd, node, preview("4"))
    res = worker.execute(p)
    errs = [e[1] for e in res["events"] if e[0] == "execution_error"]
    assert len(errs) == 1 and errs[0]["node_id"] == "4", errs
    msg = errs[0]["exception_message"]
    assert msg.startswith(f"Janus-R1: {socket} must be an IMAGE batch [B, H, W, C]") and "got shape [" in msg, msg


def defaults_of(info: dict, **links) -> dict:
    """A node's inputs as a new node on the canvas has them: every widget at its default, sockets linked."""
    inputs = dict(links)
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            if name not in inputs and len(spec) > 1 and isinstance(spec[1], dict) and "default" in spec[1]:
                inputs[name] = spec[1]["default"]
    return inputs


def test_ask_into_cot_generate_runs_with_default_widgets(worker, object_info, engine, pics):
    """Issue 25, finding 2: Load Image -> Ask (every widget at its default) -> CoT Generate's prompt (defaults)
    runs: Ask keeps its answer within the generators' 200-token prompt budget and says so on the node when it
    shortened it. The same graph with prompt_budget 0 (answers up to 512 tokens) fails at CoT's prompt check --
    what artists hit before."""
    from janus_r1 import defaults
    from janus_r1.generation.prompt_fit import prompt_tokens

    ask_node = {"class_type": "JanusR1Ask",
                "inputs": defaults_of(object_info["JanusR1Ask"], model=["1", 0], image=["2", 0])}
    cot_node = {"class_type": "JanusR1CoTGenerate",
                "inputs": defaults_of(object_info["JanusR1CoTGenerate"], model=["1", 0], prompt=["3", 0])}
    p = graph(load("janus_r1_example_a.png"), ask_node, cot_node, preview("4"))  # 2, 3, 4, 5
    res = worker.execute(p)
    assert res.get("success"), [e[1].get("exception_message") for e in res["events"] if e[0] == "execution_error"]
    [answer] = engine.ask([pics["janus_r1_example_a.png"]], prompt_budget=defaults.MAX_PROMPT_TOKENS)
    assert prompt_tokens(engine.janus, answer.text) <= defaults.MAX_PROMPT_TOKENS
    shown = res["outputs"]["3"]["text"][0]
    assert shown.startswith(answer.text)
    assert ("[shortened to its last whole sentence within the 200-token prompt budget]" in shown) == answer.shortened
    assert res["outputs"]["4"]["images"]  # CoT drew from Ask's answer

    p["3"]["inputs"]["prompt_budget"] = 0
    res = worker.execute(p)
    long = res["outputs"].get("3", {}).get("text", [""])[0].removesuffix(" [...] (cut at max_new_tokens)")
    if prompt_tokens(engine.janus, long) > defaults.MAX_PROMPT_TOKENS:  # the tiny model's gibberish is long
        errs = [e[1] for e in res["events"] if e[0] == "execution_error"]
        assert len(errs) == 1 and errs[0]["node_id"] == "4" and "over the budget of 200" in errs[0]["exception_message"]
    else:
        assert res.get("success")
