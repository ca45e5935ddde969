"""What a real cluster run needs and the CPU can check in one process: the sharded reference of a model folder
is bf16 when the run computes in bf16, the HSDP mesh, gradient sync only on the last micro-batch, the collective
timeout and the judge's retry budget, rollouts in as few decodes as fit."""

from __future__ import annotations

import contextlib
import socket

import pytest
import torch

from janus_r1.training.config import GRPOConfig


@contextlib.contextmanager
def one_rank_group():
    """A gloo process group of one rank in this process (FSDP2 and device meshes need one)."""
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = dist.TCPStore("127.0.0.1", port, 1, is_master=True)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("layout", ["deepseek"])
def test_sharded_reference_of_a_model_folder_is_bf16(tmp_path, layout):
    """``materialise.build_reference`` from a model folder on disk (meta skeleton, sharded, each rank its rows):
    bf16 parameters holding the folder's weights cast to bf16 -- not fp32 ones (twice the memory and traffic)."""
    from janus_r1.model.loading import load_model
    from janus_r1.model.tiny_files import write_tiny
    from janus_r1.training import materialise as M

    folder = write_tiny(tmp_path / "model", layout=layout, shards=2)
    cfg = GRPOConfig(model=str(folder), dtype="fp32", mixed_precision="bf16", sharding="fsdp")
    assert M.reference_dtype(cfg) == torch.bfloat16
    skel, _ = M.skeleton(str(folder), torch.bfloat16)
    assert {p.dtype for p in skel.parameters()} == {torch.bfloat16} and all(p.is_meta for p in skel.parameters())
    want = load_model(str(folder), device="cpu", dtype="fp32")[0].state_dict()
    with one_rank_group():
        ref = M.build_reference(cfg, torch.device("cpu"), world=2, sharded_load=True)
        assert ref.sharded
        got = {n: p.full_tensor() if hasattr(p, "full_tensor") else p for n, p in ref.model.named_parameters()}
    assert got and {p.dtype for p in got.values()} == {torch.bfloat16}
    for n, p in got.items():
        assert torch.equal(p, want[n].to(torch.bfloat16)), n
    buffers = dict(ref.model.named_buffers())
    assert all(b.dtype == torch.float32 for n, b in buffers.items() if "inv_freq" in n)  # rotary tables as built
