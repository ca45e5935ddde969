"""The command line's option types and shared option groups, for :mod:`janus_r1.cli` and the subcommands
defined beside it (:mod:`janus_r1.ask_cli`): every value is checked while parsing, before anything loads."""

from __future__ import annotations

import argparse
import math
import re

from .api import DEFAULT_MODEL
from .generation.checks import SEED_MAX
from .model.devices import DTYPES as MODEL_DTYPES

DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DTYPES = ("auto", *MODEL_DTYPES)  # the loader's own spellings (model/devices.py)


def _int_in(low: int, high: int | None = None, what: str = "an integer"):
    def parse(v: str) -> int:
        try:
            n = int(v)
        except ValueError:
            n = None
        if n is None or n < low or (high is not None and n > high):
            rng = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be {what} {rng} (got {v!r})")
        return n
    return parse


def _float_in(low: float, high: float | None = None, open_low: bool = False):
    def parse(v: str) -> float:
        try:
            x = float(v)
        except ValueError:
            x = math.nan
        ok = math.isfinite(x) and (x > low if open_low else x >= low) and (high is None or x <= high)
        if not ok:
            lo = f"> {low:g}" if open_low else f">= {low:g}"
            raise argparse.ArgumentTypeError(f"must be a number {lo}{'' if high is None else f' and <= {high:g}'}"
                                             f" (got {v!r})")
        return x
    return parse


def _device(v: str) -> str:
    if not DEVICE.match(v.strip().lower()):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda, cuda:N or mps (got {v!r})")
    return v.strip().lower()


def _dtype(v: str) -> str:
    if v.strip().lower() not in DTYPES:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(DTYPES)} (got {v!r})")
    return v.strip().lower()


_positive_int = _int_in(1)
_seed = _int_in(0, SEED_MAX, "an integer seed")


def _model_opts(sp, seed_help: str = "random seed, 0 .. 2^64-1 (default: drawn at random and recorded in "
                "trace.json, so the run can be repeated)", seed_default=None) -> None:
    sp.add_argument("--model", default=DEFAULT_MODEL,
                    help=f"local directory, hub repo id or 'tiny-random' (default {DEFAULT_MODEL})")
    sp.add_argument("--device", type=_device, default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    sp.add_argument("--dtype", type=_dtype, default="auto",
                    help="auto (the checkpoint's own) | bf16 | fp16 | fp32 (default auto)")
    sp.add_argument("--quantize", default="none", choices=["none", "4bit", "int4", "nf4", "8bit"],
                    help="language model only: 4bit = int4 on torch's own kernels where the device has one (CUDA sm80+, "
                    "CPU), else NF4 | int4 | nf4, 8bit (need bitsandbytes)")
    sp.add_argument("--runner", default="auto",
                    choices=["auto", "graph", "fixed", "eager", "dynamic", "static", "compiled"],
                    help="decode loop: auto (graph on CUDA, else eager) | graph (fixed-shape step replayed as a CUDA"
                    " graph) | fixed (that step, eager) | eager (static KV cache) | dynamic (transformers' own"
                    " cache); static = eager and compiled = graph are old names; all give the same tokens")
    sp.add_argument("--decoding", default="ar", choices=["ar", "jacobi"],
                    help="image tokens: ar (one per forward pass, default) | jacobi (speculative Jacobi decoding: "
                    "the same distribution, several tokens per pass; opt-in)")
    sp.add_argument("--jacobi-window", type=int, default=16, metavar="N",
                    help="draft tokens per Jacobi window, 2 .. 256 (default 16; memory grows with it)")
    sp.add_argument("--max-memory", type=_float_in(0, open_low=True), default=None, metavar="GIB",
                    help="keep at most GIB of weights on the device; stream the other decoder layers from RAM")
    sp.add_argument("--seed", type=_seed, default=seed_default, help=seed_help)
    sp.add_argument("--quiet", action="store_true", help="no progress bars, notes, summary or warnings")
