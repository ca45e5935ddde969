"""The ``janus-r1`` CLI on tiny models written to disk: outputs, traces, JSON lines, errors, atomic writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from janus_r1 import cli, outputs
from janus_r1.generation.sheet import MARGIN
from janus_r1.model.tiny_files import write_tiny


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return write_tiny(tmp_path_factory.mktemp("models") / "tiny", layout="deepseek", geometry="micro", seed=0)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_generate_writes_pngs_and_trace(tiny_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "generate", "a red cat", "a blue dog", "--model", tiny_dir, "--out", out,
                          "--seed", 1, "--max-rounds", 2, "--max-reflection", 6, "--num-images", 2)
    assert code == 0 and "trace:" in stdout
    trace = json.loads((out / "trace.json").read_text())
    assert trace["command"] == "generate" and trace["seed"] == 1 and trace["max_rounds"] == 2
    assert len(trace["samples"]) == 4
    files = set()
    for n, s in enumerate(trace["samples"]):
        assert 1 <= len(s["attempts"]) <= 2 and s["final_rule"] == "last"
        assert s["final_file"] == s["attempts"][s["final"]]["file"]
        for a in s["attempts"]:
            assert len(a["codes"]) == 16 and a["verdict"] in ("Yes", "No") and 0 <= a["score"] <= 1
            assert a["reflection"].startswith(a["verdict"])
            files.add(a["file"])
            assert Image.open(out / a["file"]).size == (64, 64)
        sheet = Image.open(out / f"{n:03d}_sheet.png")  # every attempt side by side (tests/test_sheet.py)
        assert sheet.width == len(s["attempts"]) * 256 + (len(s["attempts"]) + 1) * MARGIN
        files.add(f"{n:03d}_sheet.png")
    assert files == {p.name for p in out.glob("*.png")}
    assert not list(out.glob(".*tmp")) and not list(tmp_path.glob(".*tmp"))


def test_same_seed_same_png(tiny_dir, tmp_path, capsys):
    for d in ("a", "b"):
        assert run(capsys, "generate", "a red cat", "--model", tiny_dir, "--out", tmp_path / d, "--seed", 7,
                   "--plain", "--quiet")[0] == 0
    assert (tmp_path / "a" / "000.png").read_bytes() == (tmp_path / "b" / "000.png").read_bytes()
    trace = json.loads((tmp_path / "a" / "trace.json").read_text())
    assert trace["samples"][0]["attempts"][0]["verdict"] is None  # --plain: never judged


def test_runner_option_changes_speed_not_tokens(tiny_dir, tmp_path, capsys):
    for runner in ("auto", "dynamic"):
        assert run(capsys, "generate", "a red cat", "--model", tiny_dir, "--out", tmp_path / runner, "--seed", 2,
                   "--plain", "--quiet", "--runner", runner)[0] == 0
    assert (tmp_path / "auto" / "000.png").read_bytes() == (tmp_path / "dynamic" / "000.png").read_bytes()
    assert cli.main(["generate", "x", "--out", str(tmp_path / "n"), "--runner", "warp"]) == 2


def test_score_prints_one_json_object_per_image(tiny_dir, tmp_path, capsys):
    paths = []
    for i, mode in enumerate(["RGB", "RGBA", "L"]):
        p = tmp_path / f"{i}.png"
        Image.new(mode, (40 + i, 30)).save(p)
        paths.append(p)
    code, stdout, _ = run(capsys, "score", *paths, "--prompt", "a red cat", "--model", tiny_dir, "--quiet")
    lines = [json.loads(line) for line in stdout.strip().splitlines()]
    assert code == 0 and len(lines) == 3
    for rec, p in zip(lines, paths):
        assert rec["image"] == str(p) and 0 <= rec["score"] <= 1
        assert rec["verdict"] == ("Yes" if rec["score"] >= 0.5 else "No")


def test_edit_and_regenerate(tiny_dir, tmp_path, capsys):
    src = tmp_path / "in.png"
    Image.new("RGB", (100, 80), (200, 30, 30)).save(src)
    code, _, _ = run(capsys, "edit", src, "--instruction", "make it blue", "--model", tiny_dir,
                     "--out", tmp_path / "e", "--seed", 1, "--quiet")
    t = json.loads((tmp_path / "e" / "trace.json").read_text())
    assert code == 0 and t["samples"][0]["attempts"][0]["source"] == "input"
    assert t["samples"][0]["attempts"][0]["file"] == str(src)
    assert (tmp_path / "e" / t["samples"][0]["final_file"]).is_file()
    code, _, _ = run(capsys, "regenerate", src, "--prompt", "a red cat", "--critique", "there is no cat",
                     "--model", tiny_dir, "--out", tmp_path / "r", "--seed", 1, "--quiet", "--max-reflection", 4)
    t = json.loads((tmp_path / "r" / "trace.json").read_text())
    s = t["samples"][0]
    assert code == 0 and s["attempts"][0]["reflection"] == "No, there is no cat" and len(s["attempts"]) == 2
    assert (tmp_path / "r" / s["final_file"]).is_file()


@pytest.mark.parametrize("argv, message", [
    (["generate", "   ", "--out", "{out}"], "empty"),
    (["generate", "a cat", "--out", "{out}", "--cfg", "-1"], "cfg"),
    (["generate", "a cat", "--out", "{out}", "--temperature", "0"], "temperature"),
    (["generate", "a cat", "--out", "{out}", "--top-p", "2"], "--top-p"),
    (["generate", "a cat", "--out", "{out}", "--max-rounds", "0"], "--max-rounds"),
    (["generate", "a cat", "--out", "{out}", "--num-images", "0"], "--num-images"),
    (["score", "/no/such.png", "--prompt", "a cat"], "no such file"),
])
def test_bad_input_exits_2_with_one_error_line_and_writes_nothing(tiny_dir, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    argv = [a.replace("{out}", str(out)) for a in argv] + ["--model", str(tiny_dir), "--quiet"]
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.startswith("error:") and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_bad_model_dirs(tmp_path, capsys):
    img = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(img)
    code, _, err = run(capsys, "score", img, "--prompt", "p", "--model", tmp_path / "missing")
    assert code == 2 and "does not exist" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "score", img, "--prompt", "p", "--model", tmp_path / "empty")
    assert code == 2 and "config.json" in err


def test_results_are_written_atomically(tiny_dir, tmp_path, monkeypatch, micro):
    res = micro.text_to_image(["a", "b"], seed=0)
    calls = {"n": 0}
    real = outputs.png_bytes

    def flaky(img):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(img)

    monkeypatch.setattr(outputs, "png_bytes", flaky)
    with pytest.raises(OSError):
        outputs.write_results(tmp_path / "o", res, {})
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_make_tiny_then_console_script_with_tiny_random(tmp_path):
    exe = shutil.which("janus-r1") or None
    cmd = [exe] if exe else [sys.executable, "-m", "janus_r1.cli"]
    env = {**os.environ, "JANUS_R1_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    p = subprocess.run(cmd + ["make-tiny", str(tmp_path / "t"), "--layout", "transformers"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "t" / "config.json").is_file() and (tmp_path / "t" / "tokenizer.json").is_file()
    p = subprocess.run(cmd + ["generate", "a red cube", "--model", "tiny-random", "--out", str(tmp_path / "o"),
                              "--seed", "3", "--max-rounds", "2", "--max-reflection", "4"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "draws noise" in p.stderr.lower() and (tmp_path / "o" / "000.png").is_file()
    assert (tmp_path / "cache" / "tiny-random" / "config.json").is_file()
