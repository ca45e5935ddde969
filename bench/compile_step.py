"""Should the fixed-shape decode step go through ``torch.compile``? Its cost and gain, measured (issue 16).

Times one fixed-shape image step (CFG pair, the first attention bucket) eagerly and compiled by inductor
(``dynamic=False``: one compile per bucket, as the graph runner would need), alternated, best of ``--repeats``,
and the first call's compile time (set ``TORCHINDUCTOR_FORCE_DISABLE_CACHES=1``, or a warm cache hides it).
The issue's bar for compiling: "if it compiles in seconds and once per cache-length bucket". Prints one JSON line.

    TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 python bench/compile_step.py   # tiny real geometry, CPU, ~1 min
    python bench/compile_step.py --device cuda --geometry 7b --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from device_figures import build, sync

from janus_r1.generation import runners
from janus_r1.generation.context import build as build_ctx
from janus_r1.generation.context import cfg_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--geometry", default="real", choices=["micro", "real", "1b", "7b"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["bf16", "fp32"])
    ap.add_argument("--steps", type=int, default=100, help="steps per timing")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    janus, _ = build(args.geometry, device, dtype)  # 1b / 7b: random weights of the real geometry
    model, vocab = janus.model, janus.vocab
    rows = cfg_rows([[janus.prompt_piece(janus.prompt_ids("a red cat"))]], vocab.ids.pad)
    ctx = build_ctx(rows, model.get_input_embeddings(), vocab.ids.pad)
    run = runners.StaticRunner(model, ctx, janus.num_image_tokens, fixed=True)
    at = torch.zeros(1, dtype=torch.long, device=device)
    embeds = torch.randn(2, 1, model.config.text_config.hidden_size, device=device, dtype=dtype)

    def step() -> torch.Tensor:
        run.set_bits(at, None)
        return run.step(embeds, at)

    def ms_per_step(fn) -> float:
        sync(device)
        t = time.perf_counter()
        for _ in range(args.steps):
            fn()
        sync(device)
        return (time.perf_counter() - t) * 1e3 / args.steps

    with torch.no_grad():
        run.prefill()
        run.span = run.bucket(0)
        step()
        compiled = torch.compile(step, dynamic=False)
        t = time.perf_counter()
        compiled()
        sync(device)
        first = time.perf_counter() - t
        eager = fast = float("inf")
        for _ in range(args.repeats):  # alternated, best of each: both see the same load on a shared machine
            eager = min(eager, ms_per_step(step))
            fast = min(fast, ms_per_step(compiled))
    print(json.dumps({"geometry": args.geometry, "device": str(device), "dtype": args.dtype,
                      "layers": len(run.layers), "eager_ms_per_step": round(eager, 4),
                      "compiled_ms_per_step": round(fast, 4), "speedup": round(eager / fast, 3),
                      "first_compile_s": round(first, 1), "buckets": -(-run.alloc // runners.BUCKET)}))


if __name__ == "__main__":
    main()
