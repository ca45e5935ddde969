"""Bad inputs to every Janus-R1 node on the real executor and server: each is refused with one clear error that
names the input (a validation error before anything runs, or one execution error from the node), and nothing
is written."""

from __future__ import annotations

import json
import shutil

import pytest
from test_comfy_nodes import SAMPLING, cot, graph, save

ODD = {"class_type": "JanusR1TestOddImage", "inputs": {"kind": "two channels"}}  # tests/comfy/testing_nodes
IMAGE_NODES = {
    "JanusR1Judge": ("images", {"prompt": "a cat", "seed": 0, "max_reflection": 0, "text_top_k": 50}),
    "JanusR1Edit": ("image", {"instruction": "make it blue", "seed": 0, "num_images": 1, **SAMPLING}),
    "JanusR1Regenerate": (
        "image",
        {
            "prompt": "a cat",
            "seed": 0,
            "max_rounds": 2,
            "always_redraw": False,
            "text_top_k": 50,
            "max_reflection": 8,
            **SAMPLING,
        },
    ),
}
PROMPT_NODES = {
    "JanusR1TextToImage": {"seed": 0, "batch_size": 1, **SAMPLING},
    "JanusR1CoTGenerate": {k: v for k, v in cot()["inputs"].items() if k not in ("model", "prompt")},
    "JanusR1BestOfN": {"seed": 0, "n": 2, **SAMPLING},
    "JanusR1Judge": {"images": ["3", 0], "seed": 0, "max_reflection": 0, "text_top_k": 50},
    "JanusR1Regenerate": {
        "image": ["3", 0],
        **{k: v for k, v in IMAGE_NODES["JanusR1Regenerate"][1].items() if k != "prompt"},
    },
}
LONG = "a red cube on a blue sphere " * 20  # ~270 tokens with the template, over the default budget of 200


def outputs_written(worker) -> set:
    return {p.relative_to(worker.base / "output") for p in (worker.base / "output").rglob("*") if p.is_file()}


def one_error(worker, prompt: dict) -> dict:
    """Run ``prompt``; it must fail with exactly one execution error and write nothing."""
    before = outputs_written(worker)
    res = worker.execute(prompt)
    assert res["valid"], res["node_errors"]
    assert not res["success"]
    errs = [e[1] for e in res["events"] if e[0] == "execution_error"]
    assert len(errs) == 1, errs
    assert outputs_written(worker) == before
    return errs[0]


def node(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": {"model": ["1", 0], **inputs}}


@pytest.mark.parametrize("kind", ["two channels", "five dims", "empty batch", "zero width"])
@pytest.mark.parametrize("class_type", list(IMAGE_NODES))
def test_bad_image_batch_is_one_clear_error(worker, class_type, kind):
    name, inputs = IMAGE_NODES[class_type]
    p = graph(node(class_type, **{name: ["3", 0]}, **inputs), {**ODD, "inputs": {"kind": kind}}, save("2"))
    err = one_error(worker, p)
    assert err["node_id"] == "2" and err["exception_type"] == "ValueError"
    msg = err["exception_message"]
    assert msg.startswith(f"Janus-R1: {name} must be an IMAGE batch [B, H, W, C]"), msg
    assert "got shape [" in msg


def test_one_pixel_image_is_fine(worker):
    name, inputs = IMAGE_NODES["JanusR1Edit"]
    p = graph(
        node("JanusR1Edit", image=["3", 0], **inputs), {**ODD, "inputs": {"kind": "one pixel"}}, save("2")
    )
    res = worker.execute(p)
    assert res["success"], [e[1].get("exception_message") for e in res["events"] if e[0] == "execution_error"]


@pytest.mark.parametrize("class_type", list(PROMPT_NODES))
@pytest.mark.parametrize("prompt", ["", "   \n\t"])
def test_empty_prompt_is_a_validation_error(worker, class_type, prompt):
    p = graph(
        node(class_type, prompt=prompt, **PROMPT_NODES[class_type]),
        {**ODD, "inputs": {"kind": "one pixel"}},
        save("2"),
    )
    res = worker.validate(p)
    assert not res["valid"] and "2" in res["node_errors"], res
    errs = res["node_errors"]["2"]["errors"]
    assert len(errs) == 1 and errs[0]["details"] == "prompt - prompt is empty; type what you want.", errs


def test_empty_instruction_is_a_validation_error(worker):
    _, inputs = IMAGE_NODES["JanusR1Edit"]
    p = graph(node("JanusR1Edit", image=["3", 0], **{**inputs, "instruction": " "}), ODD, save("2"))
    errs = worker.validate(p)["node_errors"]["2"]["errors"]
    assert [e["details"] for e in errs] == ["instruction - instruction is empty; type what you want."]


@pytest.mark.parametrize("class_type", list(PROMPT_NODES))
def test_long_prompt_error_names_the_widget_that_fixes_it(worker, class_type):
    p = graph(
        node(class_type, prompt=LONG, **PROMPT_NODES[class_type]),
        {**ODD, "inputs": {"kind": "one pixel"}},
        save("2"),
    )
    err = one_error(worker, p)
    assert err["node_id"] == "2"
    msg = err["exception_message"]
    assert msg.startswith("Janus-R1: ") and "max_prompt_tokens" in msg, msg
    assert "--" not in msg and "CLI" not in msg, msg  # inside ComfyUI only the widget means anything
    # and the widget exists and works: a larger budget runs the same prompt
    p["2"]["inputs"]["max_prompt_tokens"] = 600
    if class_type == "JanusR1BestOfN":
        p["2"]["inputs"]["n"] = 1
    res = worker.execute(p)
    assert res["success"], [e[1].get("exception_message") for e in res["events"] if e[0] == "execution_error"]


@pytest.mark.parametrize("class_type", ["JanusR1CoTGenerate", "JanusR1Regenerate"])
def test_unknown_final_rule_is_one_clear_error(worker, class_type):
    inputs = {**PROMPT_NODES[class_type], "final": "best"}  # the engine's word, not a widget choice
    p = graph(node(class_type, prompt="a cat", **inputs), {**ODD, "inputs": {"kind": "one pixel"}}, save("2"))
    msg = one_error(worker, p)["exception_message"].strip()
    assert msg == "Janus-R1: final must be one of ['last', 'best score'], got 'best'.", msg


def test_long_instruction_is_one_clear_error(worker):
    _, inputs = IMAGE_NODES["JanusR1Edit"]
    p = graph(
        node("JanusR1Edit", image=["3", 0], **{**inputs, "instruction": LONG}),
        {**ODD, "inputs": {"kind": "one pixel"}},
        save("2"),
    )
    msg = one_error(worker, p)["exception_message"]
    assert msg.startswith("Janus-R1: instruction 0 is ") and "shorten it" in msg, msg


@pytest.mark.parametrize(
    "bad, where",
    [
        ({"seed": 2**64}, "seed"),
        ({"seed": -1}, "seed"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_reflection": 0}, "max_reflection"),
        ({"max_prompt_tokens": 8}, "max_prompt_tokens"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_k": -1}, "top_k"),
    ],
)
def test_out_of_range_widgets_are_validation_errors(worker, bad, where):
    res = worker.validate(graph(cot(**bad), save("2")))
    assert not res["valid"]
    errs = res["node_errors"]["2"]["errors"]
    assert len(errs) == 1 and errs[0]["extra_info"]["input_name"] == where, errs


def test_server_returns_the_node_error_and_writes_nothing(server):
    """Through ComfyUI's own server: the error is in /history, on the failing node, and no file appears."""
    out = server.base / "output"
    before = sorted(p for p in out.rglob("*") if p.is_file())
    name, inputs = IMAGE_NODES["JanusR1Judge"]
    prompt = graph(node("JanusR1Judge", images=["3", 0], **inputs), ODD, save("2", 0, "bad"))
    prompt["1"]["inputs"]["dtype"] = "fp32"
    code, body = server.post("/prompt", {"prompt": prompt, "client_id": "bad-inputs"})
    assert code == 200, body
    hist = server.wait_history(body["prompt_id"])
    assert hist["status"]["status_str"] == "error"
    errs = [m[1] for m in hist["status"]["messages"] if m[0] == "execution_error"]
    assert len(errs) == 1 and errs[0]["node_id"] == "2"
    assert errs[0]["exception_message"].startswith("Janus-R1: images must be an IMAGE batch"), errs
    assert sorted(p for p in out.rglob("*") if p.is_file()) == before

    # an empty prompt never reaches the executor: HTTP 400 with the node's error
    prompt["2"]["inputs"]["prompt"] = ""
    code, body = server.post("/prompt", {"prompt": prompt, "client_id": "bad-inputs"})
    assert code == 400 and body["error"]["type"] == "prompt_outputs_failed_validation"
    assert [e["details"] for e in body["node_errors"]["2"]["errors"]] == [
        "prompt - prompt is empty; type what you want."
    ]


LOADER_BAD = [  # a malformed config.json or tokenizer file in a model folder (issue 15)
    ("config.json", lambda c: c["language_config"].update(hidden_size="32"),
     "field 'language_config.hidden_size' must be an integer"),
    ("config.json", lambda c: c.update(model_type="bert"), "field 'model_type' is 'bert'"),
    ("tokenizer_config.json", lambda c: c.update(add_bos_token="yes"), "field 'add_bos_token' must be true or false"),
]


@pytest.mark.parametrize("fname, edit, fragment", LOADER_BAD, ids=["config-type", "model-type", "tokenizer"])
def test_malformed_model_folder_is_one_clear_loader_error(worker, tiny_model, fname, edit, fragment):
    name = f"Broken-{fname.split('.')[0]}-{abs(hash(fragment)) % 1000}"
    dst = worker.base / "models" / "janus" / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(tiny_model, dst)
    obj = json.loads((dst / fname).read_text(encoding="utf-8"))
    edit(obj)
    (dst / fname).write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    p = graph(node("JanusR1TextToImage", prompt="a cat", **PROMPT_NODES["JanusR1TextToImage"]), save("2"))
    p["1"]["inputs"]["model_name"] = name
    err = one_error(worker, p)
    msg = err["exception_message"].strip()
    assert err["node_id"] == "1" and msg.startswith("Janus-R1: ") and "\n" not in msg, msg
    assert f"{name}/{fname}: {fragment}" in msg, msg
