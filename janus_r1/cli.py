"""``janus-r1``: the command line (the commands themselves are in :mod:`janus_r1.commands`).

Every option is checked when the arguments are parsed, and every input (prompts, images, the output folder)
before the model is loaded. Bad input exits 2 with one ``error:`` line and writes nothing; a failure while
writing exits 1 with one ``error:`` line, and a run's files appear all together or not at all.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from . import defaults
from .ask_cli import add_ask_command
from .cli_options import _float_in, _int_in, _model_opts, _positive_int, _seed
from .commands import WriteFailed, cmd_batch, cmd_edit, cmd_generate, cmd_make_tiny, cmd_regenerate, cmd_score
from .errors import Cancelled, JanusR1Error
from .generation.checks import FINAL_RULES
from .outputs import os_reason

DESCRIPTION = """Janus-Pro-R1 from the command line.

commands:
  generate     introspective text-to-image: draw, judge, redraw on "No" (--plain: no judging)
  regenerate   judge images made elsewhere and redraw them (optionally with your critique)
  edit         edit images with an instruction
  score        image-text consistency S = P(Yes)/(P(Yes)+P(No)), one JSON line per image
  judge        score + the model's verdict and written reflection (= score --reflect N)
  ask          ask the model about images (default: describe them), one JSON line per image
  batch        a prompt file -> GenEval-style folders, resumable, data-parallel under accelerate/torchrun
  make-tiny    write a tiny random model (for tests and demos: it draws noise)
  build-data   prompts -> images from several sources -> judge S + reason -> the label files train-sft reads
  train-sft    supervised fine-tuning (tasks I/II/III, or editing)
  train-grpo   GRPO with bi-level rewards on introspective rollouts (or editing)
  train-export a training checkpoint (any engine, any world size) -> a model folder

'janus-r1 COMMAND --help' lists a command's options."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: ... (see: janus-r1 generate --help)``, exit 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


# --- parser --------------------------------------------------------------------------------------------

def _image_opts(sp, cfg: float) -> None:
    sp.add_argument("--cfg", type=_float_in(0), default=cfg, help=f"classifier-free guidance weight (default {cfg:g})")
    sp.add_argument("--temperature", type=_float_in(0, open_low=True), default=defaults.TEMPERATURE,
                    help=f"image-token sampling temperature, > 0 (default {defaults.TEMPERATURE:g})")
    sp.add_argument("--top-k", type=_int_in(0), default=defaults.TOP_K,
                    help=f"image-token top-k (0 = off; paper {defaults.TOP_K})")
    sp.add_argument("--top-p", type=_float_in(0, 1, open_low=True), default=defaults.TOP_P,
                    help=f"image-token nucleus sampling, in (0, 1] (default {defaults.TOP_P:g} = off)")


def _prompt_tokens_opt(sp) -> None:
    sp.add_argument("--max-prompt-tokens", type=_positive_int, default=defaults.MAX_PROMPT_TOKENS, metavar="N",
                    help="refuse prompts longer than N tokens with their template "
                    f"(default {defaults.MAX_PROMPT_TOKENS}, the length the model was trained on)")


def _max_reflection_opt(sp) -> None:
    sp.add_argument("--max-reflection", type=_positive_int, default=defaults.MAX_REFLECTION,
                    help=f"reflection tokens at most ({defaults.MAX_REFLECTION})")


def _reflect_opts(sp, rounds: int, rounds_help: str) -> None:
    sp.add_argument("--max-rounds", type=_positive_int, default=rounds, help=rounds_help)
    sp.add_argument("--text-top-k", type=_int_in(0), default=defaults.TEXT_TOP_K,
                    help=f"reflection top-k (0 = off; paper {defaults.TEXT_TOP_K})")
    _max_reflection_opt(sp)
    sp.add_argument("--final", choices=FINAL_RULES, default=defaults.FINAL,
                    help="the image each sample returns: last (the paper: the accepted image, else the last drawn)"
                    " | best (the highest score S; ties to the later)")
    _prompt_tokens_opt(sp)


def _out_opt(sp, what: str) -> None:
    sp.add_argument("--out", required=True, help=f"output directory ({what}); created if missing, checked "
                    "before the model loads")


def _chunk_opt(sp) -> None:
    sp.add_argument("--chunk-size", type=_positive_int, default=None, metavar="N",
                    help="samples decoded together (default: as many as the free memory allows). Chunk k >= 1 is "
                    "seeded from (seed, k): a run is repeatable for the same seed and chunk size")


def _num_images_opt(sp, what: str) -> None:
    sp.add_argument("--num-images", type=_positive_int, default=defaults.NUM_IMAGES,
                    help=f"{what} (default {defaults.NUM_IMAGES}); a run that cannot "
                    "fit in memory is refused before it starts, a large one is split into chunks")


def _generate_parser(sub) -> None:
    g = sub.add_parser("generate", help="introspective text-to-image (the paper's CoT loop)")
    g.add_argument("prompt", nargs="+", help="one or more prompts (each one quoted)")
    _out_opt(g, "NNN.png final images, NNN_attemptK.png earlier attempts, NNN_sheet.png contact sheets, "
             "trace.json")
    _num_images_opt(g, "images per prompt")
    g.add_argument("--plain", action="store_true", help="plain Janus text-to-image, no judging")
    g.add_argument("--reencode", action="store_true",
                   help="as the released scripts: failed images are decoded to 8-bit (by truncation) and VQ "
                   "re-encoded before the redraw, and the judge sees the truncated pixels (bit-parity only)")
    _chunk_opt(g)
    _model_opts(g), _image_opts(g, defaults.CFG)
    _reflect_opts(g, defaults.MAX_ROUNDS, "images per prompt at most, the first draw included "
                  f"(default {defaults.MAX_ROUNDS}, the paper's)")
    g.set_defaults(func=cmd_generate)


def _regenerate_parser(sub) -> None:
    r = sub.add_parser("regenerate", help="judge images made elsewhere and redraw them")
    r.add_argument("images", nargs="+", help="image files (any size and mode)")
    r.add_argument("--prompt", required=True, help="what the images should show")
    r.add_argument("--critique", default=None, help="use this critique instead of the model's own judgement")
    r.add_argument("--always-redraw", action="store_true", help="redraw even if the model accepts the image")
    _out_opt(r, "NNN.png, NNN_attemptK.png, NNN_sheet.png, trace.json")
    _chunk_opt(r)
    _model_opts(r), _image_opts(r, defaults.CFG)
    _reflect_opts(r, defaults.REGEN_MAX_ROUNDS, "images per sample at most, the INPUT image counting as round 1 "
                  f"(default {defaults.REGEN_MAX_ROUNDS}: the input and one redraw)")
    r.set_defaults(func=cmd_regenerate)


def _edit_parser(sub) -> None:
    e = sub.add_parser("edit", help="edit images with an instruction")
    e.add_argument("images", nargs="+", help="image files to edit")
    e.add_argument("--instruction", required=True, help="what to change, e.g. 'make the sky purple'")
    _out_opt(e, "NNN.png edited images, trace.json")
    _num_images_opt(e, "edits per image")
    _chunk_opt(e)
    _model_opts(e), _image_opts(e, defaults.EDIT_CFG)
    e.set_defaults(func=cmd_edit)


def _score_and_judge_parsers(sub) -> None:
    s = sub.add_parser("score", help="image-text consistency S = P(Yes)/(P(Yes)+P(No)); one JSON line per image")
    s.add_argument("images", nargs="+", help="image files to score")
    s.add_argument("--prompt", required=True, help="the text the images should match")
    s.add_argument("--reflect", type=_int_in(0), default=0, metavar="N",
                   help="also write a reflection of <= N tokens (the same as 'judge --max-reflection N')")
    _prompt_tokens_opt(s)
    _model_opts(s, "seed of the reflection's sampling (--reflect only)")
    s.set_defaults(func=cmd_score)

    j = sub.add_parser("judge", help="verdict, S and the model's written reflection; one JSON line per image")
    j.add_argument("images", nargs="+", help="image files to judge")
    j.add_argument("--prompt", required=True, help="the text the images should match")
    _max_reflection_opt(j)
    _prompt_tokens_opt(j)
    _model_opts(j, "seed of the reflection's sampling")
    j.set_defaults(func=cmd_score)


def _batch_parser(sub) -> None:
    b = sub.add_parser("batch", help="a prompt file (.txt or .jsonl) -> GenEval-style folders; data-parallel "
                       "under accelerate launch / torchrun")
    b.add_argument("prompt_file", help="UTF-8 .txt (one prompt per line, # comments) or .jsonl ({\"prompt\": ...})")
    _out_opt(b, "OUT/<index:05d>/{samples/, attempts/, metadata.jsonl, trace.json}, summary.json")
    _num_images_opt(b, "images per prompt")
    b.add_argument("--batch-size", type=_positive_int, default=1, help="prompts decoded together (default 1)")
    b.add_argument("--plain", action="store_true", help="plain text-to-image, no judging")
    _model_opts(b, "prompt i is seeded seed + i (default 0)", seed_default=0)
    _image_opts(b, defaults.CFG)
    _reflect_opts(b, defaults.MAX_ROUNDS, f"images per prompt at most (default {defaults.MAX_ROUNDS})")
    b.set_defaults(func=cmd_batch)


def _make_tiny_parser(sub) -> None:
    t = sub.add_parser("make-tiny", help="write a tiny random model (weights + config + tokenizer)")
    t.add_argument("dir", help="directory to write (created)")
    t.add_argument("--layout", choices=["deepseek", "transformers"], default="deepseek",
                   help="checkpoint layout: DeepSeek's released one or transformers' (default deepseek)")
    t.add_argument("--geometry", choices=["micro", "real"], default="micro",
                   help="micro (16 image tokens, 64 px) or real (576 tokens, 384 px; tiny widths)")
    t.add_argument("--weights", choices=["safetensors", "bin"], default="safetensors",
                   help="weight file format (bin: a weights-only pickle)")
    t.add_argument("--shards", type=_positive_int, default=1, help="number of weight files (default 1)")
    t.add_argument("--seed", type=_seed, default=0, help="seed of the random weights (default 0)")
    t.set_defaults(func=cmd_make_tiny)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="janus-r1", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_generate_parser, _regenerate_parser, _edit_parser, _score_and_judge_parsers, add_ask_command,
                _batch_parser, _make_tiny_parser):
        add(sub)
    from .training.cli import add_training_commands  # train-sft, train-grpo (heavy imports stay lazy)

    add_training_commands(sub)
    return p


# --- main ----------------------------------------------------------------------------------------------

def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as ``warning: message`` -- no source file, no source line."""
    print(f"warning: {message}", file=file or sys.stderr)


def _quiet_logs() -> None:
    import logging

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    for name in ("transformers", "janus_r1", "accelerate", "PIL"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a bad option (2, its one error line already printed)
        return e.code if isinstance(e.code, int) else 2
    quiet = getattr(args, "quiet", False)
    if quiet:
        _quiet_logs()
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")  # warnings only: errors still raise and are reported below
        else:
            warnings.showwarning = _one_line_warning
        try:
            return args.func(args)
        except JanusR1Error as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except WriteFailed as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        except OSError as e:  # reading an input, creating a folder: one line, whatever the errno
            where = f" {e.filename}" if getattr(e, "filename", None) else ""
            print(f"error:{where} {os_reason(e)}", file=sys.stderr)
            return 1
        except (KeyboardInterrupt, Cancelled):
            print("cancelled; nothing was written", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
