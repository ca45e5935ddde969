"""Memory limits (issue 24): the container's cgroup limit (v2 and v1) bounds the host memory a run is planned
against, and an allocation that fails anyway is one ``error:`` line (CLI, exit 1) or one ``OutOfMemory``
(a ``JanusR1Error``: API, nodes) saying how much was asked for and what to do -- never a traceback, never "corrupt
weight file". Also: Cancel honoured inside a long prefill."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from PIL import Image

from janus_r1 import Cancelled, JanusR1Error, cli, host_memory
from janus_r1.generation.decode import Hooks
from janus_r1.model.tiny_files import write_tiny
from janus_r1.out_of_memory import OutOfMemory

GIB = 1 << 30
CAT = "a red cat"


def _v2(root: Path, own: str, limits: dict[str, tuple[str, int, int]]) -> Path:
    """A cgroup v2 tree: ``limits`` maps a folder (relative to the root) to (memory.max, current, inactive_file)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    for rel, (mx, cur, inactive) in limits.items():
        d = root / rel
        d.mkdir(parents=True, exist_ok=True)
        (d / "memory.max").write_text(f"{mx}\n")
        (d / "memory.current").write_text(f"{cur}\n")
        (d / "memory.stat").write_text(f"anon {cur}\ninactive_file {inactive}\nactive_file 0\n")
    proc = root.parent / "proc-cgroup"
    proc.write_text(f"0::{own}\n")
    return proc


def test_cgroup_v2_tightest_limit_wins_and_page_cache_counts_as_free(tmp_path):
    root = tmp_path / "cg"
    proc = _v2(root, "/docker/abc", {"": ("max", 50 * GIB, 0), "docker": (str(4 * GIB), GIB, 0),
                                      "docker/abc": (str(2 * GIB), GIB, GIB // 2)})
    lim = host_memory.cgroup_limit(root, proc)
    assert lim.limit == 2 * GIB and lim.available == 2 * GIB - GIB // 2 and lim.where.endswith("abc/memory.max")
    proc = _v2(root, "/docker/abc", {"docker": (str(GIB + GIB // 4), GIB, 0), "docker/abc": ("max", 0, 0)})
    assert host_memory.cgroup_limit(root, proc).available == GIB // 4  # the parent's limit binds
    proc = _v2(root, "/docker/abc", {"": ("max", 0, 0), "docker": ("max", 0, 0), "docker/abc": ("max", 0, 0)})
    assert host_memory.cgroup_limit(root, proc) is None


def test_cgroup_v1_limit_and_a_container_whose_mount_is_its_own_cgroup(tmp_path):
    root = tmp_path / "cg"
    mem = root / "memory"
    mem.mkdir(parents=True)
    (mem / "memory.limit_in_bytes").write_text(f"{GIB}\n")
    (mem / "memory.usage_in_bytes").write_text(f"{GIB // 2}\n")
    (mem / "memory.stat").write_text(f"cache 0\ntotal_inactive_file {GIB // 4}\n")
    proc = tmp_path / "proc-cgroup"  # the host's path, not present under the container's mount
    proc.write_text("12:cpu,cpuacct:/\n4:memory:/process_api/f00\n0::/\n")
    lim = host_memory.cgroup_limit(root, proc)
    assert lim.limit == GIB and lim.available == GIB // 2 + GIB // 4
    (mem / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    assert host_memory.cgroup_limit(root, proc) is None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return str(write_tiny(tmp_path_factory.mktemp("model") / "tiny", geometry="micro", seed=0))


def _one_error(code: int, err: str, status: int) -> str:
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert code == status and len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    return lines[0]


def test_cli_plans_against_the_containers_limit(tiny, tmp_path, capsys, monkeypatch):
    """Under a 16 MiB container limit (of which 8 are used) 1500 micro samples (~37 MB of results) are refused
    before anything is drawn, naming the limit; the host's RAM is far larger."""
    root = tmp_path / "cg"
    proc = _v2(root, "/", {"": (str(16 << 20), 8 << 20, 0)})
    monkeypatch.setattr(host_memory, "CGROUP_ROOT", root)
    monkeypatch.setattr(host_memory, "PROC_CGROUP", proc)
    assert host_memory.host_ram_available() > 1 << 30
    monkeypatch.setattr("janus_r1.generation.introspect.draw", lambda *a, **k: pytest.fail("drew before refusing"))
    out = tmp_path / "out"
    code = cli.main(["generate", CAT, "--plain", "--num-images", "1500", "--out", str(out), "--model", tiny,
                     "--quiet"])
    err = _one_error(code, capsys.readouterr().err, 2)
    assert "is available under the container's memory limit of 0.0 GiB" in err and str(root) in err, err
    assert not out.exists()


def _real_allocation_failure(*a, **k):
    return torch.empty(1 << 50)  # torch's own "DefaultCPUAllocator: can't allocate memory" (4 PiB)


def test_an_allocation_that_fails_is_one_line_in_the_cli_and_the_api(tiny, micro, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("janus_r1.generation.introspect.draw", _real_allocation_failure)
    out = tmp_path / "out"
    code = cli.main(["generate", CAT, "--out", str(out), "--model", tiny, "--quiet"])
    err = _one_error(code, capsys.readouterr().err, 1)
    assert "out of host memory (4194304.00 GiB could not be allocated)" in err and "--quantize 4bit" in err, err
    assert not out.exists()
    with pytest.raises(OutOfMemory) as e:
        micro.generate(CAT, seed=0)
    assert isinstance(e.value, JanusR1Error) and "4194304.00 GiB" in str(e.value) and "\n" not in str(e.value)


def test_a_failed_mmap_is_not_reported_as_a_corrupt_file(tiny, monkeypatch):
    import safetensors

    from janus_r1 import JanusR1

    def no_memory(*a, **k):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(safetensors, "safe_open", no_memory)
    with pytest.raises(OutOfMemory) as e:
        JanusR1.from_pretrained(tiny, device="cpu", progress=False)
    msg = str(e.value)
    assert "model.safetensors: out of host memory" in msg and "corrupt" not in msg, msg


def test_cancel_is_honoured_inside_a_long_prefill(micro):
    """The cancel flag rises while the first decoder layer runs the prefill: ask stops before the last layer has
    seen the prompt (before, the whole prefill ran and the cancel was seen at the first token)."""
    layers = micro.model.model.language_model.layers
    seen = {"first": 0, "last": 0}

    def count(name):
        def hook(_m, args, _out):
            if args[0].shape[-2] > 1:
                seen[name] += 1
        return hook

    handles = [layers[0].self_attn.o_proj.register_forward_hook(count("first")),
               layers[-1].self_attn.o_proj.register_forward_hook(count("last"))]
    try:
        hooks = Hooks(should_cancel=lambda: seen["first"] > 0)
        with pytest.raises(Cancelled):
            micro.ask(Image.new("RGB", (32, 32)), "word " * 500, hooks=hooks)
        assert seen == {"first": 1, "last": 0}, seen
        [a] = micro.ask(Image.new("RGB", (32, 32)), "Why?", max_new_tokens=3)  # the model is usable after
        assert len(a.ids) <= 3
    finally:
        for h in handles:
            h.remove()
