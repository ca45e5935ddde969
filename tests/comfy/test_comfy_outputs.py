"""The nodes' newer outputs and choices on the real ComfyUI executor: the final rule (`last` | `best score`), the
Judge's best image and index, contact sheets, scores rounded for reading but exact on FLOAT sockets, the live
preview throttled by wall-clock time; plus the engine's memory_needed the nodes hand to ComfyUI."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_comfy_nodes import SAMPLING, cot, graph, save

REPO = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^\[image (\d+)\] (Yes|No) S=([0-9.]+):", re.M)
FINAL = re.compile(r"^=> final: image (\d+) of (\d+) \(([^,]+)(?:, the input)?, S=([0-9.]+|n/a)\)$", re.M)


def preview_any(src: str, slot: int) -> dict:
    return {"class_type": "PreviewAny", "inputs": {"source": [src, slot]}}


def saved(worker, out: dict, node: str) -> list[np.ndarray]:
    files = [worker.base / "output" / im["subfolder"] / im["filename"] for im in out[node]["images"]]
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


def run_ok(worker, prompt: dict) -> dict:
    res = worker.execute(prompt)
    assert res.get("success"), res.get("node_errors") or [
        e[1].get("exception_message") for e in res["events"] if e[0] == "execution_error"
    ]
    return res


def cot_run(worker, final: str, seed: int, rounds: int = 3) -> tuple[dict, dict]:
    p = graph(
        cot(seed=seed, max_rounds=rounds, max_reflection=20, final=final),  # 2
        save("2", 0, f"final_{final}"),  # 3
        save("2", 1, f"attempts_{final}"),  # 4
        save("2", 5, f"sheet_{final}"),  # 5
        preview_any("2", 3),  # 6: the exact FLOAT score
    )
    res = run_ok(worker, p)
    return res, res["outputs"]


SEED = 0  # with the tiny random model: three rounds, all "No", the first scored highest


def test_final_rule_best_score_picks_the_highest_s_attempt(worker):
    _, out = cot_run(worker, "best score", SEED)
    text = out["2"]["text"][0]
    rounds = [(int(k), v, float(s)) for k, v, s in LINE.findall(text)]
    k, n, rule, s = FINAL.search(text).groups()
    assert rule == "best score" and int(n) == len(rounds) == 3, text
    best = max(range(len(rounds)), key=lambda i: rounds[i][2])
    assert int(k) == best + 1 and float(s) == rounds[best][2]
    attempts, [final] = saved(worker, out, "4"), saved(worker, out, "3")
    assert np.array_equal(final, attempts[best])  # the image output is that attempt
    # the FLOAT output is the exact S of the chosen attempt; the text shows it to 3 decimals
    exact = float(out["6"]["text"][0])
    assert f"{exact:.3f}" == s and exact != float(s)
    # the paper's rule on the same seed: the same attempts, the last one is the output
    _, out_last = cot_run(worker, "last", SEED)
    text_last = out_last["2"]["text"][0]
    assert LINE.findall(text_last) == LINE.findall(text)
    k_last, _, rule_last, _ = FINAL.search(text_last).groups()
    assert rule_last == "last" and int(k_last) == 3 != int(k)
    assert np.array_equal(saved(worker, out_last, "3")[0], saved(worker, out_last, "4")[-1])


def test_contact_sheet_has_one_column_per_attempt(worker):
    from janus_r1.generation.sheet import MARGIN

    _, out = cot_run(worker, "last", SEED)
    n = len(saved(worker, out, "4"))
    [sheet] = saved(worker, out, "5")
    thumb = 256
    assert sheet.shape[1] == n * thumb + (n + 1) * MARGIN
    assert thumb + 2 * MARGIN < sheet.shape[0] < 2 * thumb and sheet.shape[2] == 3


def test_judge_best_and_best_index_follow_the_scores(worker):
    p = graph(
        {
            "class_type": "JanusR1TextToImage",
            "inputs": {"model": ["1", 0], "prompt": "a cat", "seed": 21, "batch_size": 4, **SAMPLING},
        },  # 2
        {
            "class_type": "JanusR1Judge",
            "inputs": {
                "model": ["1", 0],
                "images": ["2", 0],
                "prompt": "a cat",
                "seed": 0,
                "max_reflection": 0,
                "text_top_k": 50,
            },
        },  # 3
        save("2", 0, "judged"),  # 4
        save("3", 0, "ranked"),  # 5
        save("3", 5, "best"),  # 6
        preview_any("3", 1),  # 7: scores (exact)
        preview_any("3", 6),  # 8: best_index
    )
    out = run_ok(worker, p)["outputs"]
    scores = [float(t) for t in out["7"]["text"]]
    assert len(scores) == 4
    best_index = int(out["8"]["text"][0])
    assert best_index == int(np.argmax(scores))
    judged, ranked, [best] = saved(worker, out, "4"), saved(worker, out, "5"), saved(worker, out, "6")
    assert np.array_equal(best, judged[best_index]) and np.array_equal(best, ranked[0])
    # the report rounds for reading: every S has exactly 3 decimals and matches the exact score
    report = out["3"]["text"][0]
    shown = [float(s) for s in re.findall(r"S=(\d\.\d{3})\b", report)]
    assert len(re.findall(r"S=\S+", report)) == len(shown) == 4, report
    assert [f"{s:.3f}" for s in scores] == [f"{s:.3f}" for s in shown]
    assert any(len(t.split(".")[1]) > 3 for t in out["7"]["text"])  # the FLOAT socket stays exact


def test_best_of_n_sheet_and_rounded_report(worker):
    from janus_r1.generation.sheet import MARGIN

    p = graph(
        {
            "class_type": "JanusR1BestOfN",
            "inputs": {"model": ["1", 0], "prompt": "a cat", "seed": 5, "n": 3, **SAMPLING},
        },
        save("2", 4, "bon_sheet"),  # 3
    )
    out = run_ok(worker, p)["outputs"]
    report = out["2"]["text"][0]
    assert re.fullmatch(r"(#\d: S=\d\.\d{3} \(candidate \d\)\n?){3}", report), report
    [sheet] = saved(worker, out, "3")
    # a grid (issue 17): ceil(sqrt(3)) = 2 columns, 2 rows, each thumbnail captioned with rank and S
    assert sheet.shape[1] == 2 * 256 + 3 * MARGIN and 2 * 256 < sheet.shape[0] < 3 * 256


def test_regenerate_final_rule_and_sheet(worker):
    p = graph(
        {"class_type": "LoadImage", "inputs": {"image": "janus_r1_example_a.png"}},  # 2
        {
            "class_type": "JanusR1Regenerate",
            "inputs": {
                "model": ["1", 0],
                "image": ["2", 0],
                "prompt": "a cat",
                "seed": 4,
                "max_rounds": 3,
                "always_redraw": True,
                "text_top_k": 50,
                "max_reflection": 12,
                "final": "best score",
                **SAMPLING,
            },
        },  # 3
        save("3", 0, "regen_final"),  # 4
        save("3", 1, "regen_attempts"),  # 5
        save("3", 4, "regen_sheet"),  # 6
        save("2", 0, "regen_input"),  # 7
    )
    out = run_ok(worker, p)["outputs"]
    text = out["3"]["text"][0]
    k, n, rule, _ = FINAL.search(text).groups()
    attempts, [final] = saved(worker, out, "5"), saved(worker, out, "4")
    # the chosen attempt; when that is the input, the input itself at its own size (issue 17, finding 2)
    chosen = saved(worker, out, "7")[0] if int(k) == 1 else attempts[int(k) - 1]
    assert int(n) == len(attempts) >= 2 and np.array_equal(final, chosen)
    assert rule == "best score", text
    [sheet] = saved(worker, out, "6")
    assert sheet.shape[1] == len(attempts) * 256 + (len(attempts) + 1) * 8


def test_live_preview_is_throttled_by_wall_clock_and_one_bar_moves_forward(worker):
    """The live preview is throttled by wall-clock time within each image phase; and (issue 25, finding 7) the
    node's progress is ONE bar over its whole run -- every report has the same total (three rounds of an image
    and a judgement), the value never goes back, and the run ends at 100 %."""
    res = run_ok(worker, graph(cot(seed=SEED, max_reflection=20), save("2")))
    n_img, refl, rounds = 16, 20, 3  # the micro model's image tokens; reflections of 20 tokens
    mine = [(v, tot, preview, t) for node, v, tot, preview, t in res["progress"] if node == "2"]
    total = rounds * (n_img + refl)
    assert {tot for _, tot, _, _ in mine} == {total}, {tot for _, tot, _, _ in mine}
    values = [v for v, *_ in mine]
    assert values == sorted(values) and values[-1] == total and values[0] < n_img
    phases: dict[int, list] = {}  # round k's image phase fills values (k * 36, k * 36 + 16]
    for v, _, preview, t in mine:
        k, within = divmod(v - 1, n_img + refl)
        if within < n_img:
            phases.setdefault(k, []).append((within + 1, preview, t))
    phases = [phases[k] for k in sorted(phases)]
    assert len(phases) == 3, phases
    for ph in phases:
        assert ph[-1][:2] == (n_img, True)  # the finished image is always previewed
        previews = [t for step, preview, t in ph if preview]
        gaps = np.diff(previews[:-1]) if len(previews) > 2 else []
        assert all(g >= 0.5 for g in gaps)  # never more than one per half second before the last
        assert len(previews) <= 2 + (ph[-1][2] - ph[0][2]) / 0.5


def _throttle_module(name: str = "throttle"):
    spec = importlib.util.spec_from_file_location(f"janus_r1_nodes_{name}", REPO / "nodes" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_work_bar_moves_forward_over_every_phase():
    """Issue 25, finding 7: one bar over a run of phases that restart their own counts (image 1, judge 1 ending
    early at EOS, image 2 started without a phase label, ...): it never goes back, never passes its total,
    and ``finish`` brings a run that stopped early to the end."""
    mod = _throttle_module("work")
    bar = mod.WorkBar(mod.Work(images=3, texts=3, text_steps=20), image_steps=16)
    assert bar.total == 3 * (16 + 20)
    seen = []
    for k in range(2):
        bar.phase()  # the engine names the image phase
        seen += [bar.step("image", s, 16) for s in range(1, 17)]
        if k == 0:
            bar.phase()
        seen += [bar.step("text", s, 24) for s in range(1, 9)]  # ends at EOS after 8 of 24 steps
    assert seen == sorted(seen) and seen[-1] < bar.total
    assert seen[15] == 16 and seen[16 + 8] == 36 + 1  # judge 1 fills its own slot; image 2 starts after it
    assert bar.step("image", 1, 16) > seen[-1]  # an unnamed phase (its steps restart) closes the last
    assert bar.finish() == bar.total
    assert mod.WorkBar(mod.Work(), image_steps=16).total == 1  # nothing planned: still a bar


@pytest.mark.parametrize("step_s, decode_s", [(0.01, 0.0), (0.001, 0.0), (0.01, 0.2)])
def test_preview_throttle_counts_seconds_not_tokens(step_s, decode_s):
    mod = _throttle_module()
    now = [0.0]
    th = mod.PreviewThrottle(clock=lambda: now[0])
    total, shown, decoding = 576, [], 0.0
    for step in range(1, total + 1):
        now[0] += step_s
        if th.due(step, total):
            started = now[0]
            now[0] += decode_s
            decoding += decode_s
            th.done(started)
            shown.append(step)
    loop = total * step_s
    assert shown[-1] == total  # plus the last
    assert len(shown) - 1 <= loop / mod.PREVIEW_INTERVAL_S + 1  # by seconds, whatever the token rate
    assert decoding <= mod.PREVIEW_MAX_SHARE * (loop + decoding) + decode_s  # a slow decode is spaced out


def test_memory_needed_is_the_engines_per_task_answer(micro):
    from janus_r1.model import memory as M

    m, n = micro.model, micro.num_image_tokens
    assert M.memory_needed(m, "text_to_image", batch=2) == M.run_bytes(m, 4, M.PROMPT_TOKENS, n, 2)
    assert M.memory_needed(m, "judge", batch=3, reflection=40) == M.run_bytes(
        m, 3, M.PROMPT_TOKENS + n + M.SELF_CHECK_TOKENS, 40
    )
    ctx = M.context_tokens(n, 3, 64)
    assert M.memory_needed(m, "generate", batch=2, rounds=3, reflection=64) == M.run_bytes(m, 4, ctx, 0, 2)
    assert M.memory_needed(m, "regenerate", 1, 3, 64) < M.memory_needed(m, "regenerate", 1, 4, 64)
    assert M.memory_needed(m, "edit", batch=2) == M.run_bytes(m, 4, n + M.EDIT_TEXT_TOKENS, n, 2)
    assert M.memory_needed(m, "best_of_n", 4) >= M.memory_needed(m, "text_to_image", 4)
    assert M.memory_needed(m, "text_to_image", 1, prompt_tokens=1000) > M.memory_needed(m, "text_to_image", 1)
    with pytest.raises(ValueError, match="task must be one of"):
        M.memory_needed(m, "dream")


def test_preview_image_is_the_partial_row_padded_with_its_last_code(micro):
    """What the live preview shows (RunHooks asks the engine, it does not decode itself)."""
    import torch

    n = micro.num_image_tokens
    codes = torch.randint(0, 64, (2, 5))
    padded = torch.cat([codes[:1], codes[:1, -1:].expand(1, n - 5)], dim=1)
    want = micro.janus.decode_codes(padded)[0]
    assert np.array_equal(np.asarray(micro.preview_image(codes)), np.asarray(want))
    full = torch.randint(0, 64, (1, n))
    assert np.array_equal(
        np.asarray(micro.preview_image(full)), np.asarray(micro.janus.decode_codes(full)[0])
    )
