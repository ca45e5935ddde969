"""Real-geometry figures for `decode_speed.py --device cuda --geometry 7b|1b` (random weights, no download).

Prints, for one prompt with CFG: ms per decode step against the bandwidth limit (bytes of weights read per step /
the card's bandwidth), seconds per image and per introspective image, peak memory, the paper-loop baseline side by
side, and optionally (``--quant-bench``) the 4-bit peak (labelled int4 or nf4, as it ran) and (``--load-bench DIR``) DeepSeek-layout vs
transformers-layout load time of the same random weights written to DIR.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import time

import torch

from janus_r1.generation import tasks
from janus_r1.generation.sampling import Sampling
from janus_r1.model.deepseek_config import janus_config_from_deepseek
from janus_r1.model.loading import params_on_meta
from janus_r1.model.tiny import build_tiny_model, build_tiny_tokenizer
from janus_r1.model.vocabulary import Vocabulary

# GB/s of HBM by device name fragment (datasheet figures); --bandwidth overrides
BANDWIDTH = {"H200": 4800, "H100 SXM": 3350, "H100 NVL": 3900, "H100 PCIe": 2000, "H100": 3350,
             "A100-SXM4-80GB": 2039, "A100": 1555, "L40S": 864, "L4": 300, "RTX 4090": 1008, "RTX 3090": 936}

SIZES = {"7b": dict(D=4096, inter=11008, layers=30, heads=32), "1b": dict(D=2048, inter=5632, layers=24, heads=16)}


def deepseek_config(size: str) -> dict:
    """config.json as DeepSeek ships it for Janus-Pro-7B / -1B (the 1B one with explicit LLaMA sizes)."""
    s = SIZES[size]
    d = s["D"]
    lang = {"max_position_embeddings": 16384, "model_type": "llama", "num_hidden_layers": s["layers"],
            "torch_dtype": "bfloat16", "vocab_size": 102400}
    if size == "1b":
        lang.update(hidden_size=d, intermediate_size=s["inter"], num_attention_heads=s["heads"],
                    num_key_value_heads=s["heads"])
    mlp = {"depth": 2, "projector_type": "mlp_gelu", "n_embed": d}
    return {
        "architectures": ["MultiModalityCausalLM"], "model_type": "multi_modality", "torch_dtype": "bfloat16",
        "language_config": lang,
        "vision_config": {"cls": "CLIPVisionTower", "model_type": "vision", "params": {
            "image_size": 384, "model_name": "siglip_large_patch16_384", "select_feature": "same",
            "select_layer": -1}},
        "aligner_config": {"cls": "MlpProjector", "model_type": "aligner", "params": {**mlp, "input_dim": 1024}},
        "gen_vision_config": {"cls": "VQ-16", "model_type": "gen_vision",
                              "params": {"image_token_size": 16384, "n_embed": 8}},
        "gen_aligner_config": {"cls": "MlpProjector", "model_type": "gen_aligner", "params": {**mlp, "input_dim": 8}},
        "gen_head_config": {"cls": "vision_head", "model_type": "gen_head",
                            "params": {"image_token_embed": d, "image_token_size": 16384, "n_embed": d}},
    }


@torch.no_grad()
def random_model(size: str, device: torch.device, dtype: torch.dtype, seed: int = 0, quantize: str = "none"):
    """A real-geometry Janus with random weights made directly on ``device`` (no host copy).

    ``quantize`` ("4bit", "int4", "nf4", "8bit"): each decoder linear is drawn on the device and quantised at
    once, so the card never holds the bf16 decoder and the peak is the quantised model's.
    """
    from transformers import JanusForConditionalGeneration

    from janus_r1.model.quantize import decoder_linears, quantize_linear, resolve_mode

    tok = build_tiny_tokenizer()
    cfg = janus_config_from_deepseek(deepseek_config(size), tok.convert_tokens_to_ids("<image_placeholder>"))
    with params_on_meta():
        model = JanusForConditionalGeneration(cfg)
    gen = torch.Generator(device=device).manual_seed(seed)
    mode = resolve_mode(quantize, device)
    slots = [(parent, attr) for parent, attr, _ in decoder_linears(model)] if mode != "none" else []
    later = {id(getattr(parent, attr)) for parent, attr in slots}
    for module in model.modules():
        if id(module) in later:
            continue
        for name, p in list(module._parameters.items()):
            if p is None:
                continue
            t = torch.empty(p.shape, device=device, dtype=dtype)
            if p.ndim == 1 and "norm" in type(module).__name__.lower():
                t.fill_(1.0)
            else:
                t.normal_(0.0, 0.02, generator=gen)
            module._parameters[name] = torch.nn.Parameter(t, requires_grad=False)
    for parent, attr in slots:  # one bf16 weight on the card at a time
        lin = getattr(parent, attr)
        w = torch.empty(lin.weight.shape, device=device, dtype=dtype).normal_(0.0, 0.02, generator=gen)
        lin.weight = torch.nn.Parameter(w, requires_grad=False)
        setattr(parent, attr, quantize_linear(lin, mode, device, dtype))
        del lin, w
    if slots:
        model.config.janus_r1_quantization = mode
    return model.to(device).eval(), tok


def build(geometry: str, device: torch.device, dtype: torch.dtype):
    if geometry in SIZES:
        model, tok = random_model(geometry, device, dtype)
    else:
        model, tok = build_tiny_model(geometry, seed=0)
        model = model.to(device=device, dtype=dtype)
    return tasks.Janus(model, Vocabulary(tok)), tok


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int = 2):
    fn()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def kv_bytes_per_step(model, rows: int, positions: int) -> int:
    """KV-cache bytes one decode step reads: keys and values of every layer at ``positions`` cached positions for
    ``rows`` rows (a CFG pair is 2), in the cache's dtype (the compute dtype: the final norm's, int4 too)."""
    lm = model.model.language_model
    cfg = lm.config
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    size = lm.norm.weight.element_size()
    return len(lm.layers) * 2 * rows * kv_heads * positions * head_dim * size


def bytes_per_step(model, rows: int = 0, positions: int = 0) -> int:
    """Bytes every decode step reads: the weights of the decoder layers, the final norm, the generation head and
    aligner, plus the KV cache's ``positions`` for ``rows`` rows (:func:`kv_bytes_per_step`; 0: weights only).
    At 7B a 576-token image's cache is small next to 13 GB of weights, but a ~2,300-position regeneration at
    batch 16 reads more cache than weights."""
    parts = [model.model.language_model.layers, model.model.language_model.norm, model.model.generation_head,
             model.model.generation_aligner]
    # buffers too: an int4 decoder keeps its packed weights and scales in buffers
    weights = sum(t.numel() * t.element_size() for m in parts for t in [*m.parameters(), *m.buffers()])
    return weights + kv_bytes_per_step(model, rows, positions)


def bandwidth_gbps(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, gbps in BANDWIDTH.items():
        if key in name:
            return gbps
    return None


def run(args) -> dict:
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    j, tok = build(args.geometry, device, dtype)
    j.runner = args.runner
    n = j.num_image_tokens
    prompt = "a photo of two green apples and a yellow banana on a wooden table"
    img_s, txt_s = Sampling(top_k=4096), Sampling(top_k=50)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t2i = timed(lambda: tasks.text_to_image(j, prompt, sampling=img_s, seed=0), device)
    from step_figures import copy_gbps, implausible_step, ms_per_step

    from janus_r1.generation.context import build as build_ctx
    from janus_r1.generation.context import cfg_rows
    from janus_r1.generation.decode import decode_image

    rows = cfg_rows([[j.prompt_piece(j.prompt_ids(prompt))]], j.vocab.ids.pad)
    ctx = build_ctx(rows, j.model.get_input_embeddings(), j.vocab.ids.pad)
    # two lengths of the same context: prefill and warm-up cancel; graph capture time is subtracted
    step_ms = ms_per_step(lambda k: decode_image(j.model, ctx, k, 5.0, img_s,
                                                 torch.Generator(device=device).manual_seed(0)), device, n // 4, n)
    no_id = j.vocab.ids.no

    @contextlib.contextmanager
    def all_no():
        idx = torch.tensor([no_id], device=device)  # made once: no host copy inside a captured step
        h = j.model.lm_head.register_forward_hook(lambda _m, _i, out: out.index_fill_(-1, idx, 1e4))
        try:
            yield
        finally:
            h.remove()

    with all_no():  # the worst case for us: every verdict "No", two images per prompt like the paper loop
        # same work as the paper loop: judge image 1, draw image 2, do not judge image 2
        cot = timed(lambda: tasks.introspect(j, prompt, max_rounds=2, image_sampling=img_s, text_sampling=txt_s,
                                             max_reflection=80, seed=0, judge_final=False), device, repeats=1)
        import paper_loop

        paper = timed(lambda: paper_loop.paper_loop(j, [prompt], 0, img_s, txt_s, max_reflection=80), device,
                      repeats=1)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    bpstep = bytes_per_step(j.model, ctx.mask.shape[0], ctx.mask.shape[1] + (n // 4 + n) // 2)  # + KV reads
    bw = bandwidth_gbps(device, args.bandwidth)
    limit_ms = bpstep / (bw * 1e9) * 1e3 if bw else None
    why = implausible_step(step_ms, bpstep, copy_gbps(device))
    if why:  # a measuring error, not a speed: say so instead of printing it
        print(f"ms per step implausible, reported as null: {why}")
        step_ms = None
    out = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "geometry": args.geometry, "dtype": args.dtype, "runner": args.runner,
        "ms_per_step": round(step_ms, 3) if step_ms else None, "implausible": why, "bytes_per_step": bpstep,
        "bandwidth_limit_ms": round(limit_ms, 3) if limit_ms else None,
        "step_over_limit": round(step_ms / limit_ms, 3) if limit_ms and step_ms else None,
        "s_per_image": round(t2i, 3), "s_per_introspective_image_all_no": round(cot, 3),
        "paper_loop_s_per_image_all_no": round(paper, 3), "speedup_vs_paper_loop_all_no": round(paper / cot, 3),
        "peak_gib": round(peak / 2**30, 2) if peak is not None else None,
    }
    print(f"{out['device']}: {out['ms_per_step']} ms/step (limit {out['bandwidth_limit_ms']} ms), {t2i:.2f} s/image, "
          f"{cot:.2f} s/introspective image (paper loop {paper:.2f} s), peak {out['peak_gib']} GiB")
    if args.quant_bench:
        out.update(quant_figures(j, device))
    if args.load_bench:
        out.update(load_figures(j, tok, args.load_bench, device))
    return out


def quant_figures(j, device) -> dict:
    """Peak device memory of the same model with its decoder in 4-bit, generating one image; labelled by the mode
    "4bit" really is on this device (int4 where a fused int4 kernel exists, nf4 on older cards)."""
    from janus_r1.model.quantize import quantize_language_model, resolve_mode

    mode = resolve_mode("4bit", device)
    model = copy.deepcopy(j.model.to("cpu"))  # the bf16 model leaves the card first: the peak is the 4-bit one's
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    q = tasks.Janus(quantize_language_model(model, mode, device), j.vocab)
    t = timed(lambda: tasks.text_to_image(q, "a red cube", seed=0), device, repeats=1)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    print(f"4-bit ({mode}): {t:.2f} s/image, peak {peak} GiB")
    return {f"{mode}_s_per_image": round(t, 3), f"{mode}_peak_gib": round(peak, 2) if peak is not None else None}


def load_figures(j, tok, root: str, device) -> dict:
    """Write the same random weights in both layouts, then time a warm load of each onto the device."""
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    from janus_r1.model.deepseek_config import deepseek_config_from_janus
    from janus_r1.model.deepseek_keys import janus_state_dict_to_deepseek
    from janus_r1.model.loading import load_model

    root = Path(root)
    ds, tf = root / "deepseek", root / "transformers"
    cpu_sd = {k: v.detach().to("cpu").contiguous() for k, v in j.model.state_dict().items()}
    if not (ds / "config.json").exists():
        ds.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in janus_state_dict_to_deepseek(cpu_sd).items()},
                  str(ds / "model.safetensors"))
        (ds / "config.json").write_text(json.dumps(deepseek_config_from_janus(j.model.config)))
        tok.save_pretrained(str(ds))
    if not (tf / "config.json").exists():
        j.model.save_pretrained(str(tf), state_dict=cpu_sd)
        tok.save_pretrained(str(tf))
    del cpu_sd
    times = {}
    for name, path in (("deepseek", ds), ("transformers", tf)):
        def load(path=path):
            m, _ = load_model(str(path), device=device, dtype="bf16", progress=False)
            sync(device)
            del m
        times[name] = timed(load, device, repeats=1)
    ratio = times["deepseek"] / times["transformers"]
    print(f"load: DeepSeek layout {times['deepseek']:.2f} s, transformers layout {times['transformers']:.2f} s "
          f"(ratio {ratio:.2f})")
    return {"load_deepseek_s": round(times["deepseek"], 2), "load_transformers_s": round(times["transformers"], 2),
            "load_ratio": round(ratio, 3)}
