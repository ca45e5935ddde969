"""What an artist trips over on the canvas (issue 17), on the real ComfyUI executor: each node shows the images it
returns, Regenerate gives an accepted input back untouched, output sizes, per-sample lists, the live preview's
size, the verdict note, the reasoning inside the saved PNG and in a text file, models/Janus-Pro."""

from __future__ import annotations

import json
import os
import re

import numpy as np
from PIL import Image
from test_comfy_nodes import SAMPLING, cot, graph, save

TALL = "janus_r1_tall.png"  # 300 x 500, conftest.write_test_images
ACCEPTING_SEED = 3  # with the tiny random model: the tall input is judged "Yes" (S=0.198, so the note shows)


def run_ok(worker, prompt: dict, **kw) -> dict:
    res = worker.execute(prompt, **kw)
    assert res.get("success"), res.get("node_errors") or [
        e[1].get("exception_message") for e in res["events"] if e[0] == "execution_error"
    ]
    return res


def files(worker, entries: list[dict]) -> list[np.ndarray]:
    return [
        np.asarray(Image.open(worker.base / im["type"] / im["subfolder"] / im["filename"]).convert("RGB"))
        for im in entries
    ]


def saved(worker, out: dict, node: str) -> list[np.ndarray]:
    return files(worker, out[node]["images"])


def regen(image_node: str = "2", **over) -> dict:
    inputs = {
        "model": ["1", 0],
        "image": [image_node, 0],
        "prompt": "a cat",
        "seed": ACCEPTING_SEED,
        "max_rounds": 2,
        "always_redraw": False,
        "text_top_k": 50,
        "max_reflection": 12,
        **SAMPLING,
    }
    inputs.update(over)
    return {"class_type": "JanusR1Regenerate", "inputs": inputs}


def test_nodes_show_the_images_they_return_not_the_last_preview(worker):
    """Finding 1: after the run Best of N shows its pick, CoT (final = best score) its chosen attempt, Edit and
    Text to Image their outputs -- the node's ``ui`` images are exactly its IMAGE output."""
    p = graph(
        {
            "class_type": "JanusR1BestOfN",
            "inputs": {"model": ["1", 0], "prompt": "a cat", "seed": 5, "n": 3, **SAMPLING},
        },  # 2
        save("2", 0, "shown_best"),  # 3
        cot(seed=0, max_rounds=3, max_reflection=20, final="best score"),  # 4
        save("4", 0, "shown_cot"),  # 5
        {
            "class_type": "JanusR1TextToImage",
            "inputs": {"model": ["1", 0], "prompt": "a cat", "seed": 1, "batch_size": 2, **SAMPLING},
        },  # 6
        save("6", 0, "shown_t2i"),  # 7
    )
    out = run_ok(worker, p)["outputs"]
    for node, save_node, n in (("2", "3", 1), ("4", "5", 1), ("6", "7", 2)):
        shown, returned = files(worker, out[node]["images"]), saved(worker, out, save_node)
        assert len(shown) == len(returned) == n, node
        assert all(np.array_equal(a, b) for a, b in zip(shown, returned)), node
    # and Best of N's pick is rank #1, not the last row drawn (which is what the live preview showed last)
    assert "#1:" in out["2"]["text"][0]


def test_regenerate_returns_an_accepted_input_untouched(worker):
    """Finding 2: a 300x500 input the model accepts comes back as the same pixels at 300x500 (it used to come back
    as a centre-cropped model-size square); the verdict note explains its 'Yes S=0.198'."""
    p = graph(
        {"class_type": "LoadImage", "inputs": {"image": TALL}},  # 2
        regen(),  # 3
        save("3", 0, "accepted"),  # 4
        save("2", 0, "loaded"),  # 5
        save("3", 4, "tall_sheet"),  # 6
    )
    out = run_ok(worker, p)["outputs"]
    text = out["3"]["text"][0]
    assert "=> final: image 1 of 1 (accepted, the input" in text, text
    [final], [given] = saved(worker, out, "4"), saved(worker, out, "5")
    assert final.shape == (500, 300, 3) and np.array_equal(final, given)
    # issue 25, finding 4: the contact sheet shows the 300x500 input whole, letterboxed in its 256 px tile (bars of
    # the sheet's background left and right), never squashed into the square
    [sheet] = saved(worker, out, "6")
    from janus_r1.generation.sheet import BACKGROUND, MARGIN

    w = round(300 * 256 / 500)
    row = sheet[MARGIN + 128]
    assert tuple(row[MARGIN + 5]) == BACKGROUND and tuple(row[MARGIN + 250]) == BACKGROUND
    inner = row[MARGIN + (256 - w) // 2 + 2 : MARGIN + (256 + w) // 2 - 2]
    assert np.abs(inner.astype(int) - np.array(BACKGROUND)).sum(axis=1).min() > 30  # the picture spans its width
    assert "note: Yes/No is the answer the model wrote" in text  # Yes with S < 0.5 (finding 9)


def test_output_size_for_redraws_and_edits(worker):
    """Finding 2: redraws and edits at the model's size, or back at the input's width and height."""
    p = graph(
        {"class_type": "LoadImage", "inputs": {"image": TALL}},  # 2
        regen(always_redraw=True, output_size="input size"),  # 3
        regen(always_redraw=True, output_size="model size"),  # 4
        {
            "class_type": "JanusR1Edit",
            "inputs": {
                "model": ["1", 0],
                "image": ["2", 0],
                "instruction": "make it blue",
                "seed": 2,
                "num_images": 2,
                "output_size": "input size",
                **{**SAMPLING, "cfg": 4.0},
            },
        },  # 5
        save("3", 0, "redraw_input_size"),  # 6
        save("4", 0, "redraw_model_size"),  # 7
        save("5", 0, "edit_input_size"),  # 8
        save("4", 1, "redraw_attempts"),  # 9
    )
    out = run_ok(worker, p)["outputs"]
    assert [a.shape for a in saved(worker, out, "6")] == [(500, 300, 3)]
    [model_size] = saved(worker, out, "7")
    assert model_size.shape == (64, 64, 3)  # the micro model's image size
    assert np.array_equal(model_size, saved(worker, out, "9")[-1])  # the redraw itself, untouched
    assert [a.shape for a in saved(worker, out, "8")] == [(500, 300, 3)] * 2


def test_cot_batch_keeps_per_sample_scores_rounds_and_attempts(worker):
    """Finding 12: with batch_size 2, per-sample lists (score, rounds, attempts as one batch per sample)."""
    p = graph(
        cot(seed=0, max_rounds=3, max_reflection=12, batch_size=2),  # 2
        {"class_type": "PreviewAny", "inputs": {"source": ["2", 6]}},  # 3: sample_scores
        {"class_type": "PreviewAny", "inputs": {"source": ["2", 7]}},  # 4: sample_rounds
        save("2", 8, "per_sample_attempts"),  # 5: one SaveImage run per sample
        save("2", 1, "all_attempts"),  # 6
    )
    out = run_ok(worker, p)["outputs"]
    text = out["2"]["text"][0]
    samples = text.split("== sample 2 ==")
    assert len(samples) == 2, text
    finals = [re.search(r"=> final: image (\d+) of (\d+) \([^,]+, S=([0-9.]+)\)", s).groups() for s in samples]
    scores = [float(t) for t in out["3"]["text"]]
    rounds = [int(t) for t in out["4"]["text"]]
    assert [f"{s:.3f}" for s in scores] == [f[2] for f in finals]
    assert rounds == [int(f[1]) for f in finals]
    per_sample, together = saved(worker, out, "5"), saved(worker, out, "6")
    assert len(per_sample) == len(together) == sum(rounds)
    assert all(np.array_equal(a, b) for a, b in zip(per_sample, together))


def test_saved_png_carries_the_reasoning_and_a_text_file_next_to_it(worker):
    """Section 3: Save Image writes a 'janus_r1' text chunk (verdicts, scores, reflections per attempt) beside
    ComfyUI's own 'workflow' chunk; Save Reasoning writes the reasoning as a .txt file."""
    p = graph(
        cot(seed=0, max_rounds=3, max_reflection=12),  # 2
        save("2", 0, "with_reasoning/cot"),  # 3
        {
            "class_type": "JanusR1SaveText",
            "inputs": {"text": ["2", 2], "filename_prefix": "with_reasoning/cot_reasoning"},
        },  # 4
    )
    res = run_ok(worker, p, extra_pnginfo={"workflow": {"nodes": []}})
    out = res["outputs"]
    [im] = out["3"]["images"]
    png = Image.open(worker.base / "output" / im["subfolder"] / im["filename"])
    assert json.loads(png.text["workflow"]) == {"nodes": []}
    chunk = json.loads(png.text["janus_r1"])
    [sample] = chunk["2"]["samples"]
    assert chunk["2"]["node"] == "JanusR1CoTGenerate" and chunk["2"]["task"] == "introspect"
    text = out["2"]["text"][0]
    shown = re.findall(r"^\[image (\d+)\] (Yes|No) S=([0-9.]+): (.*)$", text, re.M)
    assert [(str(a["round"]), a["verdict"], f"{a['score']:.3f}") for a in sample["attempts"]] == [
        s[:3] for s in shown
    ]
    assert all(a["reflection"] for a in sample["attempts"]) and "codes" not in sample["attempts"][0]
    assert sample["final"] == len(sample["attempts"]) - 1 and sample["final_rule"] == "last"
    [path] = out["4"]["text"]
    txt = worker.base / "output" / path
    assert txt.suffix == ".txt" and txt.parent == (worker.base / "output" / im["subfolder"])
    assert txt.read_bytes().decode("utf-8") == text  # byte for byte (the tiny model writes stray CRs)


def test_live_preview_is_sent_at_the_image_size(worker):
    """Finding 6: the preview is sent with max_size = its own size, so the server does not upscale it (the
    frontend captioned a 384 image 512x512)."""
    res = run_ok(worker, graph(cot(seed=1, max_rounds=1, max_reflection=4), save("2")))
    sizes = [p[1:] for p in res["previews"] if p[0] == "2"]
    assert sizes and all(m == w == h == 64 for m, w, h in sizes), sizes


def test_loader_finds_models_in_the_other_packs_folder(worker):
    """Section 3: models/Janus-Pro/<name> (CY-CHENYUE's Janus-Pro pack and its forks) is searched too."""
    other = worker.base / "models" / "Janus-Pro"
    other.mkdir(parents=True, exist_ok=True)
    link = other / "Janus-Pro-from-another-pack"
    if not link.exists():
        link.symlink_to(os.path.realpath(worker.base / "models" / "janus" / "Janus-Pro-R1-7B"))
    p = graph(
        {
            "class_type": "JanusR1TextToImage",
            "inputs": {"model": ["1", 0], "prompt": "a cat", "seed": 1, "batch_size": 1, **SAMPLING},
        },
        save("2"),
    )
    p["1"]["inputs"]["model_name"] = "Janus-Pro-from-another-pack"
    out = run_ok(worker, p)["outputs"]
    assert len(out["3"]["images"]) == 1


def test_judge_ranks_a_list_of_mixed_size_images_as_one_set(worker):
    """Finding 7: a LIST of images of different sizes (4 images in 3 items) is judged in one run and ranked
    across the whole list; best is the original image, ranked a letterboxed batch."""
    judge = {
        "class_type": "JanusR1Judge",
        "inputs": {
            "model": ["1", 0],
            "images": ["2", 0],
            "prompt": "a red square",
            "seed": 0,
            "max_reflection": 0,
            "text_top_k": 50,
        },
    }
    p = graph(
        {"class_type": "JanusR1TestImageList", "inputs": {}},  # 2
        judge,  # 3
        {"class_type": "PreviewAny", "inputs": {"source": ["3", 1]}},  # 4: scores
        {"class_type": "PreviewAny", "inputs": {"source": ["3", 6]}},  # 5: best_index
        save("3", 0, "ranked_list"),  # 6
        save("3", 5, "best_of_list"),  # 7
    )
    res = run_ok(worker, p)
    out = res["outputs"]
    assert len([e for e in res["events"] if e[0] == "executed" and e[1].get("node") == "3"]) == 1  # one run
    scores = [float(t) for t in out["4"]["text"]]
    assert len(scores) == 4
    report = out["3"]["text"][0]
    assert "ranking (best first): " in report and report.count("image ") == 4 + 4, report
    best = int(out["5"]["text"][0])
    assert best == int(np.argmax(scores))
    # issue 25: one index convention, labelled -- the report's first pick is best_index itself (from 0)
    assert report.split("ranking (best first): ")[1].startswith(f"image {best}, "), report
    assert "images counted from 0, as best_index" in report and "image 0: S=" in report
    sizes = [(64, 96), (120, 40), (120, 40), (33, 33)]
    [best_img] = saved(worker, out, "7")
    assert best_img.shape[:2] == sizes[best]  # the best image itself, untouched
    ranked = saved(worker, out, "6")
    assert len(ranked) == 4 and all(r.shape == (120, 96, 3) for r in ranked)  # letterboxed to one size
