"""``janus-r1 ask``: questions about images (Janus's understanding side), one JSON line per image.

    janus-r1 ask a.png b.png                                   # describe each image
    janus-r1 ask a.png --image-b b.png --question "What changed from the first image to the second?"

Its own module (the parser and the command) so ``cli.py`` stays a table of subcommands. As every command, it checks
everything before the model loads (one ``error:`` line, exit 2) and refuses a batch that cannot fit in the free
memory before it runs; it writes no files, and prints each batch's answers as soon as they are written, so a long
list shows its first answers early.
"""

from __future__ import annotations

import json

from . import defaults, runplan
from .cli_options import _float_in, _int_in, _model_opts, _positive_int
from .commands import Progress, _load
from .errors import JanusR1Error
from .generation.checks import check_questions, load_images, open_image, resolve_seed


def add_ask_command(sub) -> None:
    a = sub.add_parser("ask", help="ask the model about images (default: describe them); one JSON line per image")
    a.add_argument("images", nargs="+", help="image files (any size and mode); one answer each")
    a.add_argument("--question", default=defaults.ASK_QUESTION,
                   help=f"what to ask about every image (default {defaults.ASK_QUESTION!r})")
    a.add_argument("--image-b", default=None, metavar="IMG",
                   help="a second image, shown after each IMAGE with the question (to compare two)")
    a.add_argument("--max-new-tokens", type=_positive_int, default=defaults.ASK_MAX_NEW_TOKENS, metavar="N",
                   help=f"answer tokens at most (default {defaults.ASK_MAX_NEW_TOKENS})")
    a.add_argument("--temperature", type=_float_in(0), default=defaults.ASK_TEMPERATURE,
                   help=f"0 = greedy, the same answer every time (default {defaults.ASK_TEMPERATURE:g}); higher "
                   "samples")
    a.add_argument("--top-p", type=_float_in(0, 1, open_low=True), default=defaults.ASK_TOP_P,
                   help=f"nucleus sampling when --temperature > 0, in (0, 1] (default {defaults.ASK_TOP_P:g})")
    a.add_argument("--top-k", type=_int_in(0), default=defaults.ASK_TOP_K,
                   help=f"top-k when --temperature > 0 (0 = off, the default {defaults.ASK_TOP_K})")
    a.add_argument("--batch-size", type=_positive_int, default=defaults.ASK_BATCH_SIZE, metavar="N",
                   help=f"images answered together (default {defaults.ASK_BATCH_SIZE}); a sampled answer repeats "
                   "for the same seed and batch size")
    _model_opts(a, "seed of a sampled answer (--temperature > 0; default: drawn, and printed in each line)")
    a.set_defaults(func=cmd_ask)


def cmd_ask(args) -> int:
    """Answer ``--question`` about each image, batch by batch; one JSON line per image on stdout."""
    [question] = check_questions(args.question, "--question")
    pics = load_images(args.images, "images")
    second = None if args.image_b is None else open_image(args.image_b, "--image-b")
    args.seed = resolve_seed(args.seed)
    jr = _load(args)
    from .generation.ask import check_context

    check_context(jr.janus, [question], [1 if second is None else 2], args.max_new_tokens)  # before any answer
    _check_fits(jr, args, min(args.batch_size, len(pics)), 1 if second is None else 2, question)
    prog = Progress(args.quiet)
    for start in range(0, len(pics), args.batch_size):
        answers = jr.ask(pics[start : start + args.batch_size], question, max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed,
                         hooks=prog.hooks(), images_b=second)
        prog.close()
        for path, a in zip(args.images[start : start + args.batch_size], answers):
            rec = {"image": str(path), "question": question, "answer": a.text}
            if second is not None:
                rec["image_b"] = str(args.image_b)
            if args.temperature > 0:
                rec["seed"] = a.seed
            print(json.dumps(rec, ensure_ascii=False), flush=True)
    return 0


def _check_fits(jr, args, batch: int, images: int, question: str) -> None:
    """Refuse a batch whose KV cache and activations cannot fit in the free memory of the model's device, before
    it runs (the estimate the ComfyUI node hands to ComfyUI)."""
    need = jr.memory_needed("ask", batch=batch, images=images, max_new_tokens=args.max_new_tokens, question=question)
    free = runplan.available_bytes(jr.device)
    if need > free:
        gib = runplan.GIB
        raise JanusR1Error(f"--batch-size {batch} needs about {need / gib:.1f} GiB of {jr.device} memory beyond the "
                           f"weights and {free / gib:.1f} GiB is free; lower --batch-size or --max-new-tokens.")
