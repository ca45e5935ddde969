"""``janus-r1 train-sft`` and ``janus-r1 train-grpo`` (flags override the ``--config`` recipe).

Wire into the main CLI with ``add_training_commands(sub)``; each command sets ``func`` to a function of the parsed
args returning an exit code, and raises :class:`JanusR1Error` for bad input. Runnable under ``accelerate launch``.
"""

from __future__ import annotations

import argparse
import os
import sys


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="base model: local dir, hub id or 'tiny-random'")
    p.add_argument("--out", default=None, help="run directory (checkpoints, log.jsonl, final/)")
    p.add_argument("--task", choices=["t2i", "edit"], default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--config", default=None, help="recipe YAML/JSON (see janus_r1/training/recipes/)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--save-every", type=int, default=None)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default=None)
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default=None,
                   help="bf16: fp32 master weights, bf16 compute (the recipes)")
    p.add_argument("--sharding", choices=["none", "fsdp", "zero2", "zero3"], default=None,
                   help="fsdp: FSDP2 across the processes; zero2 / zero3: DeepSpeed ZeRO (pip install deepspeed)")
    p.add_argument("--resume", default=None, help="auto (default: latest checkpoint in --out) | none | DIR")
    p.add_argument("--freeze", nargs="+", default=None, metavar="PART",
                   help="keep these parts frozen too (SigLIP and the VQ model always are): aligner, "
                        "generation_aligner, generation_embeddings, generation_head")


# the flags _common adds, each a config key of the same name
COMMON = ("model", "out", "task", "max_steps", "lr", "seed", "save_every", "dtype", "mixed_precision", "sharding",
          "resume", "freeze")


def cmd_train_sft(args) -> int:
    from .config import SFTConfig, load_config
    from .trainer import train_sft

    over = {k: getattr(args, k) for k in (*COMMON, "batch_size", "grad_accum", "image_root", "select",
                                          "yes_no_weight", "judge_pairs")}
    over["data"] = args.data
    if args.skip_bad_rows:
        over["on_bad_row"] = "skip"
    path = train_sft(load_config(SFTConfig, args.config, over))
    _done(path)
    return 0


def cmd_train_grpo(args) -> int:
    from .config import GRPOConfig, load_config
    from .trainer import train_grpo

    over = {k: getattr(args, k) for k in (*COMMON, "prompts", "reward", "ref_model",
                                          "group_size", "max_rounds", "advantage", "beta", "inner_iterations",
                                          "logprob", "prompts_per_step", "rollout_batches", "micro_batch")}
    path = train_grpo(load_config(GRPOConfig, args.config, over))
    _done(path)
    return 0


def _done(path) -> None:
    if os.environ.get("RANK", "0") == "0":
        print(f"exported {path}")


def add_training_commands(sub) -> None:
    """Register ``train-sft`` and ``train-grpo`` on an ``argparse`` sub-parsers object."""
    s = sub.add_parser("train-sft", help="supervised fine-tuning (Task-I/II/III mix, or editing)")
    _common(s)
    s.add_argument("--data", nargs="+", default=None, help="label JSONL file(s) (t2i) or editing metadata JSONL")
    s.add_argument("--image-root", default=None, help="resolve relative image paths here (default: file's dir)")
    s.add_argument("--batch-size", type=int, default=None, help="samples per process per micro-step")
    s.add_argument("--grad-accum", type=int, default=None, help="micro-steps per update")
    s.add_argument("--select", choices=["score", "state"], default=None,
                   help="positives/negatives by S thresholds (paper) or by the released state codes")
    s.add_argument("--yes-no-weight", type=float, default=None, help="e.g. 0.8: weight of the verdict token CE")
    s.add_argument("--judge-pairs", action="store_true", default=None,
                   help="Task-II batches of pairs: a positive and a negative image of the same prompt")
    s.add_argument("--skip-bad-rows", action="store_true", help="skip and count bad rows instead of failing")
    s.set_defaults(func=cmd_train_sft)

    g = sub.add_parser("train-grpo", help="GRPO with bi-level rewards on introspective rollouts (or editing)")
    _common(g)
    g.add_argument("--prompts", default=None, help="prompt file (text or JSONL); editing: JSONL image1/text")
    g.add_argument("--reward", default=None, help="self | self:PATH | vlm:PATH | http:URL (default self)")
    g.add_argument("--ref-model", default=None, help="frozen KL reference (default: the initial policy)")
    g.add_argument("--group-size", type=int, default=None, help="G (paper 7)")
    g.add_argument("--max-rounds", type=int, default=None, help="T images per trajectory at most")
    g.add_argument("--advantage", choices=["trajectory", "segments"], default=None)
    g.add_argument("--logprob", choices=["sampled", "code"], default=None)
    g.add_argument("--beta", type=float, default=None, help="KL weight (paper 0.05)")
    g.add_argument("--inner-iterations", type=int, default=None, help="mu, optimizer updates per rollout batch")
    g.add_argument("--prompts-per-step", type=int, default=None, help="prompts (groups) per process per batch")
    g.add_argument("--rollout-batches", type=int, default=None, help="rollout batches per process per update")
    g.add_argument("--micro-batch", type=int, default=None, help="trajectories per forward/backward (0: all)")
    g.set_defaults(func=cmd_train_grpo)

    from .export import add_export_command

    add_export_command(sub)

    from .build_data import add_build_data_command

    add_build_data_command(sub)


def main(argv: list[str] | None = None) -> int:
    from ..errors import JanusR1Error
    from .atomic import CheckpointWriteFailed

    p = argparse.ArgumentParser(prog="janus-r1")
    add_training_commands(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except JanusR1Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except CheckpointWriteFailed as e:  # disk full: a failure while writing, exit 1 as the main CLI's OSErrors
        print(f"error: {e.strerror}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
