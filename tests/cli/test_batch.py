"""Batch generation over a prompt file: validation, resume, and a real 2-process data-parallel run (gloo)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from janus_r1 import JanusR1Error
from janus_r1.batch import read_prompts, run_batch

PROMPTS = "a red cat\n# a comment\n\na blue dog\ntwo green apples\na yellow banana\na purple cube\n"


def test_read_prompts_txt_and_jsonl_with_file_line_errors(tmp_path):
    t = tmp_path / "p.txt"
    t.write_text(PROMPTS)
    items = read_prompts(t)
    assert [i.prompt for i in items] == ["a red cat", "a blue dog", "two green apples", "a yellow banana",
                                         "a purple cube"]
    assert [i.index for i in items] == list(range(5))
    j = tmp_path / "p.jsonl"
    j.write_text('{"prompt": "a cat", "tag": "single_object"}\n\n{"prompt": "two dogs"}\n')
    assert read_prompts(j)[0].meta == {"prompt": "a cat", "tag": "single_object"}
    j.write_text('{"prompt": "a cat"}\n{"text": "no prompt"}\n')
    with pytest.raises(JanusR1Error, match=r"p\.jsonl:2: expected an object"):
        read_prompts(j)
    j.write_text('{"prompt": "a cat"}\nnot json\n')
    with pytest.raises(JanusR1Error, match=r"p\.jsonl:2: not valid JSON"):
        read_prompts(j)
    with pytest.raises(JanusR1Error, match="does not exist"):
        read_prompts(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(JanusR1Error, match="no prompt"):
        read_prompts(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("a cat\na caf\xe9\n".encode("latin-1"))
    with pytest.raises(JanusR1Error, match=r"latin1\.txt:2: not UTF-8 text \(byte 0xe9 at offset 11\)"):
        read_prompts(tmp_path / "latin1.txt")
    with pytest.raises(JanusR1Error, match="is a directory"):
        read_prompts(tmp_path)
    (tmp_path / "bom.txt").write_bytes("\ufeffa cat\n".encode("utf-8"))
    assert [i.prompt for i in read_prompts(tmp_path / "bom.txt")] == ["a cat"]  # a BOM is not part of the prompt


def test_batch_layout_and_resume(micro, tmp_path):
    t = tmp_path / "p.txt"
    t.write_text(PROMPTS)
    items = read_prompts(t)
    out = tmp_path / "out"
    done = run_batch(micro, items, out, seed=3, num_images=2, max_rounds=2, max_reflection=4)
    assert done == [0, 1, 2, 3, 4]
    for i in range(5):
        d = out / f"{i:05d}"
        assert sorted(p.name for p in (d / "samples").iterdir()) == ["0000.png", "0001.png"]
        assert json.loads((d / "metadata.jsonl").read_text())["prompt"] == items[i].prompt
        assert json.loads((d / "trace.json").read_text())["prompt"] == items[i].prompt
    (out / "00002" / "trace.json").unlink()  # as if interrupted while writing prompt 2
    assert run_batch(micro, items, out, seed=3, num_images=2, max_rounds=2, max_reflection=4) == [2]


@pytest.mark.skipif(shutil.which("accelerate") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "accelerate")), reason="accelerate is not installed")
def test_two_process_accelerate_launch_matches_one_process(tmp_path, launch_report):
    from janus_r1.model.tiny_files import write_tiny

    model = write_tiny(tmp_path / "tiny", geometry="micro")
    (tmp_path / "p.txt").write_text(PROMPTS)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "JANUS_R1_CACHE": str(tmp_path)}
    args = ["batch", str(tmp_path / "p.txt"), "--model", str(model), "--seed", "5", "--max-rounds", "2",
            "--max-reflection", "4", "--quiet"]
    accel = os.path.join(os.path.dirname(sys.executable), "accelerate")
    accel = accel if os.path.exists(accel) else shutil.which("accelerate")
    p = subprocess.run([accel, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                        "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
                        "--main_process_port", "0", "-m", "janus_r1.cli", *args, "--out", str(tmp_path / "two")],
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, launch_report(p)
    p = subprocess.run([sys.executable, "-m", "janus_r1.cli", *args, "--out", str(tmp_path / "one")],
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["done_per_rank_this_run"] == [3, 2] and not summary["missing"]
    ranks = {json.loads((tmp_path / "two" / f"{i:05d}" / "trace.json").read_text())["rank"] for i in range(5)}
    assert ranks == {0, 1}
    for i in range(5):
        a = (tmp_path / "one" / f"{i:05d}" / "samples" / "0000.png").read_bytes()
        b = (tmp_path / "two" / f"{i:05d}" / "samples" / "0000.png").read_bytes()
        assert a == b, f"prompt {i} differs between 1 and 2 processes"


def test_the_run_group_is_destroyed_even_when_a_rank_fails(monkeypatch):
    """A gloo group still alive at interpreter exit can abort the process (SIGABRT), which hides the rank's own
    error: process_group destroys the group it started on the way out, and leaves a group it did not start."""
    import torch.distributed as dist

    from janus_r1.batch import process_group

    # a one-process group from the launcher's variables (port 0: the store, on rank 0, takes a free one)
    for k, v in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "0", "RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(RuntimeError, match="a rank fails"):
        with process_group(2) as group:
            assert group is dist and dist.is_initialized()
            raise RuntimeError("a rank fails")
    assert not dist.is_initialized()
    with process_group(1) as group:  # run plainly: no group
        assert group is None and not dist.is_initialized()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        with process_group(2) as group:  # the trainer's group is used, not replaced, and outlives the block
            assert group is dist
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()


def test_a_failed_prompt_write_leaves_no_partial_folder(micro, tmp_path, monkeypatch):
    from janus_r1 import outputs

    items = read_prompts_from(tmp_path, "a red cat\na blue dog\n")
    real = outputs._write_new

    def full(path, data):
        if "00001" in str(path.parent.name) or ".00001." in str(path):
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(outputs, "_write_new", full)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space"):
        run_batch(micro, items, out, seed=1, plain=True)
    assert sorted(os.listdir(out)) == ["00000"]  # prompt 0 complete, prompt 1 absent, no temporary folder
    assert sorted(os.listdir(out / "00000")) == ["attempts", "metadata.jsonl", "samples", "trace.json"]
    monkeypatch.setattr(outputs, "_write_new", real)
    assert run_batch(micro, items, out, seed=1, plain=True) == [1]  # resumes with the missing prompt


def read_prompts_from(tmp_path, text: str):
    (tmp_path / "p.txt").write_text(text)
    return read_prompts(tmp_path / "p.txt")
