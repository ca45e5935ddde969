"""Checkpoints that verify themselves (issue 24): a damaged checkpoint is never resumed or exported silently,
``--resume auto`` falls back to the newest one that verifies, a full disk is one ``error:`` line, and a background
save is published as soon as its write completes (issue 27 item 8)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("accelerate")

from test_training_distributed import ROOT, _env, _run  # noqa: E402
from test_training_fsdp import SFT  # noqa: E402

from janus_r1.training import checksums as CS  # noqa: E402
from janus_r1.training.cli import main as train_cli  # noqa: E402
from janus_r1.training.dcp_checkpoint import Saver  # noqa: E402

STEP1, STEP2 = "step-00000001", "step-00000002"
SHARD = "dcp/__0_0.distcp"


def _one_error(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in text, text[-3000:]
    return lines[0]


def _flip(path: Path, at: int, n: int = 3) -> None:
    b = bytearray(path.read_bytes())
    for i in range(at, at + n):
        b[i] ^= 0xFF
    path.write_bytes(bytes(b))


DAMAGE = {  # name -> (edit of a checkpoint folder, the fragment the error names)
    "flipped": (lambda ck: _flip(ck / SHARD, (ck / SHARD).stat().st_size // 2), f"{SHARD} does not match"),
    "truncated": (lambda ck: (ck / SHARD).write_bytes((ck / SHARD).read_bytes()[:1000]), f"{SHARD} does not match"),
    "deleted": (lambda ck: (ck / SHARD).unlink(), f"{SHARD} is missing"),
    "state": (lambda ck: (ck / "state.json").write_text((ck / "state.json").read_text()[:50]),
              "state.json does not match"),
    "metadata": (lambda ck: (ck / "dcp/.metadata").unlink(), "dcp/.metadata is missing"),
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished 2-step SFT run: checkpoints step 1 and 2 (each with its checksums), final/."""
    tmp = tmp_path_factory.mktemp("verified")
    out = tmp / "run"
    p = _run("train-sft", tmp, {**SFT, "max_steps": 2, "gradient_checkpointing": False}, out)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def _copy(run_dir: Path, dst: Path) -> Path:
    shutil.copytree(run_dir, dst, ignore=shutil.ignore_patterns("final"))
    return dst


def test_every_checkpoint_carries_checksums_sha256sum_can_check(run_dir):
    for name in (STEP1, STEP2):
        ck = run_dir / "checkpoints" / name
        listed = {line.split("  ", 1)[1] for line in (ck / CS.MANIFEST).read_text().splitlines()}
        on_disk = {p.relative_to(ck).as_posix() for p in ck.rglob("*") if p.is_file() and p.name != CS.MANIFEST}
        assert listed == on_disk and SHARD in listed and "dcp/.metadata" in listed
        if shutil.which("sha256sum"):
            assert subprocess.run(["sha256sum", "--quiet", "-c", CS.MANIFEST], cwd=ck).returncode == 0


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_not_exported(run_dir, tmp_path, capsys, damage):
    edit, fragment = DAMAGE[damage]
    run = _copy(run_dir, tmp_path / "run")
    edit(run / "checkpoints" / STEP2)
    target = tmp_path / "model"
    assert train_cli(["train-export", str(run), "--out", str(target)]) == 2
    err = _one_error(capsys.readouterr().err)
    assert f"checkpoint {run / 'checkpoints' / STEP2} is damaged: {fragment}" in err, err
    assert not target.exists() and not list(tmp_path.glob(".model.*"))


def test_resume_auto_falls_back_to_the_newest_checkpoint_that_verifies(run_dir, tmp_path):
    """3 bytes flipped in the latest shard: ``--resume auto`` says so and resumes from step 1, ending exactly as
    an undamaged resume from step 1 does; an explicit ``--resume`` of the damaged one, or a run whose every
    checkpoint is damaged, is one error line."""
    recipe = {**SFT, "max_steps": 3, "gradient_checkpointing": False}
    good = _copy(run_dir, tmp_path / "good")
    shutil.rmtree(good / "checkpoints" / STEP2)
    (good / "checkpoints" / "latest").write_text(STEP1)
    bad = _copy(run_dir, tmp_path / "bad")
    _flip(bad / "checkpoints" / STEP2 / SHARD, 4096)
    p = _run("train-sft", tmp_path, {**recipe, "resume": str(bad / "checkpoints" / STEP2)}, bad)
    assert p.returncode == 2 and f"{SHARD} does not match its checksum" in _one_error(p.stderr), p.stderr[-3000:]
    for out in (good, bad):
        p = _run("train-sft", tmp_path, recipe, out)
        assert p.returncode == 0 and f"resumed from {out / 'checkpoints' / STEP1}" in p.stderr, p.stderr[-3000:]
    assert f"{SHARD} does not match its checksum; --resume auto falls back to {STEP1}" in p.stderr
    a = CS.file_sha256(good / "final" / "model.safetensors")
    assert a == CS.file_sha256(bad / "final" / "model.safetensors")
    none = _copy(run_dir, tmp_path / "none")
    for name in (STEP1, STEP2):
        (none / "checkpoints" / name / "state.json").write_text("{")
    p = _run("train-sft", tmp_path, recipe, none)
    err = _one_error(p.stderr)
    assert p.returncode == 2 and "state.json does not match its checksum" in err and "--resume none" in err, err


class _OneProcess:
    is_main_process, num_processes, process_index = True, 1, 0

    def wait_for_everyone(self) -> None:
        pass


def _small(tmp: Path) -> None:
    (tmp / "state.json").write_text(json.dumps({"step": 1}))


def test_a_background_save_is_published_as_soon_as_its_write_completes(tmp_path):
    """Issue 27 item 8: no later save or wait() is needed for ``latest`` to name step N."""
    saver = Saver(tmp_path, _OneProcess(), use_async=True)
    if not saver.use_async:
        pytest.skip("this torch has no dcp.async_save")
    saver.save(1, {"weights.x": torch.randn(64, 64)}, _small)
    latest = tmp_path / "checkpoints" / "latest"
    deadline = time.monotonic() + 30
    while not latest.is_file() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert latest.read_text() == STEP1
    CS.verify(tmp_path / "checkpoints" / STEP1)
    saver.poll()
    assert saver.pending is None


@pytest.mark.parametrize("use_async", [False, True])
def test_a_failed_background_write_is_raised_at_the_step_end(tmp_path, monkeypatch, use_async):
    """A write that fails with a full disk (as DCP's torch.save writer reports it) is one CheckpointWriteFailed
    naming the folder; the temporary folder is gone and ``latest`` still names the last complete checkpoint."""
    import torch.distributed.checkpoint.filesystem as fs

    from janus_r1.training.atomic import CheckpointWriteFailed

    saver = Saver(tmp_path, _OneProcess(), use_async=use_async)
    saver.save(1, {"weights.x": torch.randn(8)}, _small)
    saver.wait()

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 512 vs 448")

    monkeypatch.setattr(fs, "_write_item", full)
    with pytest.raises(CheckpointWriteFailed) as e:
        saver.save(2, {"weights.x": torch.randn(8)}, _small)
        saver.wait()
    msg = e.value.strerror
    assert msg.startswith(f"no space left on device for the checkpoint in {tmp_path / 'checkpoints'}: it needs")
    assert f"last complete one (checkpoint {STEP1})" in msg and "\n" not in msg
    assert (tmp_path / "checkpoints" / "latest").read_text() == STEP1
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", STEP1]


@pytest.mark.skipif(not shutil.which("unshare") or sys.platform != "linux", reason="needs util-linux unshare")
def test_disk_full_during_a_checkpoint_is_one_error_line(tmp_path):
    """A real full disk: --out on a 24 MiB tmpfs (a private mount namespace) holds the step-1 checkpoint (~15 MB)
    but not step 2's. One ``error:`` line naming the folder and the space needed, exit 1, and step 1 stays the
    resume point."""
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("no user/mount namespaces here")
    from janus_r1.training.toy import write_toy_t2i

    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({**SFT, "max_steps": 3, "gradient_checkpointing": False}))
    data = write_toy_t2i(tmp_path / "data", n_prompts=2)
    out = tmp_path / "out"
    out.mkdir()
    train = [sys.executable, "-m", "janus_r1.training", "train-sft", "--model", "tiny-random", "--out", str(out),
             "--config", str(recipe), "--data", str(data), "--max-steps", "3"]
    script = (f"mount -t tmpfs -o size=24m tmpfs {out} && {{ {' '.join(train)}; echo rc=$?; "
              f"ls -a {out}/checkpoints; cat {out}/checkpoints/latest; }}")
    p = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=240)
    err = _one_error(p.stderr)
    assert "rc=1" in p.stdout, p.stdout + p.stderr[-3000:]
    assert err.startswith(f"error: no space left on device for the checkpoint in {out / 'checkpoints'}: it needs "
                          "about 0.01 GiB"), err
    assert "last complete one (checkpoint step-00000001)" in err and "unexpected pos" not in p.stderr
    listing = p.stdout.split()
    assert STEP1 in listing and STEP2 not in listing and not any(x.startswith(".tmp") for x in listing), p.stdout
    assert listing[-1] == STEP1
