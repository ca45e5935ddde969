"""Training configurations: dataclasses with the paper's defaults, YAML/JSON recipe files, flag overrides.

Precedence: dataclass defaults (the paper, spec §3.5 / §4.8 Table 5) < recipe file (``--config``) < CLI flags.
Unknown keys in a recipe are an error (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import JanusR1Error


@dataclass
class Common:
    model: str = "tiny-random"
    out: str = "out/train"
    task: str = "t2i"  # t2i | edit
    max_steps: int = 1000
    seed: int = 1024
    dtype: str = "fp32"  # master weights: fp32 (with mixed_precision bf16: bf16 compute) | bf16 (pure bf16, lossy)
    mixed_precision: str = "no"  # no | bf16 | fp16: autocast over the master weights (FSDP: its param_dtype)
    sharding: str = "none"  # none (one replica per process: DDP) | fsdp (FSDP2) | zero2 | zero3 (DeepSpeed)
    # FSDP over several nodes: 0 shards over every process (a 1-D mesh: every all-gather crosses the network);
    # N (the processes per node, e.g. 8) is HSDP: shard within each group of N ranks, replicate across groups
    fsdp_shard_group: int = 0
    gradient_checkpointing: bool = False
    # parts kept frozen besides SigLIP and the VQ model (frozen always, as in the paper): any of FREEZABLE. The
    # paper trains them all; a small model whose reader is pre-trained (bench/learns.py: set by hand) keeps its
    # aligner, which Adam otherwise pulls apart (docs/training.md, "Train your own")
    freeze: tuple[str, ...] = ()
    # optimiser (paper Table 5): AdamW (0.9, 0.95), eps 1e-6, wd 0.05, clip 1.0; no decay on biases and norms
    lr: float = 2e-5
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-6
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    save_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 1
    max_prompt_tokens: int = 200
    resume: str = "auto"  # auto (the latest checkpoint under out, if any) | none | a checkpoint directory
    # sharded: torch.distributed.checkpoint, every rank its shard (dcp_checkpoint.py); full: gathered safetensors
    # on rank 0 (earlier versions; kept for comparison -- both formats resume)
    checkpoint_format: str = "sharded"
    async_save: bool = True  # sharded checkpoints written in the background while training continues
    # FSDP2 / ZeRO-3: meta skeleton, each rank keeps only its shard of each tensor as it is read (materialise.py,
    # zero_load.py); False: a full copy per rank first
    load_sharded: bool = True
    # ZeRO-3: weights of at most this many elements (norms, biases) stay gathered on every rank, as DeepSpeed's
    # stage3_param_persistence_threshold; every other module is gathered when it runs (0: partition every weight)
    zero3_persist_numel: int = 100_000
    # ZeRO-3: the most weight elements kept gathered ahead of use or for a reuse soon after (DeepSpeed's
    # stage3_max_live_parameters and stage3_max_reuse_distance): the peak of gathered weights beyond one module's
    zero3_live_numel: int = 1_000_000_000
    # logging and evaluation (tracking.py, evaluation.py)
    log_with: str = "auto"  # auto (TensorBoard when installed) | none | tensorboard | wandb | tensorboard,wandb
    eval_prompts: str | None = None  # held-out prompt file (.txt, or .jsonl such as GenEval's metadata)
    eval_every: int = 0  # evaluate every N steps and at the last step (0: never)
    # the process group's timeout (NCCL's watchdog kills a collective waiting longer; torch's default is 10 min):
    # longer than anything one rank may do while the others wait in a collective -- a served judge's retry budget
    # (GRPO reward_budget_minutes), a vLLM restart, a checkpoint write
    collective_timeout_minutes: float = 60.0


@dataclass
class SFTConfig(Common):
    data: list[str] = field(default_factory=list)  # label files (t2i) or editing metadata JSONL files
    image_root: str | None = None  # relative img_path are resolved against this (default: the label file's dir)
    on_bad_row: str = "fail"  # fail | skip (skipped rows are counted and logged)
    check_images: bool = False  # True: open every image at start-up; False: verify each when first loaded (skip+count)
    num_workers: int = 2  # DataLoader workers that open images off the main thread (0: in the main process)
    prefetch: int = 4  # steps each worker prepares ahead
    # selection (paper §3.1/B.1); select="state" is the released code's state codes (state 4 / {0,1}, S1-S5 aside)
    select: str = "score"  # score | state
    gen_positive: float = 0.8
    judge_positive: float = 0.7
    negative: float = 0.5
    # task mix I:II:III (paper 0.2/0.3/0.5; code 10:10:15) and context lengths (paper t = 3 for II, 2 for III)
    mix: tuple[float, float, float] = (0.2, 0.3, 0.5)
    # Task-II batches of pairs: a positive and a negative image of the same prompt (docs/training.md, "Train your own")
    judge_pairs: bool = False
    judge_history: int = 2  # Task-II: up to t-1 = 2 previous failed attempts before the judged image
    regen_history: int = 2  # Task-III: up to t = 2 failed attempts before the target image
    prompt_dropout: float = 0.1  # Task-I, Task-III and editing (instruction)
    max_answer_tokens: int = 184  # Task-II answer incl. EOS; the reason is cut, never the EOS (S4)
    yes_no_weight: float | None = None  # e.g. 0.8: 0.8*CE(verdict token) + 0.2*CE(rest); None = plain CE
    yes_no_weight_mode: str = "first"  # first (verdict token only) | code (every Yes/No id, the reference)
    batch_size: int = 4
    grad_accum: int = 1
    warmup_steps: int = 1000
    warmup_start_lr: float = 0.0
    min_lr: float = 2e-7


@dataclass
class GRPOConfig(Common):
    prompts: str = ""  # text file (one prompt per line) or JSONL; editing: JSONL {"image1"|"input", "text"}
    ref_model: str | None = None  # frozen KL reference; default a copy of the initial policy
    reward: str = "self"  # self | self:PATH | vlm:PATH | openai:URL?model=NAME (served judge) | http:URL (deprecated)
    reward_retries: int = 10  # tries of a served judge's request after the first (backoff 1, 2, 4 ... 60 s)
    reward_timeout: float = 120.0  # seconds per try
    # a served judge's whole scoring of a step, retries included, must end within this; then every rank stops
    # with the judge's error (less than collective_timeout_minutes, so the error is the judge's, not a timeout)
    reward_budget_minutes: float = 20.0
    group_size: int = 7  # G (paper 7; code 8)
    prompts_per_step: int = 1  # per process and rollout batch; each prompt's group lives on one process
    rollout_batches: int = 1  # rollout batches per update (each seeded by its slot, like grad_accum in SFT)
    # trajectories one rollout decode takes at most (whole batches): 0 = every batch that fits the accelerator's
    # memory by the memory formula (the CPU: all); prompts_per_step * group_size = one batch per decode, each
    # seeded by its slot (1 process x n batches draws what n processes draw)
    rollout_rows: int = 0
    micro_batch: int = 0  # trajectories per forward/backward of the update (gradient accumulation); 0 = all
    max_rounds: int = 2  # T images per trajectory (paper inference <= 3; code 2)
    advantage: str = "trajectory"  # trajectory (paper R_Gen + R_Comp) | segments (code: A(r1), A(r2), A(r3))
    logprob: str = "sampled"  # sampled (CFG-guided at the sampling temperature) | code (c - (w-1)/w u, R3/R4)
    loss_on_eos: bool = True  # False = the reference's mask (R5)
    reencode: bool = False  # True = VQ re-encode failed images for the regen context (R2, bit-parity only)
    cfg: float = 5.0
    temperature: float = 1.0
    image_top_k: int = 0  # released RL rollouts: no top-k
    text_top_k: int = 0
    max_reflection: int = 128
    beta: float = 0.05
    clip_eps: float = 0.2
    inner_iterations: int = 2  # mu >= 1; with mu >= 2 the ratio moves away from 1 and clipping applies
    overlap_rewards: bool = True  # a served judge scores in a thread while old / reference log-probs run
    lr: float = 6e-6
    warmup_steps: int = 100
    convert_lr: float = 2e-6
    convert_steps: int = 400
    min_lr: float = 2e-7
    decay: str = "cosine"  # cosine (paper) | linear (code) after convert_steps
    max_steps: int = 3000
    save_every: int = 25
    edit_weights: tuple[float, float] = (0.5, 1.0)  # (w_flw, w_psv), paper; code 1.0 / 0.25


def _coerce(cls, key: str, value, where: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if key not in fields:
        raise JanusR1Error(f"{where}: unknown setting {key!r}; known: {', '.join(sorted(fields))}")
    default = getattr(cls(), key)
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, list) and isinstance(value, str):
        return [value]
    return value


def load_config(cls, path: str | None = None, overrides: dict | None = None):
    """``cls`` defaults, then the recipe at ``path`` (YAML or JSON), then non-None ``overrides``."""
    values: dict = {}
    if path:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise JanusR1Error(f"cannot read config {p}: {e}") from e
        if p.suffix in (".yaml", ".yml"):
            import yaml

            try:
                raw = yaml.safe_load(text) or {}
            except yaml.YAMLError as e:
                raise JanusR1Error(f"{p}: not valid YAML: {e}") from e
        else:
            try:
                raw = json.loads(text)
            except ValueError as e:
                raise JanusR1Error(f"{p}:{getattr(e, 'lineno', 0)}: not valid JSON: {e}") from e
        if not isinstance(raw, dict):
            raise JanusR1Error(f"{p}: a recipe is a mapping of settings, found {type(raw).__name__}")
        values.update({k: _coerce(cls, k, v, str(p)) for k, v in raw.items()})
    for k, v in (overrides or {}).items():
        if v is not None:
            values[k] = _coerce(cls, k, v, "command line")
    cfg = cls(**values)
    validate(cfg)
    return cfg


FREEZABLE = ("aligner", "generation_aligner", "generation_embeddings", "generation_head")


def validate(cfg) -> None:
    def bad(msg: str) -> None:
        raise JanusR1Error(f"config: {msg}")

    if isinstance(cfg.freeze, str) or any(x not in FREEZABLE for x in cfg.freeze):
        bad(f"freeze is a list of parts among {', '.join(FREEZABLE)} (got {cfg.freeze!r})")

    if cfg.task not in ("t2i", "edit"):
        bad(f"task must be t2i or edit (got {cfg.task!r})")
    if cfg.max_steps < 1:
        bad("max_steps must be >= 1")
    if cfg.dtype not in ("fp32", "bf16"):
        bad(f"dtype must be fp32 or bf16 (got {cfg.dtype!r})")
    if cfg.mixed_precision not in ("no", "bf16", "fp16"):
        bad(f"mixed_precision must be no, bf16 or fp16 (got {cfg.mixed_precision!r})")
    for key in ("zero3_persist_numel", "zero3_live_numel"):
        v = getattr(cfg, key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            bad(f"{key} must be a whole number >= 0 (got {v!r})")
    if cfg.sharding not in ("none", "fsdp", "zero2", "zero3"):
        bad(f"sharding must be none, fsdp, zero2 or zero3 (got {cfg.sharding!r})")
    if cfg.sharding != "none" and cfg.mixed_precision == "fp16":
        bad(f"sharding {cfg.sharding} supports mixed_precision no or bf16")
    if cfg.sharding in ("zero2", "zero3") and cfg.dtype != "fp32":
        bad(f"sharding {cfg.sharding} keeps fp32 master weights: set dtype fp32 (mixed_precision bf16 computes in "
            "bf16)")
    if isinstance(cfg.fsdp_shard_group, bool) or not isinstance(cfg.fsdp_shard_group, int) or cfg.fsdp_shard_group < 0:
        bad(f"fsdp_shard_group must be a whole number >= 0 (got {cfg.fsdp_shard_group!r})")
    if cfg.fsdp_shard_group and cfg.sharding != "fsdp":
        bad(f"fsdp_shard_group (HSDP) needs sharding: fsdp (got {cfg.sharding})")
    if cfg.checkpoint_format not in ("sharded", "full"):
        bad(f"checkpoint_format must be sharded or full (got {cfg.checkpoint_format!r})")
    if not cfg.collective_timeout_minutes > 0:
        bad(f"collective_timeout_minutes must be > 0 (got {cfg.collective_timeout_minutes!r})")
    if cfg.eval_every < 0 or (cfg.eval_every and not cfg.eval_prompts):
        bad("eval_every must be >= 0 and needs eval_prompts (a held-out prompt file)")
    if isinstance(cfg, SFTConfig):
        if cfg.batch_size < 1 or cfg.grad_accum < 1:
            bad("need batch_size >= 1 and grad_accum >= 1")
        if cfg.on_bad_row not in ("fail", "skip"):
            bad("on_bad_row must be fail or skip")
        if cfg.select not in ("score", "state"):
            bad("select must be score or state")
        if len(cfg.mix) != 3 or min(cfg.mix) < 0 or sum(cfg.mix) <= 0:
            bad(f"mix must be three non-negative weights (got {cfg.mix})")
        if cfg.yes_no_weight is not None and not 0 < cfg.yes_no_weight < 1:
            bad("yes_no_weight must be in (0, 1) or null")
        if not isinstance(cfg.judge_pairs, bool) or (cfg.judge_pairs and cfg.batch_size < 2):
            bad(f"judge_pairs must be true or false, and needs batch_size >= 2 (got {cfg.judge_pairs!r}, batch_size "
                f"{cfg.batch_size})")
        if cfg.judge_history < 0 or cfg.regen_history < 1:
            bad("judge_history must be >= 0 and regen_history >= 1")
        if cfg.num_workers < 0 or cfg.prefetch < 1:
            bad("num_workers must be >= 0 and prefetch >= 1")
    else:
        if cfg.prompts_per_step < 1 or cfg.rollout_batches < 1 or cfg.micro_batch < 0 or cfg.rollout_rows < 0:
            bad("need prompts_per_step >= 1, rollout_batches >= 1, micro_batch >= 0 and rollout_rows >= 0")
        if cfg.reward_retries < 0 or not cfg.reward_timeout > 0:
            bad("need reward_retries >= 0 and reward_timeout > 0")
        if not 0 < cfg.reward_budget_minutes < cfg.collective_timeout_minutes:
            bad(f"reward_budget_minutes ({cfg.reward_budget_minutes}) must be > 0 and below "
                f"collective_timeout_minutes ({cfg.collective_timeout_minutes}): the other ranks wait for the judge "
                "in a collective")
        if cfg.group_size < 2:
            bad("group_size must be >= 2 (advantages are normalised within a group)")
        if cfg.inner_iterations < 1:
            bad("inner_iterations (mu) must be >= 1")
        if cfg.advantage not in ("trajectory", "segments"):
            bad("advantage must be trajectory or segments")
        if cfg.advantage == "segments" and cfg.max_rounds != 2:
            bad("the segment-wise (released code) advantage is defined for max_rounds = 2")
        if cfg.logprob not in ("sampled", "code"):
            bad("logprob must be sampled or code")
        if cfg.decay not in ("cosine", "linear"):
            bad("decay must be cosine or linear")
        if not 0 < cfg.warmup_steps <= cfg.convert_steps:
            bad("need 0 < warmup_steps <= convert_steps")
