"""The decode loop's device figures in one run of about five minutes, partial results printed as they come.

    python bench/device_check.py                              # CUDA, random weights of the 7B geometry, bf16
    python bench/device_check.py --device cpu --geometry real # tiny real-geometry model, a few minutes, same keys

Figures (one prompt = a CFG pair of rows): kernels per layer and per step of the fixed-shape step (operator log),
with the device's default numerics (fast on CUDA, exact on the CPU; ``JANUS_R1_NUMERICS``) and with the exact path;
ms per decode step eager vs CUDA-graphed at batch 1 and 16 and in a regeneration-length context (~2,300
positions), each from two lengths of the same context (prefill, context building and the warm-up step cancel;
capture time is measured, after a synchronisation, and subtracted); token identity of the graphed step (against the same step eager on
CUDA; against the eager and transformers-cache runners on the CPU, where the step runs eagerly) at batch 1, 16 and
in a text phase that stops early on EOS; a teacher-forced comparison of the fixed-shape step's logits with
transformers' forward over a whole image (max |delta logit|, greedy agreement; both numerics); the step against the weights'
bandwidth limit at the datasheet rate and at the card's measured copy rate; peak memory per batch size; s/image
at batch 1/4/16 and for an introspective image whose verdict is always "No"; speed-ups over the paper's loop and
over transformers' ``generate``; capture time and first-call latency; the 4-bit step and peak (built after the
bf16 model is freed; labelled by the 4-bit mode it really ran: int4 or nf4). A figure that cannot be had here
(GPU-only, a missing baseline, an exception, the time budget spent) is ``null``. Every ms-per-step figure is
checked for sanity first: a step that beats reading its weights and KV cache at the card's measured copy rate (or
is not positive) is a measuring error, so it is ``null`` and ``implausible`` says which figure and why. The int4
pack -> unpack -> pack round trip is checked once on the device (``int4_pack_roundtrip``). Speculative Jacobi
decoding (``jacobi_*``, :func:`jacobi.device_figures`): ms per image one-token vs Jacobi at batch 1 and 16 on the
graph runner and forward passes per image (the CPU decodes at most 32 tokens per image). The last line printed
is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import time

import jacobi  # bench/jacobi.py
import torch
from device_figures import bandwidth_gbps, build, bytes_per_step, sync
from step_figures import capture_clock, copy_gbps, implausible_step, long_context, ms_per_step

from janus_r1.generation import graphs, tasks
from janus_r1.generation.context import build as build_ctx
from janus_r1.generation.context import cfg_rows
from janus_r1.generation.decode import decode_image, decode_text
from janus_r1.generation.logit_check import teacher_forced
from janus_r1.generation.numerics import fast_numerics, numerics
from janus_r1.generation.sampling import Sampling

PROMPT = "a photo of two green apples and a yellow banana on a wooden table"
IMG, TXT = Sampling(top_k=4096), Sampling(top_k=50)
KEYS = ("device", "gpu", "geometry", "dtype", "torch", "build_s", "numerics", "kernels_per_layer",
        "kernels_per_step", "kernels_total", "kernels_per_layer_exact", "kernels_per_step_exact", "ms_per_step_eager_b1", "ms_per_step_graph_b1", "ms_per_step_eager_b16",
        "ms_per_step_graph_b16", "ms_per_step_graph_regen", "regen_positions", "identical_b1", "identical_b16",
        "identical_text_early_eos", "max_abs_dlogit", "greedy_agreement", "max_abs_dlogit_exact",
        "greedy_agreement_exact", "bytes_per_step", "bandwidth_limit_ms",
        "copy_gbps", "bandwidth_limit_ms_measured", "step_over_limit", "step_over_limit_measured", "peak_gib_b1",
        "peak_gib_b16", "s_per_image_b1", "s_per_image_b4", "s_per_image_b16", "s_per_introspective_image_all_no",
        "paper_loop_s_per_image_all_no", "speedup_vs_paper_loop", "transformers_ms_per_step",
        "speedup_vs_transformers", "capture_s", "first_call_s", "capture_failures", "quant_mode",
        "int4_ms_per_step", "int4_peak_gib", "int4_pack_roundtrip", "implausible", "skipped", *jacobi.DEVICE_KEYS)


class Report(dict):
    """The figures so far; each is printed the moment it is known, so a timeout still leaves numbers."""

    def __init__(self, budget_s: float) -> None:
        super().__init__({k: None for k in KEYS})
        self["skipped"], self["implausible"] = [], {}
        self.start, self.budget_s = time.perf_counter(), budget_s
        self.gbps: float | None = None  # the card's measured copy rate (None on the CPU)

    def put_step(self, key: str, ms: float | None, bytes_per_step: int) -> None:
        """An ms-per-step figure, unless it cannot be true (:func:`implausible_step`): then null, and why."""
        why = implausible_step(ms, bytes_per_step, self.gbps)
        if why:
            self["implausible"][key] = why
            print(f"[device_check] {key}: implausible, reported as null: {why}", flush=True)
            ms = None
        self.put(**{key: ms})

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


def decode(j, prompts, runner: str, n: int, seed: int = 0, ctx=None) -> torch.Tensor:
    gen = torch.Generator(device=j.device).manual_seed(seed)
    return decode_image(j.model, ctx or image_ctx(j, prompts), n, 5.0, IMG, gen, runner=runner)


def peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def step_bytes(j, ctx, lengths: tuple[int, int]) -> int:
    """Bytes a measured step reads: the weights, and the KV cache of ``ctx``'s rows at the mean position of the
    steps :func:`ms_per_step` compares (those between the two lengths)."""
    rows, length = ctx.mask.shape
    return bytes_per_step(j.model, rows, length + sum(lengths) // 2)


def steps(j, rep: Report, batch: int, lengths: tuple[int, int], n_id: int, cuda: bool) -> None:
    """ms/step eager vs graphed over the same context and the same two lengths, identity, peak at one batch."""
    dev, n = j.device, j.num_image_tokens
    prompts = [f"{PROMPT} {i}" for i in range(batch)]
    ctx = image_ctx(j, prompts)
    read = step_bytes(j, ctx, lengths)
    peak_reset(dev)
    if cuda:
        before = graphs.stats.captures
        with capture_clock() as cap:
            cold, _ = clock(lambda: decode(j, prompts, "graph", n, ctx=ctx), dev)
        if batch == 1:
            rep.put(first_call_s=cold, capture_s=cap[0] if graphs.stats.captures > before else 0.0)
        same = torch.equal(decode(j, prompts, "graph", n_id, ctx=ctx), decode(j, prompts, "fixed", n_id, ctx=ctx))
    else:  # no capture on the CPU: the graph path runs the step eagerly; check it against the other runners
        ref = decode(j, prompts, "graph", n_id, ctx=ctx)
        same = all(torch.equal(ref, decode(j, prompts, r, n_id, ctx=ctx)) for r in ("eager", "dynamic"))
    rep.put(**{f"identical_b{batch}": same})
    for runner in ("graph", "eager"):
        ms = ms_per_step(lambda k, r=runner: decode(j, prompts, r, k, ctx=ctx), dev, *lengths)
        rep.put_step(f"ms_per_step_{runner}_b{batch}", ms, read)
    rep.put(**{f"peak_gib_b{batch}": peak_gib(dev)})


def regen(j, rep: Report, positions: int, lengths: tuple[int, int]) -> None:
    """A round-3 regeneration's context length: the step should cost only the attention bytes it really reads."""
    ctx = long_context(image_ctx(j, [PROMPT]), positions)
    rep.put(regen_positions=ctx.embeds.shape[1])
    rep.put_step("ms_per_step_graph_regen", ms_per_step(lambda k: decode(j, [PROMPT], "graph", k, ctx=ctx),
                                                        j.device, *lengths), step_bytes(j, ctx, lengths))


def kernels(j, rep: Report) -> None:
    """The device's default numerics (fast on CUDA), then the exact path (the CPU's default) for comparison."""
    from janus_r1.generation.oplog import step_kernels

    rep.put(numerics="fast" if fast_numerics(j.device) else "exact")
    for mode, suffix in ((None, ""), ("exact", "_exact")):
        with numerics(mode):
            k = step_kernels(j.model, image_ctx(j, [PROMPT]), IMG,
                             lambda: torch.Generator(device=j.device).manual_seed(0))
        rep.put(**{f"kernels_per_layer{suffix}": k["per_layer"], f"kernels_per_step{suffix}": k["per_step"]})
        if not suffix:
            rep.put(kernels_total=k["total"])


def logits_check(j, rep: Report, n: int) -> None:
    """Teacher-forced: the fixed-shape step (what the graph replays) against transformers' forward, with the
    device's default numerics and with the exact path."""
    ctx = image_ctx(j, [PROMPT])
    codes = decode(j, [PROMPT], "graph", n, ctx=ctx)
    for mode, suffix in ((None, ""), ("exact", "_exact")):
        with numerics(mode):
            tf = teacher_forced(j.model, ctx, codes)
        rep.put(**{f"max_abs_dlogit{suffix}": tf["max_abs_dlogit"], f"greedy_agreement{suffix}": tf["greedy_agreement"]})


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


def int4(args, rep: Report, device: torch.device, dtype: torch.dtype, lengths: tuple[int, int]) -> None:
    """The 4-bit model built on its own after the bf16 one is freed, so the peak holds no bf16 copy; labelled by
    the mode "4bit" really is on this device (int4 on sm80+ and the CPU, nf4 on older cards)."""
    from janus_r1.model.quantize import quantize_language_model, resolve_mode

    mode = resolve_mode("4bit", device)
    rep.put(quant_mode=mode)
    j, _ = build(args.geometry, device, dtype)
    j.model = quantize_language_model(j.model, mode, device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    peak_reset(device)
    decode(j, [PROMPT], "auto", j.num_image_tokens)  # the peak of a whole image
    peak = peak_gib(device)
    ctx = image_ctx(j, [PROMPT])
    ms = ms_per_step(lambda k: decode(j, [PROMPT], "auto", k, ctx=ctx), device, *lengths)
    rep.put_step(f"{mode}_ms_per_step", ms, step_bytes(j, ctx, lengths))
    rep.put(**{f"{mode}_peak_gib": peak})


def int4_roundtrip(rep: Report, device: torch.device) -> None:
    """pack -> unpack -> pack is the identity for the device's int4 kernel layout, at a fused q/k/v-like shape:
    the int4 fusion (:mod:`janus_r1.generation.fused`) relies on it, and only the device can check its layout."""
    from janus_r1.model import int4 as q4

    kernel = q4.fast_kernel(device)
    if kernel is None:
        rep.put(int4_pack_roundtrip=None)
        return
    gen = torch.Generator(device=device).manual_seed(0)
    n, k = 3 * 256, 512
    q = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, device=device, generator=gen)
    packed = q4.pack(q, kernel)
    back = q4.unpack(packed, kernel, n, k)
    same = torch.equal(back, q) and torch.equal(q4.pack(back, kernel), packed)
    rep.put(int4_pack_roundtrip=same)
    assert same, f"int4 pack -> unpack -> pack is not the identity for the {kernel} kernel on {device}"


def bf16_figures(args, rep: Report, device: torch.device, dtype: torch.dtype) -> tuple[int, int]:
    """Everything measured on the model in its compute dtype, most wanted first; returns the step lengths."""
    cuda = device.type == "cuda"
    t, (j, _tok) = clock(lambda: build(args.geometry, device, dtype), device)
    rep.put(build_s=t)
    n = j.num_image_tokens
    lengths = (min(64, n // 4), n) if cuda else (min(16, n // 4), min(96, n))
    rep.gbps = measured = copy_gbps(device)  # first: every ms/step figure is checked against it
    rep.section("kernels", lambda: kernels(j, rep))
    rep.section("steps_b1", lambda: steps(j, rep, 1, lengths, min(96, n), cuda))
    bw, bps = bandwidth_gbps(device, args.bandwidth), step_bytes(j, image_ctx(j, [PROMPT]), lengths)
    graph_ms = rep["ms_per_step_graph_b1"]
    limit = bps / (bw * 1e9) * 1e3 if bw else None
    limit_measured = bps / (measured * 1e9) * 1e3 if measured else None
    rep.put(bytes_per_step=bps, bandwidth_limit_ms=limit, copy_gbps=measured,
            bandwidth_limit_ms_measured=limit_measured,
            step_over_limit=graph_ms / limit if limit and graph_ms else None,
            step_over_limit_measured=graph_ms / limit_measured if limit_measured and graph_ms else None)
    rep.section("logits", lambda: logits_check(j, rep, n if cuda else min(48, n)))
    rep.section("text_early_eos", lambda: text_identity(j, rep, cuda))
    rep.section("steps_b16", lambda: steps(j, rep, 16, (lengths[0], min(lengths[1], 192 if cuda else 48)),
                                           min(48 if cuda else 16, n), cuda))
    rep.section("regen", lambda: regen(j, rep, 2300 if cuda else 600, (lengths[0], min(lengths[1], 192))))
    rep.section("images", lambda: images(j, rep, (1, 4, 16) if cuda else (1,)))  # throughput: a GPU figure
    rep.section("jacobi", lambda: jacobi.device_figures(j, rep.put, n if cuda else min(32, n)))  # issue 26
    rep.section("introspective", lambda: introspective(j, rep))
    ours = graph_ms if graph_ms or "ms_per_step_graph_b1" in rep["implausible"] else rep["ms_per_step_eager_b1"]
    rep.section("transformers", lambda: transformers_generate(j, rep, ours))
    rep.put(capture_failures=graphs.stats.failures)
    return lengths


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
    lengths = bf16_figures(args, rep, device, dtype)  # returns with the model freed
    gc.collect()
    rep.section("int4_roundtrip", lambda: int4_roundtrip(rep, device))
    rep.section("int4", lambda: int4(args, rep, device, dtype, lengths))
    print(json.dumps(dict(rep)))


if __name__ == "__main__":
    main()
