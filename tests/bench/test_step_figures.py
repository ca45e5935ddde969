"""The device benches' own arithmetic, on the CPU: capture time measured after a synchronisation (never the queued
decode it waits out), figures that cannot be true reported as such, the KV-cache bytes a step reads."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import device_figures  # noqa: E402
import step_figures  # noqa: E402

from janus_r1.generation import graphs  # noqa: E402

STEP_S = 0.004  # device time of one simulated decode step


def test_capture_time_excludes_the_replays_queued_before_it(monkeypatch):
    """A simulated device that runs queued steps only when synchronised: a capture starts by waiting out the
    previous bucket's replays. Counted as capture time (subtracted), that wait made the long run -- more bucket
    boundaries -- look as fast as the short one; synchronised first, the step is the device's step time."""
    queued = [0.0]

    def sync(device) -> None:  # wait for everything queued
        time.sleep(queued[0])
        queued[0] = 0.0

    def capture(fn, generator, device):  # a real capture begins with a synchronize of the current stream
        sync(device)

    def run_n(n: int) -> None:  # a bucket (and a capture) every 8 steps, no pacing: the host runs ahead
        for t in range(n):
            if t and t % 8 == 0:
                graphs.capture(None, None, torch.device("cuda"))
            queued[0] += STEP_S

    monkeypatch.setattr(step_figures, "sync", sync)
    monkeypatch.setattr(graphs, "capture", capture)
    ms = step_figures.ms_per_step(run_n, torch.device("cuda"), 8, 40, repeats=2)
    assert 0.75 * STEP_S * 1e3 < ms < 1.6 * STEP_S * 1e3, ms


def test_a_step_faster_than_its_bytes_is_reported_as_implausible():
    gb = 10**9
    assert step_figures.implausible_step(1.0, gb, 3000.0) is None  # 1 GB at 3 TB/s: 0.33 ms floor
    assert "beats reading its 1 GB at the measured 3000 GB/s" in step_figures.implausible_step(0.2, gb, 3000.0)
    assert "not positive" in step_figures.implausible_step(-0.5, gb, 3000.0)
    assert "not positive" in step_figures.implausible_step(0.0, gb, None)
    assert step_figures.implausible_step(0.2, gb, None) is None  # no measured rate (CPU): only the sign is known
    assert step_figures.implausible_step(None, gb, 3000.0) is None


def test_bytes_per_step_counts_the_kv_cache_a_step_reads():
    from janus_r1.model.tiny import build_tiny_model

    model, _ = build_tiny_model("micro", seed=0)
    cfg = model.model.language_model.config
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    weights = device_figures.bytes_per_step(model)
    kv = cfg.num_hidden_layers * 2 * 4 * kv_heads * 100 * head_dim * 4  # k and v, 4 rows, 100 positions, fp32
    assert device_figures.bytes_per_step(model, rows=4, positions=100) == weights + kv
    assert device_figures.kv_bytes_per_step(model.bfloat16(), 4, 100) == kv // 2
