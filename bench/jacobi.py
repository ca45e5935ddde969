"""Speculative Jacobi decoding vs one-token decoding of image tokens (issue 26; a benchmark, not a test).

For each model: forward passes per image (prefill included), tokens accepted per forward pass and wall time per
image at the paper's image sampling (CFG 5, temperature 1, top-k 4096) for one-token (``ar``) and Jacobi decoding,
and whether greedy Jacobi gives exactly the greedy one-token tokens. Models: (a) ``random``, the tiny random model
of our own (``--geometry real``: 576 image tokens; its nearly flat distributions say little about acceptance);
(b) ``trained``, a trained checkpoint given by ``--model PATH`` (the shapes-world model of the train-your-own issue):
without it, "trained" is ``null`` with the reason under ``trained_reason``.

The last line is one JSON object ``{"random": {...}, "trained": {...} | null}``, each with ``forward_ratio``
(one-token forward passes / Jacobi forward passes per image at the paper's sampling), ``accepted_per_forward``,
``seconds_per_image_ar``, ``seconds_per_image_jacobi``, ``tokens_identical`` (greedy), the window and the batch.
``--device cuda --batch 16`` gives the GPU figures per image at batch 16 (batch 1 by default); with the default
``--runner auto`` both sides run the ``graph`` runner on a GPU: ``ar`` replays its one-token step, Jacobi its
fixed-shape window pass (one CUDA graph per attention bucket; ``generation/window.py``).
Each pair is timed in alternation (best of ``--repeats``) so both see the same load on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from step_figures import sync

from janus_r1.generation import jacobi
from janus_r1.generation.context import build, cfg_rows
from janus_r1.generation.decode import decode_image
from janus_r1.generation.sampling import IMAGE_SAMPLING, Sampling

PROMPT = "a photo of two green apples and a yellow banana on a wooden table"


def _with(s: Sampling, decoding: str, window: int) -> Sampling:
    return Sampling(s.temperature, s.top_k, s.top_p, s.greedy, decoding=decoding, window=window)


def _ctx(j, batch: int, prompt: str = PROMPT):
    """``batch`` copies of the prompt as CFG pairs (the pairs of a batch decode at their slowest one's pace)."""
    pad = j.vocab.ids.pad
    return build(cfg_rows([[j.prompt_piece(j.prompt_ids(prompt))]] * batch, pad), j.model.get_input_embeddings(), pad)


def measure(jr, window: int, repeats: int, runner: str, batch: int = 1, prompt: str = PROMPT) -> dict:
    j = jr.janus
    ctx = _ctx(j, batch, prompt)
    n = j.num_image_tokens

    def run(s: Sampling, seed: int = 0, stats: jacobi.Stats | None = None) -> torch.Tensor:
        return decode_image(jr.model, ctx, n, 5.0, s, torch.Generator(device=j.device).manual_seed(seed),
                            runner=runner, stats=stats)

    greedy = Sampling(greedy=True, top_k=IMAGE_SAMPLING.top_k)
    identical = torch.equal(run(greedy), run(_with(greedy, "jacobi", window)))
    stats, times = jacobi.Stats(), {"ar": [], "jacobi": []}  # our own figures (no process-global state)
    for r in range(repeats + 1):  # the first round warms up
        for mode in ("ar", "jacobi"):
            sync(j.device)
            t = time.perf_counter()
            run(_with(IMAGE_SAMPLING, mode, window), seed=r, stats=stats if r and mode == "jacobi" else None)
            sync(j.device)  # the one-token loop returns with its steps still queued on a GPU
            if r:
                times[mode].append(time.perf_counter() - t)
    jac_forwards = stats.forwards_per_phase
    return {
        "batch": batch,
        "image_tokens": n,
        "window": window,
        "forwards_per_image_ar": n,  # the prefill, then one step per further token
        "forwards_per_image_jacobi": round(jac_forwards, 2),
        "forward_ratio": round(n / jac_forwards, 3),
        "accepted_per_forward": round(n / jac_forwards, 3),
        "seconds_per_image_ar": round(min(times["ar"]) / batch, 4),
        "seconds_per_image_jacobi": round(min(times["jacobi"]) / batch, 4),
        "tokens_identical": identical,
    }


# bench/device_check.py's Jacobi figures (appended to its keys; null where not measured)
DEVICE_KEYS = ("jacobi_window", "jacobi_tokens", "jacobi_greedy_identical", "jacobi_greedy_first_diff",
               "jacobi_forwards_per_image_ar", "jacobi_forwards_per_image_b1", "jacobi_ms_per_image_ar_b1",
               "jacobi_ms_per_image_b1", "jacobi_speedup_b1", "jacobi_forwards_per_image_b16",
               "jacobi_ms_per_image_ar_b16", "jacobi_ms_per_image_b16", "jacobi_speedup_b16")


def device_figures(j, put, tokens: int, window: int = 16, batches: tuple[int, ...] = (1, 16)) -> None:
    """One-token vs Jacobi on the ``graph`` runner (on a GPU both replay CUDA graphs: the one-token step, the
    window pass), for ``bench/device_check.py``: ms per image (a phase of ``tokens`` image tokens at the paper's
    sampling, divided by the batch; each mode run once untimed first, so captures are not timed) and forward
    passes per image at each batch, and whether greedy Jacobi gives the greedy one-token tokens at batch 1 (on a
    GPU the window's GEMMs have other shapes than the step's, so a near-tie may flip late: the first differing
    token is given). ``put(**figures)`` reports each figure as soon as it is known. Random weights accept about
    one draft per pass: their speed-up is the window's overhead, not what a trained model gains."""
    dev = torch.device(j.device)
    put(jacobi_window=window, jacobi_tokens=tokens)

    def run(ctx, s: Sampling, stats: jacobi.Stats | None = None) -> torch.Tensor:
        return decode_image(j.model, ctx, tokens, 5.0, s, torch.Generator(device=dev).manual_seed(0),
                            runner="graph", stats=stats)

    one = _ctx(j, 1)
    greedy = Sampling(greedy=True, top_k=IMAGE_SAMPLING.top_k)
    a, b = run(one, greedy).cpu(), run(one, _with(greedy, "jacobi", window)).cpu()
    diff = (a != b).any(dim=0).nonzero().flatten().tolist()
    put(jacobi_greedy_identical=not diff, jacobi_greedy_first_diff=diff[0] if diff else None)
    for batch in batches:
        ctx = one if batch == 1 else _ctx(j, batch)
        ms = {}
        for mode in ("ar", "jacobi"):
            s, stats = _with(IMAGE_SAMPLING, mode, window), jacobi.Stats()
            run(ctx, s)  # warm-up: lazy handles, and the CUDA-graph captures
            sync(dev)
            t = time.perf_counter()
            run(ctx, s, stats)
            sync(dev)
            ms[mode] = (time.perf_counter() - t) * 1e3 / batch
            if mode == "ar" and batch == batches[0]:
                put(jacobi_forwards_per_image_ar=stats.forwards_per_phase)
            if mode == "jacobi":
                put(**{f"jacobi_forwards_per_image_b{batch}": stats.forwards_per_phase})
        put(**{f"jacobi_ms_per_image_ar_b{batch}": ms["ar"], f"jacobi_ms_per_image_b{batch}": ms["jacobi"],
               f"jacobi_speedup_b{batch}": ms["ar"] / ms["jacobi"]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--geometry", default="real", choices=["micro", "real"], help="tiny random model geometry")
    ap.add_argument("--model", default=None, metavar="PATH", help="a trained checkpoint (shapes-world) for 'trained'")
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--runner", default="auto")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (on a GPU: the figures per image at --batch)")
    ap.add_argument("--batch", type=int, default=1, help="images per call (a batch runs at its slowest pair's pace)")
    ap.add_argument("--prompt", default="a green bar left of a yellow dot",
                    help="the trained model's prompt (default: one of the shapes world's)")
    ap.add_argument("--trained-repeats", type=int, default=20, help="--repeats for the trained model (16 tokens)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    from janus_r1 import JanusR1
    from janus_r1.model.tiny import build_tiny_model
    from janus_r1.model.vocabulary import Vocabulary

    model, tok = build_tiny_model(args.geometry, seed=0)
    out: dict = {"random": measure(JanusR1(model.to(args.device), Vocabulary(tok), source="tiny"), args.window,
                                   args.repeats, args.runner, args.batch)}
    print(json.dumps({"random_detail": out["random"]}), flush=True)
    if args.model:
        jr = JanusR1.from_pretrained(args.model, device=args.device, progress=False)
        out["trained"] = measure(jr, args.window, args.trained_repeats, args.runner, args.batch, args.prompt)
        out["trained"]["model"] = args.model
    else:
        out["trained"] = None
        out["trained_reason"] = ("not measured: no trained model given (--model PATH, the shapes-world model of "
                                 "the train-your-own issue)")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
