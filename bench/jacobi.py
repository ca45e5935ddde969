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
``--device cuda --batch 16`` gives the GPU figures per image at batch 16 (batch 1 by default); the window step is
not captured as a CUDA graph yet, so on a GPU the Jacobi side runs eagerly while ``ar`` replays its graph.
Each pair is timed in alternation (best of ``--repeats``) so both see the same load on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from janus_r1.generation import jacobi
from janus_r1.generation.context import build, cfg_rows
from janus_r1.generation.decode import decode_image
from janus_r1.generation.sampling import IMAGE_SAMPLING, Sampling

PROMPT = "a photo of two green apples and a yellow banana on a wooden table"


def _with(s: Sampling, decoding: str, window: int) -> Sampling:
    return Sampling(s.temperature, s.top_k, s.top_p, s.greedy, decoding=decoding, window=window)


def measure(jr, window: int, repeats: int, runner: str, batch: int = 1) -> dict:
    j = jr.janus
    ctx = build(cfg_rows([[j.prompt_piece(j.prompt_ids(PROMPT))]] * batch, jr.vocab.ids.pad),
                jr.model.get_input_embeddings(), jr.vocab.ids.pad)
    n = j.num_image_tokens

    def run(s: Sampling, seed: int = 0) -> torch.Tensor:
        return decode_image(jr.model, ctx, n, 5.0, s, torch.Generator(device=j.device).manual_seed(seed),
                            runner=runner)

    greedy = Sampling(greedy=True, top_k=IMAGE_SAMPLING.top_k)
    identical = torch.equal(run(greedy), run(_with(greedy, "jacobi", window)))
    forwards, times = [], {"ar": [], "jacobi": []}
    for r in range(repeats + 1):  # the first round warms up
        for mode in ("ar", "jacobi"):
            t = time.perf_counter()
            run(_with(IMAGE_SAMPLING, mode, window), seed=r)
            if r:
                times[mode].append(time.perf_counter() - t)
            if r and mode == "jacobi":
                forwards.append(jacobi.LAST_STATS.forwards)
    jac_forwards = sum(forwards) / len(forwards)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--geometry", default="real", choices=["micro", "real"], help="tiny random model geometry")
    ap.add_argument("--model", default=None, metavar="PATH", help="a trained checkpoint (shapes-world) for 'trained'")
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--runner", default="auto")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (on a GPU: the figures per image at --batch)")
    ap.add_argument("--batch", type=int, default=1, help="images per call (a batch runs at its slowest pair's pace)")
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
        out["trained"] = measure(jr, args.window, args.repeats, args.runner, args.batch)
    else:
        out["trained"] = None
        out["trained_reason"] = ("not measured: no trained model given (--model PATH, the shapes-world model of "
                                 "the train-your-own issue)")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
