"""The ``janus-r1`` CLI on tiny models written to disk: outputs, traces, JSON lines, errors, atomic writes."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from janus_r1 import JanusR1Error, cli, outputs
from janus_r1.generation.sheet import CHOSEN, MARGIN
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
        sheet = Image.open(out / f"{n:03d}_sheet.png")  # every attempt side by side (tests/generation/test_sheet.py)
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
    warns = [ln for ln in p.stderr.splitlines() if "NOISE" in ln]  # the UserWarning: one line, no source line
    assert warns and warns[0].startswith("warning:") and "warnings.warn(" not in p.stderr
    assert "UserWarning" not in p.stderr
    assert (tmp_path / "cache" / "tiny-random" / "config.json").is_file()


# --- issue 9: seeds, final rule, sheets, re-encode pixels, chunks, atomic sets, umask, quiet -------------

def test_default_seed_is_drawn_recorded_and_repeats_the_run(tiny_dir, tmp_path, capsys):
    assert run(capsys, "generate", "a red cat", "--model", tiny_dir, "--out", tmp_path / "a", "--plain",
               "--quiet")[0] == 0
    seed = json.loads((tmp_path / "a" / "trace.json").read_text())["seed"]
    assert isinstance(seed, int) and seed >= 0
    samples = json.loads((tmp_path / "a" / "trace.json").read_text())["samples"]
    assert samples[0]["seed"] == seed
    assert run(capsys, "generate", "a red cat", "--model", tiny_dir, "--out", tmp_path / "b", "--plain",
               "--quiet", "--seed", seed)[0] == 0
    assert (tmp_path / "a" / "000.png").read_bytes() == (tmp_path / "b" / "000.png").read_bytes()


def test_regenerate_final_best_and_contact_sheet(tiny_dir, tmp_path, capsys):
    src = tmp_path / "in.png"
    Image.new("RGB", (70, 50), (20, 200, 20)).save(src)
    code, _, _ = run(capsys, "regenerate", src, "--prompt", "a red cat", "--model", tiny_dir, "--out",
                     tmp_path / "r", "--seed", 4, "--quiet", "--max-reflection", 4, "--max-rounds", 3,
                     "--always-redraw", "--final", "best")
    assert code == 0
    t = json.loads((tmp_path / "r" / "trace.json").read_text())
    s = t["samples"][0]
    assert t["final_rule"] == "best" and s["final_rule"] == "best"
    scored = [(a["score"], i) for i, a in enumerate(s["attempts"]) if a["score"] is not None]
    assert s["final"] == max(scored)[1]
    sheet = Image.open(tmp_path / "r" / "000_sheet.png")
    n = len(s["attempts"])
    assert sheet.width == n * 256 + (n + 1) * MARGIN
    x = MARGIN + s["final"] * (256 + MARGIN) - 3  # the chosen attempt's frame, in the margin to its left
    assert sheet.getpixel((x, MARGIN + 128)) == CHOSEN


def test_reencode_uses_the_released_truncation_for_kept_and_judged_pixels(tiny_dir, tmp_path, capsys):
    from janus_r1 import JanusR1
    from janus_r1.generation import images as imgs
    from janus_r1.generation import vq

    x = torch.tensor([-0.9161, 0.0, 0.999, -1.2, 1.3]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert np.asarray(imgs.to_pil(x)[0])[0, :, 0].tolist() == [11, 128, 255, 0, 255]  # (x+1)/2*255 = 10.7, ...
    assert np.asarray(imgs.to_pil(x, truncate=True)[0])[0, :, 0].tolist() == [10, 127, 254, 0, 255]
    jr = JanusR1.from_pretrained(str(tiny_dir), device="cpu", progress=False)
    seen = []
    real = jr.janus.embed_und
    jr.janus.embed_und = lambda pics: seen.extend(np.asarray(p).copy() for p in pics) or real(pics)
    for mode, extra in (("round", []), ("trunc", ["--reencode"])):
        seen.clear()
        out = tmp_path / mode
        assert run(capsys, "generate", "a red cat", "--model", tiny_dir, "--out", out, "--seed", 5, "--quiet",
                   "--max-rounds", 2, "--max-reflection", 3, *extra)[0] == 0
        s = json.loads((out / "trace.json").read_text())["samples"][0]
        a = s["attempts"][0]
        pixels = vq.decode(jr.model.model.vqmodel, torch.tensor([a["codes"]]))
        want = np.asarray(imgs.to_pil(pixels, truncate=mode == "trunc")[0])
        assert np.array_equal(np.asarray(Image.open(out / a["file"])), want)
        jr.judge(Image.open(out / a["file"]), "a red cat", max_reflection=1)  # the judge reads the PNG as kept
        assert np.array_equal(seen[-1], want)


def test_chunks_are_deterministic_for_a_seed_and_chunk_size(tiny_dir, tmp_path, capsys):
    from janus_r1.runplan import chunk_seed

    def go(name, *extra):
        assert run(capsys, "generate", "a red cat", "a dog", "--model", tiny_dir, "--out", tmp_path / name,
                   "--num-images", 2, "--plain", "--quiet", "--seed", 9, *extra)[0] == 0
        t = json.loads((tmp_path / name / "trace.json").read_text())
        return t, [(tmp_path / name / f"{i:03d}.png").read_bytes() for i in range(4)]

    t1, a = go("c2", "--chunk-size", 2)
    _, b = go("c2again", "--chunk-size", 2)
    t_all, whole = go("whole")
    _, one_chunk = go("c4", "--chunk-size", 4)
    assert a == b  # same seed and chunk size: the same images
    assert one_chunk == whole and t_all["chunk_size"] == 4  # one chunk is the unchunked run
    assert t1["chunk_size"] == 2
    assert [s["seed"] for s in t1["samples"]] == [9, 9, chunk_seed(9, 1), chunk_seed(9, 1)]
    assert [(s["prompt"], s["index"]) for s in t1["samples"]] == [("a red cat", 0), ("a red cat", 1),
                                                                   ("a dog", 0), ("a dog", 1)]
    assert chunk_seed(9, 1) not in (9, 10, 11) and chunk_seed(9, 0) == 9


def test_plan_chunk_fits_the_free_memory_and_refuses_what_cannot(micro):
    from janus_r1.model.memory import estimate
    from janus_r1.runplan import plan_chunk, result_bytes

    def need(s):
        e = estimate(micro.model, samples=s, max_rounds=3, max_reflection=8, prompt_tokens=200)
        return e.total - e.weights

    held = 10 * result_bytes(64, 16, 3)
    free = held + need(3) + 1  # room for 3 samples at once, not 4
    assert plan_chunk(micro.model, 10, 3, 8, 200, avail=lambda d: free) == 3
    assert plan_chunk(micro.model, 2, 3, 8, 200, avail=lambda d: free) == 2
    with pytest.raises(JanusR1Error, match="--chunk-size 5 needs about"):
        plan_chunk(micro.model, 10, 3, 8, 200, chunk_size=5, avail=lambda d: free)
    with pytest.raises(JanusR1Error, match="one sample needs about"):
        plan_chunk(micro.model, 10, 3, 8, 200, avail=lambda d: held + need(1) - 1)
    with pytest.raises(JanusR1Error, match=r"--num-images: 10 sample\(s\) of up to 3 image\(s\) need about"):
        plan_chunk(micro.model, 10, 3, 8, 200, avail=lambda d: held - 1)


@pytest.mark.parametrize("fail_on", ["000_sheet.png", "trace.json"])
def test_a_failed_write_leaves_nothing_behind(tiny_dir, tmp_path, capsys, monkeypatch, fail_on):
    """Disk full while writing a sheet (after 000.png) or trace.json (the last file): exit 1, one error line,
    no file and no temporary folder left."""
    real = outputs._write_new

    def full(path, data):
        if Path(path).name == fail_on:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)

    monkeypatch.setattr(outputs, "_write_new", full)
    out = tmp_path / "out"
    code, _, err = run(capsys, "generate", "a red cat", "--model", tiny_dir, "--out", out, "--seed", 1, "--quiet",
                       "--max-rounds", 2, "--max-reflection", 3)
    assert code == 1 and err.startswith("error: cannot write the results into") and len(err.splitlines()) == 1
    assert "No space left on device" in err and "nothing was written" in err
    assert not out.exists() and os.listdir(tmp_path) == []


def test_a_failed_write_into_an_existing_folder_keeps_its_old_files(tmp_path, monkeypatch, micro):
    out = tmp_path / "out"
    out.mkdir()
    (out / "000.png").write_bytes(b"old")
    res = micro.text_to_image(["a", "b"], seed=0)
    real = outputs._write_new
    calls = {"n": 0}

    def full(path, data):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(outputs, "_write_new", full)
    with pytest.raises(OSError):
        outputs.write_results(out, res, {})
    assert sorted(os.listdir(tmp_path)) == ["out"] and os.listdir(out) == ["000.png"]
    assert (out / "000.png").read_bytes() == b"old"
    monkeypatch.setattr(outputs, "_write_new", real)
    outputs.write_results(out, res, {})  # into an existing folder: files replaced, trace.json last
    assert sorted(os.listdir(out)) == ["000.png", "001.png", "trace.json"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_respect_the_umask(tmp_path, micro, umask):
    res = micro.text_to_image(["a"], seed=0)
    old = os.umask(umask)
    try:
        outputs.write_results(tmp_path / "run", res, {}, sheets=True)
        outputs.atomic_write_bytes(tmp_path / "single.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o777 & ~umask
    for f in ["run/000.png", "run/000_sheet.png", "run/trace.json", "single.json"]:
        assert stat.S_IMODE((tmp_path / f).stat().st_mode) == 0o666 & ~umask, f


def test_quiet_silences_warnings(tmp_path):
    """tiny-random warns (UserWarning) that it draws noise; with --quiet nothing reaches stderr (without it, one
    'warning:' line: test_make_tiny_then_console_script_with_tiny_random)."""
    Image.new("RGB", (16, 16)).save(tmp_path / "x.png")
    env = {**os.environ, "JANUS_R1_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "PYTHONWARNINGS": "always"}
    quiet = subprocess.run([sys.executable, "-m", "janus_r1.cli", "score", str(tmp_path / "x.png"), "--prompt",
                            "a cat", "--model", "tiny-random", "--quiet"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert 0 <= json.loads(quiet.stdout)["score"] <= 1
