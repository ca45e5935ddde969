"""``janus-r1 build-data``: prompts -> images from two sources (the tiny engine and a folder) -> a judge served over
the real OpenAI protocol (the served-judge tests' server) -> label files that ``train-sft`` trains on; resume after
a kill; one file:line error per bad row; the editing filter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from test_training_served_judge import _direct, _Handler, server  # noqa: F401  (the server fixture)

from janus_r1.cli import main
from janus_r1.training import build_data as bd
from janus_r1.training.judges import QUESTION_WITH_CAPTION, CallableJudge

PROMPTS = ["a red square", "a blue square", "a green circle"]
COLOURS = {"red": (230, 20, 20), "blue": (20, 20, 230), "green": (20, 200, 20)}


def _folder(root: Path, prompts=PROMPTS, per: int = 2, meta: bool = True) -> Path:
    """A GenEval-layout folder as another generator would leave it: <promptid:05d>/samples/<k>.png."""
    for i, p in enumerate(prompts):
        d = root / f"{i:05d}" / "samples"
        d.mkdir(parents=True)
        for k in range(per):
            colour = COLOURS[p.split()[1]] if k == 0 else (128, 128, 128)
            Image.new("RGB", (48, 48), colour).save(d / f"{k:04d}.png")
        if meta:
            (root / f"{i:05d}" / "metadata.jsonl").write_text(json.dumps({"prompt": p}) + "\n")
    return root


def _prompt_file(tmp_path: Path, prompts=PROMPTS) -> Path:
    f = tmp_path / "prompts.txt"
    f.write_text("\n".join(prompts) + "\n")
    return f


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_sources_served_judge_expansion_then_train_sft(server, tmp_path, capsys):  # noqa: F811
    flux = _folder(tmp_path / "flux")
    prompts = _prompt_file(tmp_path, PROMPTS[:2])
    out = tmp_path / "data"
    judge = f"openai:{server}?model=tiny-vlm&top_logprobs=485"
    rc = main(["build-data", str(prompts), "--out", str(out), "--judge", judge, "--engine", "tiny-random",
               "--folder", f"flux={flux}", "--num-images", "2", "--expand", f"openai:{server}?model=tiny-vlm",
               "--threshold", "0.5", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    # the expansion request carries the paper's instruction and the Short:/Long: few-shot pairs
    expand = [r for _, r in _Handler.calls if r["max_tokens"] == 400]
    assert len(expand) == 2 and expand[0]["messages"][0]["content"][0]["text"].startswith(bd.EXPAND_INSTRUCTION)
    assert {r["messages"][0]["content"][0]["text"].rsplit("\n\n", 1)[1] for r in expand} == \
        {f"Short: {p}\nLong:" for p in PROMPTS[:2]}
    longs = {r["promptid"]: r["prompt"] for r in _rows(out / "prompts.jsonl")}
    for name, per in (("janus", 2), ("flux", 2)):
        rows = _rows(out / f"{name}_0.5.jsonl")
        assert [r["promptid"] for r in rows] == [0, 1]
        for r in rows:
            assert r["prompt"] == longs[r["promptid"]] and r["short"] == PROMPTS[r["promptid"]]
            assert len(r["data"]) == per and sorted(d["id"] for d in r["data"]) == list(range(per))
            assert [d["prob"] for d in r["data"]] == sorted((d["prob"] for d in r["data"]), reverse=True)
            for d in r["data"]:
                path = Path(d["img_path"]) if Path(d["img_path"]).is_absolute() else out / d["img_path"]
                assert path.is_file()
                yes = d["prob"] >= 0.5
                assert d["reason"].startswith("Yes, " if yes else "No, ") and d["state"] == (4 if yes else 0)
                assert yes or "Reason: " in d["reason"]
                if name == "flux":  # S is the judge's P(yes)/(P(yes)+P(no)) for the paper's question
                    want = _direct(QUESTION_WITH_CAPTION.format(caption=r["prompt"]), [Image.open(path)])
                    assert d["prob"] == pytest.approx(want, abs=1e-5)
    # the engine's images were drawn into OUT (GenEval layout, like `batch`)
    assert len(list((out / "images" / "janus").glob("0000[01]/samples/*.png"))) == 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sources"]["flux"]["images"] == 4 and 0 <= summary["sources"]["janus"]["mean_s"] <= 1
    # the reasons come from the judge, asked to justify the verdict S implies
    reasons = [r for _, r in _Handler.calls if r["max_tokens"] == 64]
    assert len(reasons) == 8 and "The answer is" in reasons[0]["messages"][0]["content"][1]["text"]

    run = tmp_path / "run"
    rc = main(["train-sft", "--model", "tiny-random", "--data", str(out / "janus_0.5.jsonl"),
               str(out / "flux_0.5.jsonl"), "--out", str(run), "--max-steps", "1", "--batch-size", "2",
               "--select", "state"])
    assert rc == 0, capsys.readouterr().err
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1] and log[0]["task"] in ("t2i", "judge", "regen")
    assert 0 < log[0]["loss"] < 100


def _redness(images, prompts):
    return [min(1.0, max(0.0, im.getpixel((0, 0))[0] / 255)) for im in images]


def test_a_killed_run_resumes_without_duplicates_or_torn_rows(tmp_path, monkeypatch):
    flux = _folder(tmp_path / "flux")
    prompts = _prompt_file(tmp_path)
    out = tmp_path / "data"
    calls = []

    def killed_after_one(images, prompts_):
        calls.append(list(prompts_))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the kill, in the middle of the run
        return _redness(images, prompts_)

    monkeypatch.setattr("janus_r1.training.rewards.make_reward", lambda *a, **k: CallableJudge(killed_after_one))
    args = ["build-data", str(prompts), "--out", str(out), "--judge", "custom", "--folder", f"flux={flux}",
            "--judge-batch", "2", "--quiet"]
    with pytest.raises(KeyboardInterrupt):
        bd.cmd_build_data(__import__("janus_r1.cli", fromlist=["x"]).build_parser().parse_args(args))
    journal = out / ".journal" / "flux.jsonl"
    assert [r["promptid"] for r in _rows(journal)] == [0] and not (out / "flux_0.7.jsonl").exists()
    with open(journal, "ab") as f:  # a torn write: the kill hit mid-line
        f.write(b'{"promptid": 1, "prompt": "a blue sq')
    calls.clear()
    monkeypatch.setattr("janus_r1.training.rewards.make_reward", lambda *a, **k: CallableJudge(_redness))
    assert main(args) == 0
    rows = _rows(out / "flux_0.7.jsonl")
    assert [r["promptid"] for r in rows] == [0, 1, 2]  # each prompt once
    assert [r["promptid"] for r in _rows(journal)] == [0, 1, 2]
    red = rows[0]["data"][0]
    assert red["prob"] == pytest.approx(230 / 255, abs=1e-6) and red["state"] == 4 and red["reason"].startswith("Yes")
    assert rows[1]["data"][-1]["state"] == 0 and "Reason: " in rows[1]["data"][-1]["reason"]
    assert main(args) == 0 and _rows(out / "flux_0.7.jsonl") == rows  # a finished run started again: the same


@pytest.mark.parametrize("case", ["prompt", "folder", "edit", "long"])
def test_a_bad_row_is_one_error_with_file_and_line_and_nothing_written(tmp_path, capsys, case):
    out = tmp_path / "data"
    if case == "prompt":
        f = tmp_path / "p.jsonl"
        f.write_text('{"prompt": "a red square"}\n\n{"prompt": ""}\n')
        args, where = [str(f), "--folder", str(_folder(tmp_path / "flux"))], f"{f}:3:"
    elif case == "folder":
        flux = _folder(tmp_path / "flux")
        (flux / "00001" / "metadata.jsonl").write_text(json.dumps({"prompt": "a yellow cat"}) + "\n")
        args, where = [str(_prompt_file(tmp_path)), "--folder", str(flux)], f"{flux / '00001' / 'metadata.jsonl'}:1:"
    elif case == "long":  # over the engine's (and train-sft's) 200-token budget: found before anything is drawn
        f = _prompt_file(tmp_path, ["a red square", "a red square " * 80])
        args, where = [str(f), "--engine", "tiny-random"], f"{f}:2: the prompt: prompt is "
    else:
        f = tmp_path / "edit.jsonl"
        Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
        f.write_text(json.dumps({"sample_id": 0, "text": "make it red", "input": "a.png", "output": "a.png"}) + "\n"
                     + json.dumps({"sample_id": 1, "text": "make it blue", "input": "a.png"}) + "\n")
        args, where = ["--edit", str(f)], f"{f}:2:"
    assert main(["build-data", *args, "--out", str(out), "--judge", "openai:http://127.0.0.1:9/v1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and where in err[0], err
    assert not list(out.rglob("*.png")) if case == "long" else not out.exists()


def test_edit_pairs_are_kept_only_when_both_scores_reach_the_threshold(tmp_path, monkeypatch):
    from janus_r1.model.tiny import build_tiny_tokenizer
    from janus_r1.model.vocabulary import Vocabulary
    from janus_r1.training.data import load_edit_rows

    scores = {"follow and keep": (0.9, 0.7), "only follow": (0.95, 0.5), "only keep": (0.69, 0.99)}
    meta = tmp_path / "src" / "edit.jsonl"
    meta.parent.mkdir()
    for i in range(2):
        Image.new("RGB", (16, 16), (10 * i, 0, 0)).save(meta.parent / f"{i}.png")
    meta.write_text("".join(json.dumps({"sample_id": k, "text": t, "input": "0.png", "output": "1.png"}) + "\n"
                            for k, t in enumerate(scores)))
    seen = []

    def edit_fn(sources, outputs, instructions):
        seen.extend(instructions)
        return [scores[t] for t in instructions]

    monkeypatch.setattr("janus_r1.training.rewards.make_reward", lambda *a, **k: CallableJudge(None, edit_fn))
    out = tmp_path / "data"
    assert main(["build-data", "--edit", str(meta), "--out", str(out), "--judge", "custom", "--quiet"]) == 0
    assert seen == list(scores)
    kept = _rows(out / "edit_0.7.jsonl")
    assert [r["text"] for r in kept] == ["follow and keep"] and kept[0]["s_preserve"] == 0.7
    rows, report = load_edit_rows([str(out / "edit_0.7.jsonl")], Vocabulary(build_tiny_tokenizer()),
                                  check_images=True)  # the editing SFT format train-sft reads
    assert [r.instruction for r in rows] == ["follow and keep"] and rows[0].input == str(meta.parent / "0.png")
    summary = json.loads((out / "summary.json").read_text())["edit"]
    assert (summary["pairs"], summary["kept"]) == (3, 1)


def test_released_reason_form_and_state_codes():
    assert bd.released_reason(True, "yes. The square is red.") == "Yes, The square is red."
    assert bd.released_reason(False, "No, the square is blue") == \
        "No, the image does not match the description. Reason: the square is blue"
    assert bd.released_reason(False, "") == "No, " + bd.NO_PREFIX + bd.NO_DEFAULT
    assert bd.released_reason(True, "") == "Yes, " + bd.YES_DEFAULT
    assert [bd.state_code(y, s, 0.7) for y, s in [(True, 0.9), (True, 0.6), (False, 0.8), (False, 0.1)]] == \
        [4, 3, 1, 0]
    assert bd.clean_expansion(" Long: A red square. It is matte.\n\nShort: x\nLong: y") == "A red square. It is matte."


def test_in_process_judges_write_reasons_that_agree_with_s(server, tmp_path):  # noqa: F811
    """vlm: (the served test VLM, in process) and a Janus model (self:PATH): each writes its own text, in the
    released form of the verdict S implies -- also when S and the judge's own sampled first word disagree."""
    from janus_r1.training.rewards import VLMJudge, make_reward

    model, proc = _Handler.vlm
    red = Image.new("RGB", (48, 48), COLOURS["red"])
    for judge in (VLMJudge("in-memory", model=model, processor=proc), make_reward("self:tiny-random")):
        reasons = bd.explain(judge, [red, red, red], ["a red square"] * 3, [0.9, 0.2, 0.5], seed=3)
        assert reasons[0].startswith("Yes, ") and reasons[2].startswith("Yes, ")
        assert reasons[1].startswith("No, ") and "Reason: " in reasons[1]
        assert any(r not in ("Yes, " + bd.YES_DEFAULT, "No, " + bd.NO_PREFIX + bd.NO_DEFAULT) for r in reasons)


def test_a_journal_of_another_prompt_file_is_refused(tmp_path, monkeypatch, capsys):
    flux = _folder(tmp_path / "flux", meta=False)
    out = tmp_path / "data"
    monkeypatch.setattr("janus_r1.training.rewards.make_reward", lambda *a, **k: CallableJudge(_redness))
    args = ["--out", str(out), "--judge", "custom", "--folder", f"flux={flux}", "--quiet"]
    assert main(["build-data", str(_prompt_file(tmp_path)), *args]) == 0
    other = tmp_path / "other.txt"
    other.write_text("a yellow cat\n")
    assert main(["build-data", str(other), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "flux.jsonl: prompt 0 was labelled for another text than" in err[0] and \
        f"{other}:1" in err[0]


@pytest.mark.skipif(shutil.which("accelerate") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "accelerate")), reason="accelerate is not installed")
def test_two_processes_draw_the_engine_images_and_rank_0_labels_them(tmp_path, launch_report):
    from janus_r1.model.tiny_files import write_tiny

    model = write_tiny(tmp_path / "tiny", geometry="micro")
    prompts = _prompt_file(tmp_path, PROMPTS[:2])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "JANUS_R1_CACHE": str(tmp_path),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    accel = os.path.join(os.path.dirname(sys.executable), "accelerate")
    accel = accel if os.path.exists(accel) else shutil.which("accelerate")
    out = tmp_path / "data"
    p = subprocess.run([accel, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                        "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
                        "--main_process_port", "0", "-m", "janus_r1.cli", "build-data", str(prompts),
                        "--out", str(out), "--engine", f"tiny={model}", "--num-images", "1",
                        "--judge", f"self:{model}", "--quiet"], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, launch_report(p)
    ranks = {json.loads((out / "images" / "tiny" / f"{i:05d}" / "trace.json").read_text())["rank"] for i in range(2)}
    assert ranks == {0, 1}
    rows = _rows(out / "tiny_0.7.jsonl")
    assert [r["promptid"] for r in rows] == [0, 1] and all(len(r["data"]) == 1 for r in rows)
    assert all(d["reason"].startswith("Yes, " if d["prob"] >= 0.5 else "No, ") for r in rows for d in r["data"])


def test_parquet_labels_read_like_the_jsonl_ones_and_the_summary_is_printed(tmp_path, monkeypatch, capsys):
    from janus_r1.model.tiny import build_tiny_tokenizer
    from janus_r1.model.vocabulary import Vocabulary
    from janus_r1.training.data import load_t2i_labels

    flux = _folder(tmp_path / "flux")
    monkeypatch.setattr("janus_r1.training.rewards.make_reward", lambda *a, **k: CallableJudge(_redness))
    vocab = Vocabulary(build_tiny_tokenizer())
    recs = {}
    for fmt in ("jsonl", "parquet"):
        out = tmp_path / fmt
        assert main(["build-data", str(_prompt_file(tmp_path)), "--out", str(out), "--judge", "custom",
                     "--folder", f"flux={flux}", "--format", fmt]) == 0
        got, report = load_t2i_labels([str(out / f"flux_0.7.{fmt}")], vocab, check_images=True)
        recs[fmt] = [(r.promptid, r.prompt, [(Path(x.path).name, x.reason, x.prob, x.state) for x in r.images])
                     for r in got]
    assert recs["parquet"] == recs["jsonl"] and len(recs["jsonl"]) == 3
    lines = capsys.readouterr().out.strip().splitlines()
    # per prompt its colour and a grey image: red S 0.90 (the one positive), blue and green S 0.08, grey S 0.502
    assert lines[-1].startswith("flux: 3 prompts, 6 images, mean S ") and "positives (S >= 0.7) 0.1667" in lines[-1] \
        and "negatives (S < 0.5) 0.3333" in lines[-1]


def test_an_unreadable_image_is_one_error_naming_it_and_its_prompt(tmp_path, monkeypatch, capsys):
    flux = _folder(tmp_path / "flux")
    bad = flux / "00001" / "samples" / "0001.png"
    bad.write_bytes(b"not a png")
    monkeypatch.setattr("janus_r1.training.rewards.make_reward", lambda *a, **k: CallableJudge(_redness))
    prompts = _prompt_file(tmp_path)
    assert main(["build-data", str(prompts), "--out", str(tmp_path / "d"), "--judge", "custom", "--folder",
                 str(flux), "--judge-batch", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and f"{prompts}:2" in err[0]
    assert [r["promptid"] for r in _rows(tmp_path / "d" / ".journal" / "flux.jsonl")] == [0]  # kept for the resume


def test_a_judge_with_its_own_reasons_gives_them_in_the_released_form():
    class Rule(CallableJudge):
        def judge(self, images, prompts):
            return [(1.0, "Yes, the image shows a red square."),
                    (0.2, "No, the image does not match the prompt. Reason: there is no red square.")]

    class Explaining(CallableJudge):
        def explain(self, images, prompts, scores):
            return ["it is red", "it is blue"]

    im = Image.new("RGB", (8, 8))
    assert bd.explain(Rule(_redness), [im, im], ["a red square"] * 2, [1.0, 0.2]) == \
        ["Yes, the image shows a red square.", "No, the image does not match the prompt. Reason: there is no red square."]
    assert bd.explain(Explaining(_redness), [im, im], ["a red square"] * 2, [0.8, 0.1]) == \
        ["Yes, it is red", "No, " + bd.NO_PREFIX + "it is blue"]


def test_served_judge_edit_filter_then_train_sft_edit(server, tmp_path, capsys):  # noqa: F811
    from janus_r1.training.rewards import make_reward

    spec = f"openai:{server}?model=tiny-vlm&top_logprobs=485"
    red, blue = Image.new("RGB", (48, 48), COLOURS["red"]), Image.new("RGB", (48, 48), COLOURS["blue"])
    red.save(tmp_path / "red.png")
    blue.save(tmp_path / "blue.png")
    pairs = [("make it blue", "red.png", "blue.png"), ("make it green", "red.png", "red.png"),
             ("add a cat", "blue.png", "red.png")]
    meta = tmp_path / "edit.jsonl"
    meta.write_text("".join(json.dumps({"sample_id": f"s{k}", "text": t, "input": a, "output": b}) + "\n"
                            for k, (t, a, b) in enumerate(pairs)))
    ims = {"red.png": red, "blue.png": blue}
    want = [(round(f, 6), round(p, 6)) for f, p in make_reward(spec, retries=0).score_edit(
        [ims[a] for _, a, _ in pairs], [ims[b] for _, _, b in pairs], [t for t, _, _ in pairs])]
    thre = sorted(min(w) for w in want)[1]  # the middle pair's weaker score: two pairs pass, one does not
    out = tmp_path / "data"
    assert main(["build-data", "--edit", str(meta), "--out", str(out), "--judge", spec, "--threshold", repr(thre),
                 "--quiet"]) == 0, capsys.readouterr().err
    label = out / f"edit_{thre:g}.jsonl"
    kept = _rows(label)
    assert [r["sample_id"] for r in kept] == [f"s{k}" for k, w in enumerate(want) if min(w) >= thre]
    assert len(kept) == 2 and all((r["s_follow"], r["s_preserve"]) == want[int(r["sample_id"][1])] for r in kept)
    run = tmp_path / "run"
    assert main(["train-sft", "--task", "edit", "--model", "tiny-random", "--data", str(label), "--out", str(run),
                 "--max-steps", "1", "--batch-size", "2"]) == 0, capsys.readouterr().err
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1] and 0 < log[0]["loss"] < 100
