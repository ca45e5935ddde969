"""``janus-r1 ask`` on a tiny model written to disk: one JSON line per image holding the engine's own answer,
--image-b, batches, seeds, and bad input as one ``error:`` line with exit 2 before the model loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from janus_r1 import JanusR1, cli, defaults
from janus_r1.model.tiny_files import write_tiny


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return write_tiny(tmp_path_factory.mktemp("models") / "tiny", layout="deepseek", geometry="micro", seed=0)


@pytest.fixture(scope="module")
def engine(tiny_dir) -> JanusR1:
    return JanusR1.from_pretrained(str(tiny_dir), device="cpu", progress=False)


@pytest.fixture(scope="module")
def pics(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("pics")
    rng = np.random.default_rng(0)
    paths = []
    for n, (w, h) in enumerate([(64, 48), (30, 64), (64, 64)]):
        paths.append(d / f"p{n}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 10)
    return paths


def run(capsys, *argv) -> tuple[int, list[dict], str]:
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, [json.loads(line) for line in out.out.splitlines()], out.err


def test_one_json_line_per_image_with_the_engines_answer(tiny_dir, engine, pics, capsys):
    code, lines, _ = run(capsys, "ask", *pics, "--question", "What is it?", "--max-new-tokens", 7,
                         "--model", tiny_dir, "--quiet")
    assert code == 0
    answers = engine.ask([str(p) for p in pics], "What is it?", max_new_tokens=7)
    assert lines == [{"image": str(p), "question": "What is it?", "answer": a.text} for p, a in zip(pics, answers)]
    # answered in batches of one: the same greedy answers
    code, one_by_one, _ = run(capsys, "ask", *pics, "--question", "What is it?", "--max-new-tokens", 7,
                              "--batch-size", 1, "--model", tiny_dir, "--quiet")
    assert code == 0 and one_by_one == lines


def test_describe_by_default_and_image_b_compares(tiny_dir, engine, pics, capsys):
    code, lines, _ = run(capsys, "ask", pics[0], "--max-new-tokens", 5, "--model", tiny_dir, "--quiet")
    [d] = engine.describe(str(pics[0]), max_new_tokens=5)
    assert code == 0 and lines == [{"image": str(pics[0]), "question": defaults.ASK_QUESTION, "answer": d.text}]
    code, lines, _ = run(capsys, "ask", pics[0], pics[1], "--image-b", pics[2], "--question", "Which is darker?",
                         "--max-new-tokens", 5, "--model", tiny_dir, "--quiet")
    both = engine.ask([[str(pics[0]), str(pics[2])], [str(pics[1]), str(pics[2])]], "Which is darker?",
                      max_new_tokens=5)
    assert code == 0 and [rec["answer"] for rec in lines] == [a.text for a in both]
    assert all(rec["image_b"] == str(pics[2]) for rec in lines)


def test_sampled_answers_record_and_repeat_their_seed(tiny_dir, pics, capsys):
    argv = ["ask", *pics[:2], "--temperature", 0.9, "--top-p", 0.8, "--max-new-tokens", 8, "--model", tiny_dir,
            "--quiet"]
    code, first, _ = run(capsys, *argv, "--seed", 5)
    assert code == 0 and all(rec["seed"] == 5 for rec in first)
    assert run(capsys, *argv, "--seed", 5)[1] == first
    code, drawn, _ = run(capsys, *argv)
    assert code == 0 and isinstance(drawn[0]["seed"], int)
    assert run(capsys, *argv, "--seed", drawn[0]["seed"])[1] == drawn


@pytest.mark.parametrize("argv, message", [
    (["--question", "  "], "error: --question is empty; ask something"),
    (["--question", "is <image_placeholder> red?"], "error: --question contains '<image_placeholder>'"),
    (["--max-new-tokens", "0"], "--max-new-tokens: must be an integer >= 1 (got '0')"),
    (["--temperature", "-1"], "--temperature: must be a number >= 0 (got '-1')"),
    (["--temperature", "nan"], "--temperature: must be a number >= 0"),
    (["--top-p", "0"], "--top-p: must be a number > 0 and <= 1 (got '0')"),
    (["--top-p", "1.5"], "--top-p: must be a number > 0 and <= 1"),
    (["--top-k", "-1"], "--top-k: must be an integer >= 0"),
    (["--batch-size", "0"], "--batch-size: must be an integer >= 1"),
    (["--seed", "-1"], "--seed: must be an integer seed in [0, "),
    (["--image-b", "{missing}"], "error: --image-b: no such file"),
    (["--image-b", "{corrupt}"], "error: --image-b: cannot read"),
    (["{missing}"], "error: images[1]: no such file"),
    (["{corrupt}"], "error: images[1]: cannot read"),
])
def test_bad_input_exits_2_with_one_error_line_before_loading(pics, tmp_path, capsys, argv, message):
    subs = {"missing": str(tmp_path / "nope.png"), "corrupt": str(pics[0].parent / "corrupt.png")}
    argv = [a.format(**subs) for a in argv]
    # the model folder does not exist: the bad input must be reported first, before any loading
    code = cli.main(["ask", str(pics[0]), *argv, "--model", str(tmp_path / "no-model"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_ask_options_read_the_defaults():
    args = cli.build_parser().parse_args(["ask", "a.png"])
    assert (args.question, args.max_new_tokens, args.temperature, args.top_p, args.top_k, args.batch_size,
            args.image_b, args.seed) == (defaults.ASK_QUESTION, defaults.ASK_MAX_NEW_TOKENS, defaults.ASK_TEMPERATURE,
                                         defaults.ASK_TOP_P, defaults.ASK_TOP_K, defaults.ASK_BATCH_SIZE, None, None)


def test_a_batch_that_cannot_fit_is_refused_before_it_runs(tiny_dir, pics, capsys, monkeypatch):
    from janus_r1 import runplan

    monkeypatch.setattr(runplan, "available_bytes", lambda device: 1024)
    code = cli.main(["ask", *map(str, pics), "--model", str(tiny_dir), "--quiet"])
    out = capsys.readouterr()
    assert code == 2 and out.out == ""
    assert out.err.startswith("error: --batch-size 3 needs about ") and out.err.count("\n") == 1
    assert "lower --batch-size or --max-new-tokens" in out.err
