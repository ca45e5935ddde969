"""device_check's Jacobi figures (issue 26) on the CPU, micro geometry: every key filled with a figure that can be
true, appended to the report's keys without renaming any, and bench/jacobi.py's own measure on the caller's stats."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import device_check  # noqa: E402
import device_figures  # noqa: E402
import jacobi  # noqa: E402  (bench/jacobi.py)

# the keys device_check printed before the Jacobi figures, in order: a reader of its last line keeps working
EARLIER = ("device", "gpu", "geometry", "dtype", "torch", "build_s", "numerics", "kernels_per_layer")


def test_device_check_reports_jacobi_figures_per_image_on_the_cpu():
    j, _ = device_figures.build("micro", torch.device("cpu"), torch.float32)
    n = j.num_image_tokens
    rep = device_check.Report(budget_s=600.0)
    rep.section("jacobi", lambda: jacobi.device_figures(j, rep.put, n, window=4, batches=(1, 3)))
    assert rep["skipped"] == []
    assert device_check.KEYS[: len(EARLIER)] == EARLIER and device_check.KEYS[-len(jacobi.DEVICE_KEYS):] == \
        jacobi.DEVICE_KEYS
    assert rep["jacobi_window"] == 4 and rep["jacobi_tokens"] == n
    assert rep["jacobi_greedy_identical"] is True and rep["jacobi_greedy_first_diff"] is None
    assert rep["jacobi_forwards_per_image_ar"] == n  # the prefill, then one step per further token
    for b in (1, 3):
        assert 1 < rep[f"jacobi_forwards_per_image_b{b}"] <= n  # every pass commits at least one token
        ar, jac = rep[f"jacobi_ms_per_image_ar_b{b}"], rep[f"jacobi_ms_per_image_b{b}"]
        assert ar > 0 and jac > 0 and abs(rep[f"jacobi_speedup_b{b}"] - ar / jac) <= 1e-3 * ar / jac + 1e-4
    assert rep["jacobi_ms_per_image_b16"] is None  # batch 16 not asked for here: null, not a made-up figure


def test_bench_jacobi_measure_counts_its_own_forwards(micro):
    got = jacobi.measure(micro, window=4, repeats=1, runner="fixed")
    n = micro.num_image_tokens
    assert got["tokens_identical"] is True and got["forwards_per_image_ar"] == n
    assert 1 < got["forwards_per_image_jacobi"] <= n
    assert got["forward_ratio"] == round(n / got["forwards_per_image_jacobi"], 3)
