"""The training loops (SFT and GRPO) on accelerate: one process or many, DDP / FSDP / DeepSpeed from its config.

Every random choice is drawn from a generator seeded by (seed, step, rank), so the data position is the step
number and a resumed run is bit-identical to an uninterrupted one. SigLIP and the VQ model are frozen (and kept
in eval mode); AdamW (0.9, 0.95), eps 1e-6, wd 0.05 without decay on biases and norms, grad clip 1.0.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
import os
import random
import signal
from pathlib import Path

import torch

from ..errors import JanusR1Error
from ..generation.tasks import Janus, load_images
from . import checkpoint as ck
from . import data as D
from . import grpo as G
from . import loader as L
from . import sft as S
from . import tracking as TR
from .config import GRPOConfig, SFTConfig
from .evaluation import Evaluator

logger = logging.getLogger("janus_r1.training")


class Policy(torch.nn.Module):
    """Routes a loss function through ``forward`` so DDP/FSDP/DeepSpeed see every differentiable call."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, fn, *args, **kwargs):
        return fn(self.model, *args, **kwargs)


def set_train(model, flag: bool):
    """Train/eval mode for the trainable parts; SigLIP and the VQ model always stay in eval mode."""
    model.train(flag)
    model.model.vision_model.eval()
    model.model.vqmodel.eval()
    return model


def freeze_encoders(model) -> None:
    for m in (model.model.vision_model, model.model.vqmodel):
        m.requires_grad_(False)


def param_groups(model, weight_decay: float) -> list[dict]:
    """No weight decay on biases and norm weights (every 1-D parameter), decay on the rest."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class SFTSchedule:
    """LR factor: linear warm-up from ``start/peak`` to 1 over ``warmup`` steps, cosine to ``min/peak`` at ``total``."""

    def __init__(self, peak: float, warmup: int, total: int, start: float = 0.0, minimum: float = 0.0) -> None:
        self.peak, self.warmup, self.total, self.start, self.minimum = peak, warmup, total, start, minimum

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (self.start + (self.peak - self.start) * step / self.warmup) / self.peak
        span = max(self.total - self.warmup, 1)
        t = min((step - self.warmup) / span, 1.0)
        return (self.minimum + (self.peak - self.minimum) * 0.5 * (1 + math.cos(math.pi * t))) / self.peak


class GRPOSchedule:
    """Spec C.7 / Table 5: 0 -> peak over ``warmup``, linear to ``convert`` at ``convert_steps``, then linear
    (code) or cosine (paper) to ``minimum`` at ``total``."""

    def __init__(self, peak, warmup, convert, convert_steps, minimum, total, decay="cosine") -> None:
        self.peak, self.warmup, self.convert, self.convert_steps = peak, warmup, convert, convert_steps
        self.minimum, self.total, self.decay = minimum, total, decay

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            lr = self.peak * step / self.warmup
        elif step < self.convert_steps:
            lr = self.peak + (self.convert - self.peak) * (step - self.warmup) / (self.convert_steps - self.warmup)
        else:
            t = min((step - self.convert_steps) / max(self.total - self.convert_steps, 1), 1.0)
            w = t if self.decay == "linear" else 0.5 * (1 - math.cos(math.pi * t))
            lr = self.convert + (self.minimum - self.convert) * w
        return lr / self.peak


def derive_seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 2


def make_accelerator(cfg):
    from accelerate import Accelerator, DistributedDataParallelKwargs

    # A CPU-only machine launched with several processes (torchrun / `accelerate launch --multi_gpu`) trains on
    # gloo; accelerate's own `--cpu` launcher needs mpirun for that.
    cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    return Accelerator(mixed_precision=cfg.mixed_precision, cpu=cpu,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def load_policy(name: str, dtype: str, device):
    """``tiny-random`` (the micro random model, seed 0) or any directory / hub id the engine loader opens."""
    from ..model.vocabulary import Vocabulary

    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    if name == "tiny-random":
        from ..model.tiny import build_tiny_model

        model, tok = build_tiny_model("micro", seed=0)
        return model.to(device=device, dtype=torch_dtype), Vocabulary(tok)
    from ..model.loading import load_model

    return load_model(name, device=str(device), dtype=dtype)


class Run:
    """What both loops share: accelerator, model, optimizer, scheduler, checkpoints, log, progress bar."""

    def __init__(self, cfg, schedule) -> None:
        self.cfg = cfg
        self.acc = acc = make_accelerator(cfg)
        self.out = Path(cfg.out)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.model, self.vocab = load_policy(cfg.model, cfg.dtype, acc.device)
        freeze_encoders(self.model)
        if cfg.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.j = Janus(self.model, self.vocab)
        self.opt = torch.optim.AdamW(param_groups(self.model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas),
                                     eps=cfg.eps)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, schedule)
        self.step = 0
        found = ck.find_checkpoint(self.out, getattr(cfg, "resume", "auto"))
        if found is not None:
            state = ck.load_checkpoint(found, self.model, self.opt, self.sched, acc.process_index)
            self.step = int(state["step"])
            self.log_main(f"resumed from {found} at step {self.step}")
        self.policy, self.opt = acc.prepare(Policy(self.model), self.opt)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.bar = None
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            from tqdm import tqdm

            self.bar = tqdm(total=cfg.max_steps, initial=self.step, desc=type(cfg).__name__[:-6].lower(),
                            disable=os.environ.get("JANUS_R1_NO_PROGRESS") == "1")
        self.tracker = TR.Tracker(self.out, type(cfg).__name__[:-6].lower(), _jsonable(cfg), self.step,
                                  cfg.log_with, acc.is_main_process)
        self.evaluator = Evaluator(cfg.eval_prompts, cfg.eval_every, self.out, cfg.seed, cfg.max_steps)
        if self.evaluator.items and acc.is_main_process:
            self.evaluator.write_prompt_file()

    def log_main(self, msg: str) -> None:
        if self.acc.is_main_process:
            logger.warning(msg)

    def optimizer_step(self) -> float:
        norm = self.acc.clip_grad_norm_(self.trainable, self.cfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(norm) if norm is not None else float("nan")

    def end_step(self, record: dict) -> None:
        """Scheduler, log line, progress bar, checkpoint; honours JANUS_R1_KILL_AFTER_STEP (tests)."""
        record = {"step": self.step + 1, "lr": self.sched.get_last_lr()[0], **record}
        self.sched.step()
        self.step += 1
        if self.evaluator.due(self.step):
            record.update(self.evaluate())
        self.tracker.log(record)
        if self.acc.is_main_process:
            if self.bar is not None:
                self.bar.update(1)
                self.bar.set_postfix({k: round(v, 4) for k, v in record.items()
                                      if isinstance(v, float) and k in ("loss", "reward", "kl", "aha_rate")})
        last = self.step == self.cfg.max_steps
        if self.step % self.cfg.save_every == 0 or last:
            ck.save_checkpoint(self.out, self.step, self.model, self.opt, self.sched,
                               {"config": _jsonable(self.cfg)}, self.acc)
            if self.acc.is_main_process:
                ck.prune(self.out, self.cfg.keep_checkpoints)
            if os.environ.get("JANUS_R1_KILL_AFTER_STEP") == str(self.step):
                os.kill(os.getpid(), signal.SIGKILL)

    def evaluate(self) -> dict:
        """The held-out evaluation (evaluation.py) on the current weights, every process its share."""
        with full_params(self.acc, self.policy):
            return self.evaluator.run(self.model, self.vocab, self.step, self.acc.process_index,
                                      self.acc.num_processes, self.acc.gather)

    def finish(self) -> Path:
        """Export ``OUT/final`` and record each replica's weight digest in ``OUT/replicas.json``."""
        self.acc.wait_for_everyone()
        digests = self.acc.gather(torch.tensor([weights_digest(self.model)], device=self.acc.device))
        target = self.out / "final"
        if self.acc.is_main_process:
            ck.write_json(self.out / "replicas.json", {"digests": [int(x) for x in digests.tolist()],
                                                       "in_sync": len(set(digests.tolist())) == 1})
        if self.acc.is_main_process:
            if self.bar is not None:
                self.bar.close()
            self.tracker.finish()
            ck.export_model(self.acc.unwrap_model(self.policy).model, self.vocab, target)
        self.acc.wait_for_everyone()
        return target

    def mean_across(self, values: dict) -> dict:
        """Means over processes (NaN entries ignored)."""
        keys = sorted(values)
        t = torch.tensor([[values[k] for k in keys]], dtype=torch.float64, device=self.acc.device)
        t = self.acc.gather(t)
        return {k: float(torch.nanmean(t[:, i])) for i, k in enumerate(keys)}


def weights_digest(model) -> int:
    """A 62-bit digest of every parameter's bytes (equal digests = bit-identical replicas)."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little") >> 2


def _jsonable(cfg) -> dict:
    import dataclasses

    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}


def _read_sft_data(cfg: SFTConfig, vocab):
    if not cfg.data:
        raise JanusR1Error("train-sft needs --data (label JSONL files)")
    if cfg.task == "edit":
        rows, report = D.load_edit_rows(cfg.data, vocab, cfg.image_root, cfg.on_bad_row, cfg.check_images)
        if not rows:
            raise JanusR1Error(f"no usable editing row in {cfg.data} ({report.summary()})")
        return rows, report
    recs, report = D.load_t2i_labels(cfg.data, vocab, cfg.image_root, cfg.on_bad_row, cfg.check_images,
                                     cfg.max_prompt_tokens)
    return S.Pools(recs, cfg, report), report


def train_sft(cfg: SFTConfig) -> Path:
    run = Run(cfg, SFTSchedule(cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.warmup_start_lr, cfg.min_lr))
    acc, j = run.acc, run.j
    pools, report = _read_sft_data(cfg, run.vocab)
    run.log_main(f"data: {report.summary()}" + "".join(f"\n  {m}" for m in report.messages[:5]))
    mix = pools.mix() if cfg.task == "t2i" else None
    cache = S.ImageCache(j)
    set_train(run.model, True)
    # each step's draws are seeded by (seed, step, micro-step, rank); workers open the images ahead (loader.py)
    stream = L.sft_stream(pools, cfg, acc.process_index, run.step, mix, cfg.num_workers, cfg.prefetch,
                          world=acc.num_processes)
    bad_images = 0
    while run.step < cfg.max_steps:
        losses, tasks_used = [], []
        for m, mb in enumerate(next(stream)):
            task, samples, cache.ready = mb.task, mb.samples, mb.images
            bad_images += len(mb.bad)
            for msg in mb.bad:
                logger.warning(f"skipped a bad image (rank {acc.process_index}): {msg}")
            sync = acc.no_sync(run.policy) if m < cfg.grad_accum - 1 else contextlib.nullcontext()
            with sync, acc.autocast():
                loss = run.policy(S.sft_loss, j, samples, cache, cfg.max_answer_tokens, cfg.yes_no_weight,
                                  cfg.yes_no_weight_mode)
                acc.backward(loss / cfg.grad_accum)
            losses.append(float(loss.detach()))
            tasks_used.append(task)
        norm = run.optimizer_step()
        stats = run.mean_across({"loss": sum(losses) / len(losses), "grad_norm": norm,
                                 **TR.task_losses(losses, tasks_used)})  # tasks are the same on every rank
        run.end_step({**stats, "task": ",".join(tasks_used), "bad_images": bad_images})
    return run.finish()


def _prompt_batch(items: list, step: int, rank: int, world: int, per: int, seed: int) -> list:
    """Prompts of (step, rank): an epoch-wise seeded permutation, sharded across ranks."""
    out = []
    for i in range(per):
        g = (step * world + rank) * per + i
        epoch, pos = divmod(g, len(items))
        perm = list(range(len(items)))
        random.Random(derive_seed(seed, "epoch", epoch)).shuffle(perm)
        out.append(items[perm[pos]])
    return out


def train_grpo(cfg: GRPOConfig) -> Path:
    from .rewards import make_reward

    run = Run(cfg, GRPOSchedule(cfg.lr, cfg.warmup_steps, cfg.convert_lr, cfg.convert_steps, cfg.min_lr,
                                cfg.max_steps, cfg.decay))
    acc, j, model = run.acc, run.j, run.model
    if cfg.ref_model:
        ref, _ = load_policy(cfg.ref_model, cfg.dtype, acc.device)
    else:  # the initial policy (or, when resuming, the initial weights are gone: require --ref-model for parity)
        ref = copy.deepcopy(model) if run.step == 0 else None
        if ref is None:
            ref = load_policy(cfg.model, cfg.dtype, acc.device)[0]
    ref.requires_grad_(False).eval()
    ref_j = Janus(ref, run.vocab)
    questions = D.load_questions(cfg.prompts) if cfg.task == "t2i" and cfg.prompts else None  # paper B.2
    reward = make_reward(cfg.reward, ref_janus=ref_j, retries=cfg.reward_retries, timeout=cfg.reward_timeout,
                         device=str(acc.device), questions=questions)
    if cfg.task == "edit" and cfg.reward.split(":")[0] == "self":
        raise JanusR1Error("editing GRPO needs a judge that scores edits: --reward vlm:PATH or http:URL")
    if not cfg.prompts:
        raise JanusR1Error("train-grpo needs --prompts")
    if cfg.task == "edit":
        items, report = D.load_edit_rows(cfg.prompts, run.vocab, need_output=False)
    else:
        items, report = D.load_prompts(cfg.prompts, run.vocab, "fail", cfg.max_prompt_tokens)
    run.log_main(f"prompts: {report.summary()}")
    while run.step < cfg.max_steps:
        batch = _prompt_batch(items, run.step, acc.process_index, acc.num_processes, cfg.prompts_per_step, cfg.seed)
        seed = derive_seed(cfg.seed, "rollout", run.step, acc.process_index) % (2**62)
        set_train(model, False)
        with full_params(acc, run.policy):
            if cfg.task == "edit":
                trajs = G.edit_rollout(j, load_images([b.input for b in batch]), [b.instruction for b in batch],
                                       cfg, seed)
            else:
                trajs = G.rollout(j, batch, cfg, seed)
        G.score_trajectories(trajs, reward, cfg, j.image_size)
        adv = G.advantages(trajs, cfg.group_size)
        segs = G.segments(trajs, cfg)
        with torch.no_grad(), acc.autocast():
            lp_old = [x.detach() for x in G.segment_logprobs(model, j, trajs, segs, cfg)]
            lp_ref = G.segment_logprobs(ref, ref_j, trajs, segs, cfg)
        set_train(model, True)
        losses, norms, extra = [], [], {}
        for _ in range(cfg.inner_iterations):
            with acc.autocast():
                lp = run.policy(G.segment_logprobs, j, trajs, segs, cfg)
                loss, extra = G.grpo_loss(lp, lp_old, lp_ref, segs, adv, cfg)
            acc.backward(loss)
            norms.append(run.optimizer_step())
            losses.append(float(loss.detach()))
        stats = {"loss": losses[-1], "grad_norm": norms[-1], **extra, **G.rollout_stats(trajs, cfg),
                 **TR.reward_spread(trajs)}
        run.end_step(run.mean_across(stats))
    return run.finish()


@contextlib.contextmanager
def full_params(acc, policy):
    """Rollouts run the engine on the plain module; FSDP must gather its shards for that."""
    from accelerate.utils import DistributedType

    if acc.distributed_type == DistributedType.FSDP:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        with FSDP.summon_full_params(policy, writeback=False):
            yield
    else:
        yield
