"""The CLI's commands (the parser is in :mod:`janus_r1.cli`).

Every command first checks everything it can without the model -- prompts, input images, the output folder,
the seed (drawn here when not given, and recorded) -- then loads the model, plans the run against the memory
there is (:mod:`janus_r1.runplan`), runs, and writes all of its files together (:mod:`janus_r1.outputs`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import defaults
from .errors import JanusR1Error
from .generation.checks import SEED_MAX, check_prompts, load_images, resolve_seed
from .outputs import check_output_dir, os_reason, write_results
from .runplan import plan_chunk, refuse_early, run_in_chunks


class WriteFailed(Exception):
    """The run succeeded but its files could not be written (disk full, permissions changed meanwhile)."""


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

            self.bar = tqdm(total=event.total, desc=self.label or event.phase, unit="tok", file=sys.stderr,
                            leave=False, dynamic_ncols=True)
        self.bar.update(event.step - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def hooks(self):
        from .generation.decode import Hooks

        return Hooks(on_step=self.step, on_phase=self.phase)


# --- shared steps --------------------------------------------------------------------------------------

def _prepare(args) -> None:
    """Checks that need no model; the seed is drawn now so the trace can record it."""
    if hasattr(args, "out"):
        check_output_dir(args.out)
    if hasattr(args, "seed") and args.command not in ("batch", "score", "judge"):
        args.seed = resolve_seed(args.seed)
    if hasattr(args, "decoding"):  # before the model loads: a bad window is one error line, nothing written
        from .generation.sampling import Sampling

        Sampling(decoding=args.decoding, window=args.jacobi_window).validate("image")
    for c in getattr(args, "critique", None) or []:
        if not c.strip():
            raise JanusR1Error("--critique is empty; leave it out to let the model write its own.")
    critiques, images = getattr(args, "critique", None), getattr(args, "images", [])
    if critiques is not None and len(critiques) not in (1, len(images)):
        raise JanusR1Error(f"--critique given {len(critiques)} times for {len(images)} image(s): give it once (for "
                           "every image) or once per image, in the images' order")


def _load(args):
    from .api import JanusR1

    if args.model == "tiny-random" and not args.quiet:
        print("note: --model tiny-random is a tiny RANDOM model: it draws noise (for smoke tests and demos).",
              file=sys.stderr)
    return JanusR1.from_pretrained(args.model, device=args.device, dtype=args.dtype, progress=not args.quiet,
                                   quantize=args.quantize, max_memory_gib=args.max_memory, runner=args.runner,
                                   decoding=getattr(args, "decoding", "ar"),
                                   jacobi_window=getattr(args, "jacobi_window", 16))


def _text_images_model(args, text: str, what: str):
    """The command's one text and its images, read and checked, then the model: in that order."""
    [text] = check_prompts(text, what)
    pics = load_images(args.images, "images")
    _prepare(args)
    return text, pics, _load(args)


def _meta(args, command: str, chunk: int | None = None) -> dict:
    keys = ["seed", "cfg", "temperature", "top_k", "top_p", "text_top_k", "max_rounds", "max_reflection", "final",
            "reencode", "max_prompt_tokens"]
    meta = {"command": command, "model": args.model, **{k: getattr(args, k) for k in keys if hasattr(args, k)}}
    if "final" in meta:
        meta["final_rule"] = meta.pop("final")  # as each sample records it ("final" there is an attempt index)
    if chunk is not None:
        meta["chunk_size"] = chunk  # samples decoded together; chunk k >= 1 is seeded runplan.chunk_seed(seed, k)
    return meta


def _write(args, results, command: str, chunk: int | None, sheets: bool) -> None:
    try:
        trace = write_results(Path(args.out), results, _meta(args, command, chunk), sheets=sheets)
    except OSError as e:
        raise WriteFailed(f"cannot write the results into {args.out} ({os_reason(e)}); nothing was written.") \
            from None
    if not args.quiet:
        for r in results:
            fa = r.final_attempt
            s = "" if fa.score is None else f" S={fa.score:.3f}"
            print(f"{fa.file}: {r.rounds} image(s) drawn, final verdict {fa.verdict}{s} -- {r.prompt[:60]!r}")
        print(f"trace: {trace}")


def _what(args) -> str:
    return "--num-images" if getattr(args, "num_images", 1) > 1 else "this run"


def _chunked(jr, args, units: list, rounds: int, reflection: int, call, sheets: bool) -> tuple[list, int]:
    """Run ``call(units_chunk, seed)`` over chunks that fit; each result's ``index`` is its unit's k."""
    chunk = plan_chunk(jr.model, len(units), rounds, reflection, getattr(args, "max_prompt_tokens", defaults.MAX_PROMPT_TOKENS),
                       getattr(args, "chunk_size", None), what=_what(args), sheets=sheets)
    prog = Progress(args.quiet)
    results = run_in_chunks(units, chunk, args.seed, lambda us, seed: call(us, seed, prog.hooks()))
    prog.close()
    for r, (_, k) in zip(results, units):
        r.index = k
    return results, chunk


# --- commands ------------------------------------------------------------------------------------------

def cmd_generate(args) -> int:
    prompts = check_prompts(args.prompt, "prompt")
    _prepare(args)
    refuse_early(len(prompts) * args.num_images, not args.plain, _what(args))
    jr = _load(args)
    units = [(p, k) for p in prompts for k in range(args.num_images)]
    common = dict(num_images=1, cfg=args.cfg, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                  max_prompt_tokens=args.max_prompt_tokens)

    def call(us, seed, hooks):
        ps = [p for p, _ in us]
        if args.plain:
            return jr.text_to_image(ps, seed=seed, hooks=hooks, **common)
        return jr.generate(ps, max_rounds=args.max_rounds, text_top_k=args.text_top_k, seed=seed, hooks=hooks,
                           max_reflection=args.max_reflection, reencode=args.reencode, final=args.final, **common)

    rounds = 1 if args.plain else args.max_rounds
    results, chunk = _chunked(jr, args, units, rounds, 0 if args.plain else args.max_reflection, call,
                              sheets=not args.plain)
    _write(args, results, "generate", chunk, sheets=not args.plain)
    return 0


def cmd_regenerate(args) -> int:
    prompt, pics, jr = _text_images_model(args, args.prompt, "--prompt")
    units = [(i, 0) for i in range(len(pics))]
    crit = args.critique  # None, one for every image, or one per image (checked in _prepare)

    def call(us, seed, hooks):
        return jr.regenerate(
            [pics[i] for i, _ in us], prompt, max_rounds=args.max_rounds, cfg=args.cfg,
            critiques=crit if crit is None else crit[0] if len(crit) == 1 else [crit[i] for i, _ in us],
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, text_top_k=args.text_top_k,
            max_reflection=args.max_reflection, seed=seed, redraw_if_accepted=args.always_redraw, hooks=hooks,
            final=args.final, max_prompt_tokens=args.max_prompt_tokens,
        )

    results, chunk = _chunked(jr, args, units, args.max_rounds, args.max_reflection, call, sheets=True)
    for r, src in zip(results, args.images):
        r.attempts[0].file = str(src)
    _write(args, results, "regenerate", chunk, sheets=True)
    return 0


def cmd_edit(args) -> int:
    instruction, pics, jr = _text_images_model(args, args.instruction, "--instruction")
    units = [(i, k) for i in range(len(pics)) for k in range(args.num_images)]

    def call(us, seed, hooks):
        return jr.edit([pics[i] for i, _ in us], instruction, num_images=1, cfg=args.cfg,
                       temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=seed, hooks=hooks)

    results, chunk = _chunked(jr, args, units, 1, 0, call, sheets=False)
    for r, (i, _) in zip(results, units):
        r.attempts[0].file = str(args.images[i])
    _write(args, results, "edit", chunk, sheets=False)
    return 0


def cmd_score(args) -> int:
    """``score`` (S only, deterministic) and ``judge`` (S, verdict and a written reflection)."""
    prompt, pics, jr = _text_images_model(args, args.prompt, "--prompt")
    reflect = args.max_reflection if args.command == "judge" else args.reflect
    if reflect:
        prog = Progress(args.quiet)
        out = jr.judge(pics, prompt, max_reflection=reflect, seed=args.seed, hooks=prog.hooks(),
                       max_prompt_tokens=args.max_prompt_tokens)
        prog.close()
    else:
        out = jr.score(pics, prompt, max_prompt_tokens=args.max_prompt_tokens)
    for path, jd in zip(args.images, out):
        rec = {"image": str(path), "prompt": prompt, "score": round(jd.score, 6), "verdict": jd.verdict}
        if reflect:
            rec["reflection"] = jd.reflection
        print(json.dumps(rec, ensure_ascii=False))
    return 0


def cmd_batch(args) -> int:
    from .batch import barrier_and_summarise, check_budgets, dist_env, process_group, read_prompts, run_batch

    items = read_prompts(args.prompt_file)
    if args.seed + len(items) - 1 > SEED_MAX:
        raise JanusR1Error(f"--seed {args.seed}: prompt i is seeded seed + i, which must stay <= 2^64-1 for "
                           f"{len(items)} prompts; use a seed <= {SEED_MAX - len(items) + 1}.")
    _prepare(args)
    rank, world, local = dist_env()
    if args.device == "auto" and world > 1:
        import torch

        if torch.cuda.is_available():
            args.device = f"cuda:{local % torch.cuda.device_count()}"
    jr = _load(args)
    check_budgets(items, args.prompt_file, lambda text: jr.janus.prompt_ids(text, args.max_prompt_tokens))
    rounds = 1 if args.plain else args.max_rounds
    per_batch = args.batch_size * args.num_images
    plan_chunk(jr.model, per_batch, rounds, 0 if args.plain else args.max_reflection, args.max_prompt_tokens,
               chunk_size=per_batch, what="--batch-size x --num-images", sheets=False)
    prog = Progress(args.quiet or rank != 0)
    kw = dict(cfg=args.cfg, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
              max_prompt_tokens=args.max_prompt_tokens)
    if not args.plain:
        kw.update(max_rounds=args.max_rounds, text_top_k=args.text_top_k, max_reflection=args.max_reflection,
                  final=args.final)
    out = Path(args.out)
    try:
        done = run_batch(jr, items, out, rank=rank, world=world, seed=args.seed, batch_size=args.batch_size,
                         plain=args.plain, num_images=args.num_images, hooks=prog.hooks(), **kw)
    except OSError as e:
        raise WriteFailed(f"cannot write into {out} ({os_reason(e)}); finished prompts are kept, the one being "
                          "written was not; run the same command again to resume.") from None
    prog.close()
    with process_group(world):
        barrier_and_summarise(out, items, rank, world, done)
    if not args.quiet:
        print(f"rank {rank}/{world}: {len(done)} prompt(s) generated into {out}")
    return 0


def cmd_make_tiny(args) -> int:
    from .model.tiny_files import write_tiny

    try:
        path = write_tiny(args.dir, layout=args.layout, geometry=args.geometry, seed=args.seed,
                          weights=args.weights, shards=args.shards)
    except OSError as e:
        raise WriteFailed(f"cannot write the tiny model into {args.dir} ({os_reason(e)}).") from None
    print(f"wrote a tiny random {args.geometry} model ({args.layout} layout) to {path} -- it draws noise")
    return 0
