"""int4 decoder vs bf16, measured in the same run: ms per image decode step and bytes of decoder weights.

    python bench/quant_speed.py --device cpu --geometry real --threads 1   # tiny real geometry (CI-sized)
    python bench/quant_speed.py --device cuda --geometry real

Prints, for bf16 and int4 (``quantize="4bit"`` as the loader resolves it on this device): ms per decode step of
one prompt with CFG (two rows), the int4/bf16 ratio, and the bytes of the decoder layers. ``--layer-7b`` also
times one decoder layer of the real 7B shapes (q/k/v/o 4096x4096, gate/up 11008x4096, down 4096x11008) at two
rows, where a step streams weights and 4-bit should pay. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json

import torch
from device_figures import timed  # bench/ is on sys.path when a bench script runs
from torch import nn

from janus_r1.generation.context import build as build_ctx
from janus_r1.generation.context import cfg_rows
from janus_r1.generation.decode import decode_image
from janus_r1.generation.sampling import Sampling
from janus_r1.generation.tasks import Janus
from janus_r1.model.int4 import Int4Linear
from janus_r1.model.quantize import quantize_language_model, resolve_mode
from janus_r1.model.tiny import build_tiny_model
from janus_r1.model.vocabulary import Vocabulary

PROMPT = "a photo of two green apples and a yellow banana on a wooden table"
SHAPES_7B = [(4096, 4096)] * 4 + [(11008, 4096)] * 2 + [(4096, 11008)]  # (out, in) of one LLaMA-7B layer


def decoder_bytes(model: nn.Module) -> int:
    layers = model.model.language_model.layers
    return sum(t.numel() * t.element_size() for t in [*layers.parameters(), *layers.buffers()])


def ms_per_step(j: Janus, device: torch.device, repeats: int, short: int = 8, long: int = 72) -> float:
    """Decode ``long`` and ``short`` image tokens; the difference over ``long - short`` steps drops the prefill."""
    rows = cfg_rows([[j.prompt_piece(j.prompt_ids(PROMPT))]], j.vocab.ids.pad)
    sampling = Sampling(top_k=4096)

    def run(n: int) -> None:
        ctx = build_ctx(rows, j.model.get_input_embeddings(), j.vocab.ids.pad)
        decode_image(j.model, ctx, n, 5.0, sampling, torch.Generator(device=device).manual_seed(0))

    return (timed(lambda: run(long), device, repeats) - timed(lambda: run(short), device, repeats)) \
        * 1e3 / (long - short)


@torch.no_grad()
def layer_7b(device: torch.device, repeats: int) -> dict:
    """One 7B decoder layer's linears at two rows (a CFG pair), bf16 vs int4."""
    gen = torch.Generator(device=device).manual_seed(0)
    bf16, q = [], []
    for n, k in SHAPES_7B:
        lin = nn.Linear(k, n, bias=False, device=device, dtype=torch.bfloat16)
        lin.weight.normal_(0.0, 0.02, generator=gen)
        bf16.append(lin)
        q.append(Int4Linear.from_linear(lin, device))
    x = {k: torch.randn(2, k, device=device, generator=gen).bfloat16() for _, k in SHAPES_7B}
    times = {name: timed(lambda mods=mods: [m(x[m.in_features]) for m in mods], device, repeats) * 1e3
             for name, mods in (("bf16", bf16), ("int4", q))}
    return {"layer7b_ms_bf16": round(times["bf16"], 3), "layer7b_ms_int4": round(times["int4"], 3),
            "layer7b_int4_over_bf16": round(times["int4"] / times["bf16"], 3), "layer7b_kernel": q[0].kernel}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--geometry", default="real", choices=["micro", "real"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--layer-7b", action="store_true", help="also time one decoder layer of the 7B shapes")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (1 gives steadier figures on a shared machine, where spinning threads wait)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, tok = build_tiny_model(args.geometry, seed=0)
    model = model.to(dtype=torch.bfloat16).eval()
    q_model = quantize_language_model(copy.deepcopy(model), "4bit", device)
    model = model.to(device)
    vocab = Vocabulary(tok)
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
           "torch": torch.__version__, "threads": torch.get_num_threads(), "geometry": args.geometry, "mode_4bit": resolve_mode("4bit", device),
           "kernel": next(m.kernel for m in q_model.modules() if isinstance(m, Int4Linear))}
    out["decoder_bytes_bf16"], out["decoder_bytes_int4"] = decoder_bytes(model), decoder_bytes(q_model)
    out["decoder_bytes_ratio"] = round(out["decoder_bytes_int4"] / out["decoder_bytes_bf16"], 4)
    for name, m in (("bf16", model), ("int4", q_model)):
        out[f"ms_per_step_{name}"] = round(ms_per_step(Janus(m, vocab), device, args.repeats), 3)
        print(f"{name}: {out[f'ms_per_step_{name}']:.2f} ms/step, decoder {out[f'decoder_bytes_{name}']} bytes",
              flush=True)
    out["int4_over_bf16"] = round(out["ms_per_step_int4"] / out["ms_per_step_bf16"], 3)
    if args.layer_7b:
        out.update(layer_7b(device, args.repeats))
        print(f"7B layer: bf16 {out['layer7b_ms_bf16']} ms, int4 {out['layer7b_ms_int4']} ms", flush=True)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
