"""The decode loop's device figures in one run of about five minutes, partial results printed as they come.

    python bench/device_check.py                              # CUDA, random weights of the 7B geometry, bf16
    python bench/device_check.py --device cpu --geometry real # tiny real-geometry model, < 3 minutes, same keys

Figures (one prompt = a CFG pair of rows): ms per decode step eager vs CUDA-graphed at batch 1 and 16, token
identity of the graphed step (against the same step eager on CUDA; against the eager and transformers-cache
runners on the CPU, where the step runs eagerly) at batch 1, 16 and in a text phase that stops early on EOS,
the step against the weights' bandwidth limit, s/image at batch 1/4/16 and for an introspective image whose
verdict is always "No", speed-ups over the paper's loop and over transformers' ``generate``, capture time and
first-call latency, the 4-bit step and peak (built after the bf16 model is freed). A figure that cannot be had
here (GPU-only, a missing baseline, an exception, the time budget spent) is ``null``. The last line printed is
one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import time

import torch
from device_figures import bandwidth_gbps, build, bytes_per_step, sync

from janus_r1.generation import graphs, tasks
from janus_r1.generation.context import build as build_ctx
from janus_r1.generation.context import cfg_rows
from janus_r1.generation.decode import decode_image, decode_text
from janus_r1.generation.sampling import Sampling

PROMPT = "a photo of two green apples and a yellow banana on a wooden table"
IMG, TXT = Sampling(top_k=4096), Sampling(top_k=50)
KEYS = ("device", "gpu", "geometry", "dtype", "torch", "build_s", "ms_per_step_eager_b1", "ms_per_step_graph_b1",
        "ms_per_step_eager_b16", "ms_per_step_graph_b16", "identical_b1", "identical_b16",
        "identical_text_early_eos", "bytes_per_step", "bandwidth_limit_ms", "step_over_limit", "s_per_image_b1",
        "s_per_image_b4", "s_per_image_b16", "s_per_introspective_image_all_no", "paper_loop_s_per_image_all_no",
        "speedup_vs_paper_loop", "transformers_ms_per_step", "speedup_vs_transformers", "capture_s",
        "first_call_s", "capture_failures", "peak_gib", "int4_ms_per_step", "int4_peak_gib", "skipped")


class Report(dict):
    """The figures so far; each is printed the moment it is known, so a timeout still leaves numbers."""

    def __init__(self, budget_s: float) -> None:
        super().__init__({k: None for k in KEYS})
        self["skipped"] = []
        self.start, self.budget_s = time.perf_counter(), budget_s

    def put(self, **figures) -> None:
        for key, value in figures.items():
            self[key] = round(value, 4) if isinstance(value, float) else value
            print(f"[device_check {time.perf_counter() - self.start:6.1f}s] {key} = {self[key]}", flush=True)

    def section(self, name: str, fn) -> None:
        """Run one group of figures unless the budget is spent; an exception leaves its figures null."""
        if time.perf_counter() - self.start > self.budget_s:
            self["skipped"].append(name)
            print(f"[device_check] {name}: skipped (time budget spent)", flush=True)
            return
        try:
            fn()
        except Exception as err:  # a missing baseline or kernel is a null figure, not a failed run
            self["skipped"].append(name)
            print(f"[device_check] {name}: {type(err).__name__}: {str(err)[:300]}", flush=True)


def clock(fn, device) -> tuple[float, object]:
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def image_ctx(j, prompts: list[str]):
    rows = cfg_rows([[j.prompt_piece(j.prompt_ids(p))] for p in prompts], j.vocab.ids.pad)
    return build_ctx(rows, j.model.get_input_embeddings(), j.vocab.ids.pad)


def decode(j, prompts, runner: str, n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator(device=j.device).manual_seed(seed)
    return decode_image(j.model, image_ctx(j, prompts), n, 5.0, IMG, gen, runner=runner)


def steps(j, rep: Report, batch: int, n_eager: int, n_id: int, cuda: bool) -> None:
    """ms/step eager vs graphed and graphed-vs-eager identity at one batch size."""
    dev, n = j.device, j.num_image_tokens
    prompts = [f"{PROMPT} {i}" for i in range(batch)]
    if cuda:
        before = graphs.stats.captures
        cold, _ = clock(lambda: decode(j, prompts, "graph", n), dev)
        warm, _ = clock(lambda: decode(j, prompts, "graph", n), dev)
        cap = graphs.stats.last_capture_s if graphs.stats.captures > before else 0.0
        rep.put(**{f"ms_per_step_graph_b{batch}": (warm - cap) * 1e3 / n})
        if batch == 1:
            rep.put(first_call_s=cold, capture_s=cap)
        same = torch.equal(decode(j, prompts, "graph", n_id), decode(j, prompts, "fixed", n_id))
    else:  # no capture on the CPU: the graph path runs the step eagerly; check it against the other runners
        ref = decode(j, prompts, "graph", n_id)
        same = torch.equal(ref, decode(j, prompts, "eager", n_id)) and torch.equal(ref, decode(j, prompts, "dynamic",
                                                                                                  n_id))
    rep.put(**{f"identical_b{batch}": same})
    eager, _ = clock(lambda: decode(j, prompts, "eager", n_eager), dev)
    rep.put(**{f"ms_per_step_eager_b{batch}": eager * 1e3 / n_eager})


def text_identity(j, rep: Report, cuda: bool) -> None:
    """A text phase stopped early by EOS: the graphed step gives the same ids, bits and length."""
    ids = j.vocab.ids
    ctx = build_ctx([[j.prompt_piece(j.prompt_ids(PROMPT))]], j.model.get_input_embeddings(), ids.pad)
    ref_runner = "fixed" if cuda else "eager"

    def run(runner, eos, n=40):
        gen = torch.Generator(device=j.device).manual_seed(3)
        return decode_text(j.model, ctx, n, TXT, gen, eos, ids.pad, runner=runner)

    free = run(ref_runner, -1).ids[0].tolist()  # no EOS: pick a token first drawn late enough as the "EOS"
    stop = next((i for i in range(8, len(free)) if free[i] not in free[:i]), len(free) - 1)
    outs = [run(r, free[stop]) for r in ([ref_runner, "graph"] if cuda else ["eager", "graph", "dynamic"])]
    same = all(torch.equal(o.ids, outs[0].ids) and torch.equal(o.mask, outs[0].mask) for o in outs)
    rep.put(identical_text_early_eos=same and outs[0].ids.shape[1] == stop + 1 < 40)


def images(j, rep: Report, batches: tuple[int, ...]) -> None:
    for b in batches:
        t, _ = clock(lambda b=b: tasks.text_to_image(j, [f"{PROMPT} {i}" for i in range(b)], sampling=IMG, seed=0),
                     j.device)
        rep.put(**{f"s_per_image_b{b}": t / b})


@contextlib.contextmanager
def all_no(j):
    """Every verdict "No": the worst case for us, two images per prompt like the paper loop."""
    no = j.vocab.ids.no
    idx = torch.tensor([no], device=j.device)  # made once: a host copy inside a captured step would break it
    h = j.model.lm_head.register_forward_hook(lambda _m, _i, out: out.index_fill_(-1, idx, 1e4))
    try:
        yield
    finally:
        h.remove()


def introspective(j, rep: Report) -> None:
    import paper_loop

    with all_no(j):  # the paper loop's work: judge image 1, draw image 2, do not judge image 2
        ours, _ = clock(lambda: tasks.introspect(j, PROMPT, max_rounds=2, image_sampling=IMG, text_sampling=TXT,
                                                 max_reflection=80, seed=0, judge_final=False), j.device)
        rep.put(s_per_introspective_image_all_no=ours)
        theirs, _ = clock(lambda: paper_loop.paper_loop(j, [PROMPT], 0, IMG, TXT, max_reflection=80), j.device)
    rep.put(paper_loop_s_per_image_all_no=theirs, speedup_vs_paper_loop=theirs / ours)


def transformers_generate(j, rep: Report, ours_ms: float | None) -> None:
    """transformers' own ``generate(generation_mode="image")`` on the same model; null if it raises."""
    tok, m, v = j.vocab.tokenizer, j.model, j.vocab.ids
    from janus_r1.model.vocabulary import t2i_prompt

    enc = tok([t2i_prompt(PROMPT)], return_tensors="pt").to(j.device)
    m.generation_config.pad_token_id, m.generation_config.bos_token_id = v.pad, v.bos
    m.generation_config.generation_kwargs = {"boi_token_id": v.boi}
    with torch.no_grad():
        t, _ = clock(lambda: m.generate(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                                        generation_mode="image", do_sample=True, guidance_scale=5.0, top_k=4096),
                     j.device)
    ms = t * 1e3 / j.num_image_tokens
    rep.put(transformers_ms_per_step=ms, speedup_vs_transformers=ms / ours_ms if ours_ms else None)


def int4(args, rep: Report, device: torch.device, dtype: torch.dtype) -> None:
    """The 4-bit model built on its own after the bf16 one is freed, so the peak holds no bf16 copy."""
    from janus_r1.model.quantize import quantize_language_model

    j, _ = build(args.geometry, device, dtype)
    j.model = quantize_language_model(j.model, "4bit", device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    n = j.num_image_tokens if device.type == "cuda" else min(96, j.num_image_tokens)
    decode(j, [PROMPT], "auto", n)  # warm-up and the peak of a whole image
    t, _ = clock(lambda: decode(j, [PROMPT], "auto", n), device)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    rep.put(int4_ms_per_step=t * 1e3 / n, int4_peak_gib=peak)


def bf16_figures(args, rep: Report, device: torch.device, dtype: torch.dtype) -> None:
    """Everything measured on the model in its compute dtype, most wanted first."""
    cuda = device.type == "cuda"
    t, (j, _tok) = clock(lambda: build(args.geometry, device, dtype), device)
    rep.put(build_s=t)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    n = j.num_image_tokens
    n_eager, n_id = (min(64, n), min(96, n)) if cuda else (min(96, n), min(96, n))
    rep.section("steps_b1", lambda: steps(j, rep, 1, n_eager, n_id, cuda))
    bw, bps = bandwidth_gbps(device, args.bandwidth), bytes_per_step(j.model)
    limit = bps / (bw * 1e9) * 1e3 if bw else None
    graph_ms = rep["ms_per_step_graph_b1"]
    rep.put(bytes_per_step=bps, bandwidth_limit_ms=limit,
            step_over_limit=graph_ms / limit if limit and graph_ms else None)
    rep.section("text_early_eos", lambda: text_identity(j, rep, cuda))
    rep.section("steps_b16", lambda: steps(j, rep, 16, min(32, n), min(48 if cuda else 16, n), cuda))
    rep.section("images", lambda: images(j, rep, (1, 4, 16) if cuda else (1,)))  # throughput: a GPU figure
    rep.section("introspective", lambda: introspective(j, rep))
    rep.section("transformers", lambda: transformers_generate(j, rep, graph_ms or rep["ms_per_step_eager_b1"]))
    rep.put(capture_failures=graphs.stats.failures,
            peak_gib=torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) | cpu")
    ap.add_argument("--geometry", default="7b", choices=["7b", "1b", "real", "micro"],
                    help="7b/1b: random weights of the real geometry; real/micro: tiny random models")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--budget", type=float, default=None, help="seconds after which sections are skipped")
    ap.add_argument("--bandwidth", type=float, default=None, help="GB/s of the card (default: by its name)")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    rep = Report(args.budget or (270.0 if cuda else 160.0))
    dtype = torch.bfloat16 if args.dtype == "bf16" and (cuda or args.geometry in ("7b", "1b")) else torch.float32
    rep.put(device=str(device), gpu=torch.cuda.get_device_name(device) if cuda else None, geometry=args.geometry,
            dtype=str(dtype).replace("torch.", ""), torch=torch.__version__)
    bf16_figures(args, rep, device, dtype)  # returns with the model freed
    gc.collect()
    rep.section("int4", lambda: int4(args, rep, device, dtype))
    print(json.dumps(dict(rep)))


if __name__ == "__main__":
    main()
