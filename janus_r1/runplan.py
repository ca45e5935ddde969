"""Plan a CLI run against the memory there is: refuse up front what cannot fit, split what fits only in parts.

A run needs (a) on the device, beyond the weights, the KV cache and activations of the samples decoded together
(:func:`janus_r1.model.memory.memory_needed`, the estimate the ComfyUI nodes use too), and (b) in host RAM, every
finished image and its PNG until the run's
files are written together at the end. (b) is checked for the whole run; (a) decides how many samples go
through the model at once (a *chunk*).

Randomness: chunk ``k`` is sampled with its own generator seeded :func:`chunk_seed` ``(seed, k)``; chunk 0 uses
``seed`` itself, so a run that fits in one chunk is exactly the unchunked run. A run is repeatable for a given
seed *and chunk size*; the automatic chunk size depends on the free memory, so pass ``--chunk-size`` to repeat a
large run on another machine (the trace records both, and every sample records the seed it was drawn with).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import host_memory
from .errors import JanusR1Error
from .generation.checks import SEED_MAX

GIB = 1024**3
SHEET_THUMB = 256  # contact sheets: one thumbnail per attempt (generation/sheet.py default)
CODE_BYTES = 36  # a VQ code held as a Python int in a list


def available_bytes(device: torch.device | str) -> int:
    """Free memory of ``device``: CUDA's free bytes; else (CPU, and MPS's unified memory) the host memory a run
    may use: available RAM, or less under a container's cgroup memory limit (host_memory.py)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return host_memory.available()[0]


def _host_bound(avail) -> str:
    """" under the container's memory limit ..." when a cgroup limit is what binds (default probe only)."""
    if avail is not None and avail is not available_bytes:
        return ""
    _, what = host_memory.available()
    return "" if what == "of RAM" else f" {what}"


MIN_IMAGE_SIZE = 16  # one 16-px VQ token: no Janus geometry is smaller (a lower bound before the model loads)


def result_bytes(image_size: int, image_tokens: int, attempts: int, sheets: bool = True) -> int:
    """Host RAM one sample's results hold until written: per attempt its RGB image, its PNG (at most about the
    raw size), its contact-sheet thumbnail (when sheets are written) and its codes."""
    raw = 3 * image_size * image_size
    return attempts * (2 * raw + (3 * SHEET_THUMB * SHEET_THUMB if sheets else 0) + CODE_BYTES * image_tokens)


def check_host_memory(samples: int, rounds: int, image_size: int, image_tokens: int, sheets: bool, what: str,
                      avail: Callable[[torch.device | str], int] | None = None, lower_bound: bool = False) -> int:
    """Refuse a run whose results cannot be held in RAM until written; returns the bytes they need."""
    need = samples * result_bytes(image_size, image_tokens, rounds, sheets)
    free = (avail or available_bytes)("cpu")
    if need > free:
        raise JanusR1Error(
            f"{what}: {samples} sample(s) of up to {rounds} image(s) need {'at least' if lower_bound else 'about'} "
            f"{_gib(need)} of RAM to hold until they are written, and {_gib(free)} is available{_host_bound(avail)}; "
            "ask for fewer per "
            "run, or use `janus-r1 batch`, which writes each prompt's images as it finishes."
        )
    return need


def refuse_early(samples: int, sheets: bool, what: str) -> None:
    """Before the model loads: refuse what even the smallest geometry (one image per sample) could not hold."""
    check_host_memory(samples, 1, MIN_IMAGE_SIZE, 1, sheets, what, lower_bound=True)


def chunk_seed(seed: int, k: int) -> int:
    """Chunk ``k``'s seed: ``seed`` for chunk 0, else a SplitMix64 mix of (seed, k) -- unrelated to the seeds
    ``seed + 1, seed + 2, ...`` another run might use."""
    if k == 0:
        return seed
    z = (seed + k * 0x9E3779B97F4A7C15) & SEED_MAX
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & SEED_MAX
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & SEED_MAX
    return z ^ (z >> 31)


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def plan_chunk(model: torch.nn.Module, samples: int, rounds: int, reflection: int, prompt_tokens: int,
               chunk_size: int | None = None, what: str = "--num-images",
               avail: Callable[[torch.device | str], int] | None = None, sheets: bool = True) -> int:
    """How many samples to decode together; :class:`JanusR1Error` if even the whole run's results or one sample
    cannot fit. ``rounds`` = images per sample at most (1 for plain text-to-image and editing)."""
    from .model.memory import memory_needed

    avail = avail or available_bytes
    device = model.get_input_embeddings().weight.device
    vc = model.config.vision_config
    host_need = check_host_memory(samples, rounds, int(vc.image_size), int(vc.num_image_tokens), sheets, what, avail)
    host_free = avail("cpu")
    device_free = host_free - host_need if device.type == "cpu" else avail(device)

    def need(s: int) -> int:
        return memory_needed(model, "generate", s, rounds, reflection, prompt_tokens)  # beyond the loaded weights

    if chunk_size is not None:
        if need(chunk_size) > device_free:
            raise JanusR1Error(
                f"--chunk-size {chunk_size} needs about {_gib(need(chunk_size))} of {device} memory beyond the "
                f"weights and {_gib(device_free)} is free; use a smaller --chunk-size (or leave it out)."
            )
        return min(chunk_size, samples)
    if need(1) > device_free:
        raise JanusR1Error(
            f"one sample needs about {_gib(need(1))} of {device} memory beyond the weights and {_gib(device_free)} "
            "is free; lower --max-rounds or --max-reflection, or use --quantize 4bit / --max-memory."
        )
    lo, hi = 1, samples  # largest s with need(s) <= free; need grows with s
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if need(mid) <= device_free else (lo, mid - 1)
    return lo


def run_in_chunks(units: list, chunk: int, seed: int, call: Callable[[list, int], list]) -> list:
    """``call(units[i:i+chunk], chunk_seed(seed, k))`` for every chunk ``k``; the results concatenated."""
    out: list = []
    for k, start in enumerate(range(0, len(units), chunk)):
        out += call(units[start : start + chunk], chunk_seed(seed, k))
    return out
