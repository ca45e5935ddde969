#!/usr/bin/env bash
# The first 8-GPU node (not run yet: no such node was lent while this was written). One command, one JSON line:
#   bash bench/first_node.sh [more bench/train_step.py flags]
# Janus-Pro-7B's geometry with random weights (a 15 GB bf16 model folder written once under $WORK), launched with
# accelerate on 8 GPUs (NCCL), recipes/sft_t2i.yaml and grpo_t2i.yaml as shipped -- FSDP2 with fp32 master weights
# and bf16 compute (param_dtype bf16, fp32 gradient reduction), gradient checkpointing, G 7, T 2, the `self`
# judge -- 2 SFT steps, 2 GRPO steps, their sharded checkpoints, then the GRPO run resumed on 4 GPUs for one more
# step. Expect about 15-25 minutes (writing the model folder first: a few minutes); docs/training.md,
# "The first runs on GPUs", says what to read in the JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${WORK:-/tmp/janus-r1-first-node}"
exec python bench/train_step.py --geometry 7b --device cuda --procs 8 --resume-procs 4 --work "$WORK" "$@"
