"""Every node on the real ComfyUI executor (in-process, child process): registration, validation, execution,
progress, preview, streamed text, interrupt."""

from __future__ import annotations

import copy

import pytest
from harness import JANUS_NODES

LOADER = {
    "class_type": "JanusR1Loader",
    "inputs": {
        "model_name": "Janus-Pro-R1-7B",
        "dtype": "fp32",
        "download_if_missing": False,
        "quantize": "none",
    },
}
SAMPLING = {"cfg": 5.0, "temperature": 1.0, "top_k": 4096, "top_p": 1.0}


def graph(*nodes: dict) -> dict:
    """API-format prompt: node 1 is the loader; the rest are numbered from 2."""
    return copy.deepcopy({str(i): n for i, n in enumerate([LOADER, *nodes], 1)})


def cot(**over) -> dict:
    inputs = {
        "model": ["1", 0],
        "prompt": "a red cube on a blue sphere",
        "seed": 7,
        "max_rounds": 3,
        "text_top_k": 50,
        "max_reflection": 12,
        "batch_size": 1,
        **SAMPLING,
    }
    inputs.update(over)
    return {"class_type": "JanusR1CoTGenerate", "inputs": inputs}


def save(src: str, slot: int = 0, prefix: str = "janus_r1_test") -> dict:
    return {"class_type": "SaveImage", "inputs": {"images": [src, slot], "filename_prefix": prefix}}


def test_all_nodes_registered_in_process(worker):
    res = worker.validate(graph(cot(), save("2")))
    assert res["valid"], res


def test_cot_generate_executes(worker):
    res = worker.execute(graph(cot(), save("2"), save("2", 1, "janus_r1_attempts")))
    assert res["valid"] and res["success"], res["events"][-3:]
    out = res["outputs"]
    # the CoT node shows its reasoning on the node (ui.text) ...
    text = out["2"]["text"][0]
    assert "[image 1" in text and "S=" in text
    # ... and the SaveImage nodes wrote PNGs
    finals = out["3"]["images"]
    attempts = out["4"]["images"]
    assert len(finals) == 1 and 1 <= len(attempts) <= 3
    for im in finals + attempts:
        assert (worker.base / "output" / im["subfolder"] / im["filename"]).is_file()
    # progress per token through comfy.utils.ProgressBar, with partial-image previews
    cot_progress = [p for p in res["progress"] if p[0] == "2"]
    assert len(cot_progress) >= 16
    # reasoning streamed with send_progress_text while running
    assert any(t[0] == "2" for t in res["texts"])


@pytest.mark.parametrize(
    "bad, where",
    [
        ({"max_rounds": 0}, "max_rounds"),
        ({"max_rounds": 11}, "max_rounds"),
        ({"cfg": -1.0}, "cfg"),
        ({"cfg": 0.5}, "cfg"),  # below 1 pushes away from the prompt (issue 17, finding 8)
        ({"seed": -5}, "seed"),
        ({"top_p": 1.5}, "top_p"),
        ({"prompt": "   "}, "prompt"),
        ({"max_rounds": "three"}, "max_rounds"),
    ],
)
def test_bad_inputs_are_validation_errors(worker, bad, where):
    res = worker.validate(graph(cot(**bad), save("2")))
    assert not res["valid"]
    errs = res["node_errors"]["2"]["errors"]
    assert any(where in str(e) for e in errs), errs


def test_unknown_model_folder_is_one_validation_error(worker):
    p = graph(cot(), save("2"))
    p["1"]["inputs"]["model_name"] = "no-such-model"
    res = worker.validate(p)
    assert not res["valid"] and "1" in res["node_errors"]
    errs = res["node_errors"]["1"]["errors"]
    assert len(errs) == 1, errs  # not once per widget of the loader
    assert errs[0]["extra_info"]["input_name"] == "model_name"
    assert "model folder 'no-such-model' not found" in errs[0]["details"]


@pytest.mark.parametrize(
    "name",
    ["Janus-Pro-R1-7B", "Janus-Pro-1B", "deepseek-ai/Janus-Pro-1B", "deepseek-ai/Janus-Pro-1B (download)"],
)
def test_model_names_old_and_marked_validate(worker, name):
    """Saved workflows keep loading: the bare folder name (before the marks), the hub id and the marked entry."""
    p = graph(cot(), save("2"))
    p["1"]["inputs"]["model_name"] = name
    assert worker.validate(p)["valid"]


def test_unknown_quantize_mode_is_one_clear_error(worker):
    # ComfyUI 0.3.75 does not check V3 combo values (newer versions reject them in validation); the loader
    # refuses them itself, once
    p = graph(cot(), save("2"))
    p["1"]["inputs"]["quantize"] = "3bit"
    res = worker.execute(p)
    errs = [e[1] for e in res["events"] if e[0] == "execution_error"]
    assert len(errs) == 1 and errs[0]["node_id"] == "1"
    assert (
        errs[0]["exception_message"].strip()
        == "Janus-R1: quantize must be one of ['none', '4bit', 'int4', 'nf4', '8bit'], got '3bit'."
    )


def test_missing_model_is_clear_node_error(worker):
    p = graph(cot(), save("2"))
    p["1"]["inputs"]["model_name"] = "deepseek-ai/Janus-Pro-1B (download)"  # known, not on disk
    res = worker.execute(p)
    assert res["valid"] and not res["success"]
    err = [e for e in res["events"] if e[0] == "execution_error"][0][1]
    assert "Janus-Pro-1B" in err["exception_message"] and "download_if_missing" in err["exception_message"]
    # download_if_missing under HF_HUB_OFFLINE=1: a clear error, no network
    p["1"]["inputs"]["download_if_missing"] = True
    res = worker.execute(p)
    err = [e for e in res["events"] if e[0] == "execution_error"][0][1]
    assert "HF_HUB_OFFLINE" in err["exception_message"]


def test_interrupt_then_model_still_usable(worker):
    res = worker.execute(graph(cot(seed=11), save("2")), interrupt_after_progress=5)
    assert res["valid"] and not res["success"], [
        e[1].get("exception_message") for e in res["events"] if e[0] == "execution_error"
    ]
    names = [e[0] for e in res["events"]]
    assert "execution_interrupted" in names, [
        e[1].get("traceback") for e in res["events"] if e[0] == "execution_error"
    ]
    # the next prompt runs on the same (cached, loaded) model
    res = worker.execute(graph(cot(seed=12), save("2")))
    assert res["success"], res["events"][-3:]


def test_text_to_image_edit_judge_regenerate_best_of_n(worker):
    load_img = {"class_type": "LoadImage", "inputs": {"image": "janus_r1_rgba.png"}}
    p = graph(
        {
            "class_type": "JanusR1TextToImage",
            "inputs": {"model": ["1", 0], "prompt": "a cat", "seed": 1, "batch_size": 2, **SAMPLING},
        },  # 2
        load_img,  # 3
        {
            "class_type": "JanusR1Edit",
            "inputs": {
                "model": ["1", 0],
                "image": ["3", 0],
                "instruction": "make it blue",
                "seed": 2,
                "num_images": 2,
                **{**SAMPLING, "cfg": 4.0},
            },
        },  # 4
        {
            "class_type": "JanusR1Judge",
            "inputs": {
                "model": ["1", 0],
                "images": ["2", 0],
                "prompt": "a cat",
                "seed": 3,
                "max_reflection": 8,
                "text_top_k": 50,
            },
        },  # 5
        {
            "class_type": "JanusR1Regenerate",
            "inputs": {
                "model": ["1", 0],
                "image": ["3", 0],
                "prompt": "a cat",
                "critique": "the cat is missing",
                "seed": 4,
                "max_rounds": 2,
                "always_redraw": False,
                "text_top_k": 50,
                "max_reflection": 8,
                **SAMPLING,
            },
        },  # 6
        {
            "class_type": "JanusR1BestOfN",
            "inputs": {"model": ["1", 0], "prompt": "a cat", "seed": 5, "n": 3, **SAMPLING},
        },  # 7
        save("2", 0, "t2i"),
        save("4", 0, "edit"),
        save("5", 0, "ranked"),
        save("6", 0, "regen"),
        save("6", 1, "regen_attempts"),
        save("7", 0, "best"),
        save("7", 1, "cands"),
    )
    res = worker.execute(p)
    assert res.get("success"), res
    out = res["outputs"]
    counts = {k: len(out[k]["images"]) for k in ("8", "9", "10", "11", "12", "13", "14")}
    assert counts == {"8": 2, "9": 2, "10": 2, "11": 1, "12": 2, "13": 1, "14": 3}
    judge_text = out["5"]["text"][0]
    assert judge_text.count("image ") >= 2 and "S=" in judge_text
    regen_text = out["6"]["text"][0]
    assert "the cat is missing" in regen_text
    best_text = out["7"]["text"][0]
    scores = [float(line.split("S=")[1].split()[0]) for line in best_text.splitlines()]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)


CATEGORIES = {
    "JanusR1Loader": "Janus-R1/loaders",
    "JanusR1TextToImage": "Janus-R1/generate",
    "JanusR1CoTGenerate": "Janus-R1/generate",
    "JanusR1BestOfN": "Janus-R1/generate",
    "JanusR1Regenerate": "Janus-R1/generate",
    "JanusR1Judge": "Janus-R1/judge",
    "JanusR1Edit": "Janus-R1/edit",
    "JanusR1Ask": "Janus-R1/ask",
    "JanusR1SaveText": "Janus-R1/save",
}


def test_object_info_shapes(object_info):
    from janus_r1 import defaults
    from janus_r1.generation import sampling

    assert set(CATEGORIES) == set(JANUS_NODES)
    for name in JANUS_NODES:
        assert name in object_info, name
        info = object_info[name]
        assert info["category"] == CATEGORIES[name]  # grouped as core packs do (image/batch, latent/...)
        assert info["display_name"].startswith("Janus-R1 ")
        for section in info["input"].values():
            for key, spec in section.items():
                if len(spec) > 1 and isinstance(spec[1], dict) and key != "model":
                    assert spec[1].get("tooltip"), f"{name}.{key} has no tooltip"
    loader = object_info["JanusR1Loader"]
    assert loader["output"] == ["JANUS_R1_MODEL"]
    spec = loader["input"]["required"]["model_name"]
    options = spec[1]["options"] if spec[0] == "COMBO" else spec[0]
    # the folder on disk by name; known models not on disk as marked, downloadable hub ids
    assert options == [
        "Janus-Pro-R1-7B",
        "deepseek-ai/Janus-Pro-7B (download)",
        "deepseek-ai/Janus-Pro-1B (download)",
    ]
    assert spec[1]["default"] == "Janus-Pro-R1-7B"
    q = loader["input"]["required"]["quantize"]
    assert (q[1]["options"] if q[0] == "COMBO" else q[0]) == ["none", "4bit", "int4", "nf4", "8bit"]
    cot_info = object_info["JanusR1CoTGenerate"]
    # new outputs are appended: links in saved workflows address outputs by slot
    per_sample = ["sample_scores", "sample_rounds", "sample_attempts"]  # issue 17: one item per sample
    assert cot_info["output"] == ["IMAGE", "IMAGE", "STRING", "FLOAT", "INT", "IMAGE", "FLOAT", "INT", "IMAGE"]
    assert cot_info["output_name"] == ["image", "attempts", "reasoning", "score", "rounds", "sheet", *per_sample]
    assert cot_info["output_is_list"][-3:] == [True, True, True] and not any(cot_info["output_is_list"][:6])
    req = cot_info["input"]["required"]
    # new widgets are optional and last: widget values are positional in saved workflows, and API prompts
    # written before them still validate
    assert cot_info["input_order"]["optional"] == ["final", "max_prompt_tokens", "decoding", "jacobi_window"]
    final = cot_info["input"]["optional"]["final"]
    assert (final[1]["options"] if final[0] == "COMBO" else final[0]) == ["last", "best score"]
    assert final[1]["default"] == "last"
    assert cot_info["input"]["optional"]["max_prompt_tokens"][1]["default"] == defaults.MAX_PROMPT_TOKENS
    assert req["model"][0] == "JANUS_R1_MODEL"
    # the widgets mirror the engine's (paper) defaults; the pack cannot import the engine at schema time
    assert req["max_rounds"][1]["default"] == defaults.MAX_ROUNDS == 3
    assert req["cfg"][1]["default"] == defaults.CFG == 5.0
    assert req["top_k"][1]["default"] == sampling.IMAGE_SAMPLING.top_k == 4096
    assert req["text_top_k"][1]["default"] == sampling.TEXT_SAMPLING.top_k
    assert req["max_reflection"][1]["default"] == defaults.MAX_REFLECTION
    assert req["seed"][1]["control_after_generate"] is True
    edit_cfg = object_info["JanusR1Edit"]["input"]["required"]["cfg"][1]["default"]
    assert edit_cfg == defaults.EDIT_CFG == 4.0
    judge = object_info["JanusR1Judge"]
    assert judge["output"] == ["IMAGE", "FLOAT", "STRING", "STRING", "STRING", "IMAGE", "INT"]
    assert judge["output_name"][-2:] == ["best", "best_index"]
    assert judge["output_is_list"] == [False, True, True, True, False, False, False]
    assert judge["input_order"]["optional"] == ["max_prompt_tokens"]
    assert object_info["JanusR1BestOfN"]["output"] == ["IMAGE", "IMAGE", "FLOAT", "STRING", "IMAGE"]
    regen = object_info["JanusR1Regenerate"]
    assert regen["output"] == ["IMAGE", "IMAGE", "STRING", "FLOAT", "IMAGE", "FLOAT", "INT", "IMAGE"]
    assert regen["input_order"]["optional"] == ["critique", "final", "max_prompt_tokens", "output_size", "decoding", "jacobi_window"]
    assert object_info["JanusR1Edit"]["input_order"]["optional"] == ["output_size", "decoding", "jacobi_window"]
    for name in ("JanusR1TextToImage", "JanusR1CoTGenerate", "JanusR1Regenerate", "JanusR1BestOfN", "JanusR1Edit"):
        assert object_info[name]["input"]["required"]["cfg"][1]["min"] == 1.0, name  # issue 17, finding 8
    assert regen["input"]["optional"]["critique"][0] == "STRING"
    for name in ("JanusR1TextToImage", "JanusR1BestOfN"):
        assert object_info[name]["input_order"]["optional"] == ["max_prompt_tokens", "decoding", "jacobi_window"], name
