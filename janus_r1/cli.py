"""``janus-r1``: generate | regenerate | edit | score | make-tiny.

Every command validates its input and exits 2 with one ``error:`` line on bad input; images and trace.json are
written atomically (a temp file renamed into place) and only after the whole run succeeded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .api import DEFAULT_MODEL
from .errors import Cancelled, JanusR1Error
from .outputs import write_results

# --- progress ------------------------------------------------------------------------------------------

class Progress:
    """A tqdm bar per phase (tokens of each image or reflection); silent with --quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None
        self.label = ""

    def phase(self, label: str) -> None:
        self.label = label
        self.close()

    def step(self, event) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            unit = "tok"
            self.bar = tqdm(total=event.total, desc=self.label or event.phase, unit=unit, file=sys.stderr,
                            leave=False, dynamic_ncols=True)
        self.bar.update(event.step - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def hooks(self):
        from .generation.decode import Hooks

        return Hooks(on_step=self.step, on_phase=self.phase)


# --- commands ------------------------------------------------------------------------------------------

def _load(args):
    from .api import JanusR1

    if args.model == "tiny-random" and not args.quiet:
        print("note: --model tiny-random is a tiny RANDOM model: it draws noise (for smoke tests and demos).",
              file=sys.stderr)
    return JanusR1.from_pretrained(args.model, device=args.device, dtype=args.dtype, progress=not args.quiet,
                                   quantize=args.quantize, max_memory_gib=args.max_memory, runner=args.runner)


def _meta(args, jr, command: str) -> dict:
    keys = ["seed", "cfg", "temperature", "top_k", "top_p", "text_top_k", "max_rounds", "max_reflection"]
    return {"command": command, "model": args.model, **{k: getattr(args, k) for k in keys if hasattr(args, k)}}


def cmd_generate(args) -> int:
    jr = _load(args)
    prog = Progress(args.quiet)
    common = dict(num_images=args.num_images, cfg=args.cfg, temperature=args.temperature, top_k=args.top_k,
                  top_p=args.top_p, seed=args.seed, hooks=prog.hooks())
    if args.plain:
        results = jr.text_to_image(args.prompt, **common)
    else:
        results = jr.generate(args.prompt, max_rounds=args.max_rounds, text_top_k=args.text_top_k,
                              max_reflection=args.max_reflection, reencode=args.reencode, **common)
    prog.close()
    trace = write_results(Path(args.out), results, _meta(args, jr, "generate"))
    _summary(results, trace, args.quiet)
    return 0


def cmd_regenerate(args) -> int:
    jr = _load(args)
    prog = Progress(args.quiet)
    results = jr.regenerate(
        args.images, args.prompt, critiques=args.critique, max_rounds=args.max_rounds, cfg=args.cfg,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, text_top_k=args.text_top_k,
        max_reflection=args.max_reflection, seed=args.seed, redraw_if_accepted=args.always_redraw,
        hooks=prog.hooks(),
    )
    prog.close()
    for r, src in zip(results, args.images):
        r.attempts[0].file = str(src)
    trace = write_results(Path(args.out), results, _meta(args, jr, "regenerate"))
    _summary(results, trace, args.quiet)
    return 0


def cmd_edit(args) -> int:
    jr = _load(args)
    prog = Progress(args.quiet)
    results = jr.edit(args.images, args.instruction, num_images=args.num_images, cfg=args.cfg,
                      temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                      hooks=prog.hooks())
    prog.close()
    for r in results:
        r.attempts[0].file = str(args.images[0] if len(args.images) == 1 else args.images[r.index])
    trace = write_results(Path(args.out), results, _meta(args, jr, "edit"))
    _summary(results, trace, args.quiet)
    return 0


def cmd_score(args) -> int:
    jr = _load(args)
    if args.reflect:
        prog = Progress(args.quiet)
        out = jr.judge(args.images, args.prompt, max_reflection=args.reflect, seed=args.seed, hooks=prog.hooks())
        prog.close()
    else:
        out = jr.score(args.images, args.prompt)
    for path, jd in zip(args.images, out):
        rec = {"image": str(path), "prompt": args.prompt, "score": round(jd.score, 6), "verdict": jd.verdict}
        if args.reflect:
            rec["reflection"] = jd.reflection
        print(json.dumps(rec, ensure_ascii=False))
    return 0


def cmd_batch(args) -> int:
    from .batch import barrier_and_summarise, dist_env, read_prompts, run_batch

    items = read_prompts(args.prompt_file)
    rank, world, local = dist_env()
    if args.device == "auto" and world > 1:
        import torch

        if torch.cuda.is_available():
            args.device = f"cuda:{local % torch.cuda.device_count()}"
    jr = _load(args)
    prog = Progress(args.quiet or rank != 0)
    kw = dict(cfg=args.cfg, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    if not args.plain:
        kw.update(max_rounds=args.max_rounds, text_top_k=args.text_top_k, max_reflection=args.max_reflection)
    out = Path(args.out)
    done = run_batch(jr, items, out, rank=rank, world=world, seed=args.seed or 0, batch_size=args.batch_size,
                     plain=args.plain, num_images=args.num_images, hooks=prog.hooks(), **kw)
    prog.close()
    barrier_and_summarise(out, items, rank, world, done)
    if not args.quiet:
        print(f"rank {rank}/{world}: {len(done)} prompt(s) generated into {out}")
    return 0


def cmd_make_tiny(args) -> int:
    from .model.tiny_files import write_tiny

    path = write_tiny(args.dir, layout=args.layout, geometry=args.geometry, seed=args.seed,
                      weights=args.weights, shards=args.shards)
    print(f"wrote a tiny random {args.geometry} model ({args.layout} layout) to {path} -- it draws noise")
    return 0


def _summary(results, trace: Path, quiet: bool) -> None:
    if quiet:
        return
    for r in results:
        fa = r.final_attempt
        s = "" if fa.score is None else f" S={fa.score:.3f}"
        print(f"{fa.file}: {r.rounds} image(s) drawn, final verdict {fa.verdict}{s} -- {r.prompt[:60]!r}")
    print(f"trace: {trace}")


# --- parser --------------------------------------------------------------------------------------------

def _positive_int(v: str) -> int:
    n = int(v)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (got {v})")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="janus-r1", description="Janus-Pro-R1: generate, judge, regenerate, edit.")
    sub = p.add_subparsers(dest="command", required=True)

    def model_opts(sp):
        sp.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"local dir, hub repo id or 'tiny-random' (default {DEFAULT_MODEL})")
        sp.add_argument("--device", default="auto", help="auto | cuda | mps | cpu")
        sp.add_argument("--dtype", default="auto", help="auto | bf16 | fp16 | fp32")
        sp.add_argument("--quantize", default="none", choices=["none", "4bit", "int4", "nf4", "8bit"],
                        help="language model only: 4bit = int4 on torch's own kernels where the device has one (CUDA sm80+, "
                    "CPU), else NF4 | int4 | nf4, 8bit (need bitsandbytes)")
        sp.add_argument("--runner", default="auto", choices=["auto", "static", "fixed", "compiled", "dynamic"],
                        help="decode loop: auto (static KV cache) | compiled (torch.compile; CUDA graphs on a GPU)"
                        " | dynamic (transformers' own cache); all give the same tokens")
        sp.add_argument("--max-memory", type=float, default=None, metavar="GIB",
                        help="keep at most GIB of weights on the device; stream the other decoder layers from RAM")
        sp.add_argument("--seed", type=int, default=None)
        sp.add_argument("--quiet", action="store_true", help="no progress bars or summary")

    def image_opts(sp, cfg: float):
        sp.add_argument("--cfg", type=float, default=cfg, help=f"classifier-free guidance (default {cfg})")
        sp.add_argument("--temperature", type=float, default=1.0)
        sp.add_argument("--top-k", type=int, default=4096, help="image-token top-k (0 = off; paper 4096)")
        sp.add_argument("--top-p", type=float, default=1.0)

    def reflect_opts(sp, rounds: int):
        sp.add_argument("--max-rounds", type=int, default=rounds, help=f"images per sample at most ({rounds})")
        sp.add_argument("--text-top-k", type=int, default=50, help="reflection top-k (paper 50)")
        sp.add_argument("--max-reflection", type=int, default=256, help="reflection tokens at most")

    g = sub.add_parser("generate", help="introspective text-to-image (the paper's CoT loop)")
    g.add_argument("prompt", nargs="+", help="one or more prompts")
    g.add_argument("--out", required=True, help="output directory (PNGs + trace.json)")
    g.add_argument("--num-images", type=int, default=1)
    g.add_argument("--plain", action="store_true", help="plain Janus text-to-image, no judging")
    g.add_argument("--reencode", action="store_true",
                   help="decode+re-encode failed images like the released scripts (bit-parity only)")
    model_opts(g), image_opts(g, 5.0), reflect_opts(g, 3)
    g.set_defaults(func=cmd_generate)

    r = sub.add_parser("regenerate", help="judge images made elsewhere and redraw them")
    r.add_argument("images", nargs="+")
    r.add_argument("--prompt", required=True)
    r.add_argument("--critique", default=None, help="use this critique instead of the model's own")
    r.add_argument("--always-redraw", action="store_true", help="redraw even if the model accepts the image")
    r.add_argument("--out", required=True)
    model_opts(r), image_opts(r, 5.0), reflect_opts(r, 2)
    r.set_defaults(func=cmd_regenerate)

    e = sub.add_parser("edit", help="edit images with an instruction")
    e.add_argument("images", nargs="+")
    e.add_argument("--instruction", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--num-images", type=int, default=1)
    model_opts(e), image_opts(e, 4.0)
    e.set_defaults(func=cmd_edit)

    s = sub.add_parser("score", help="image-text consistency S = P(Yes)/(P(Yes)+P(No)); one JSON line per image")
    s.add_argument("images", nargs="+")
    s.add_argument("--prompt", required=True)
    s.add_argument("--reflect", type=int, default=0, metavar="N", help="also write a reflection of <= N tokens")
    model_opts(s)
    s.set_defaults(func=cmd_score)

    b = sub.add_parser("batch", help="a prompt file (.txt or .jsonl) -> GenEval-style folders; data-parallel "
                       "under accelerate launch / torchrun")
    b.add_argument("prompt_file")
    b.add_argument("--out", required=True)
    b.add_argument("--num-images", type=int, default=1)
    b.add_argument("--batch-size", type=_positive_int, default=1, help="prompts decoded together (default 1)")
    b.add_argument("--plain", action="store_true", help="plain text-to-image, no judging")
    model_opts(b), image_opts(b, 5.0), reflect_opts(b, 3)
    b.set_defaults(func=cmd_batch)

    t = sub.add_parser("make-tiny", help="write a tiny random model (weights + config + tokenizer)")
    t.add_argument("dir")
    t.add_argument("--layout", choices=["deepseek", "transformers"], default="deepseek")
    t.add_argument("--geometry", choices=["micro", "real"], default="micro")
    t.add_argument("--weights", choices=["safetensors", "bin"], default="safetensors")
    t.add_argument("--shards", type=_positive_int, default=1)
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_make_tiny)

    from .training.cli import add_training_commands  # train-sft, train-grpo (heavy imports stay lazy)

    add_training_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False):
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        return args.func(args)
    except JanusR1Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Cancelled):
        print("cancelled; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
