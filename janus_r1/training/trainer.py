"""The training loops (SFT and GRPO) on accelerate: one process or many, DDP / FSDP / DeepSpeed from its config.

Every random choice is drawn from a generator seeded by (seed, step, rank), so the data position is the step
number and a resumed run is bit-identical to an uninterrupted one. SigLIP and the VQ model are frozen (and kept
in eval mode); AdamW (0.9, 0.95), eps 1e-6, wd 0.05 without decay on biases and norms, grad clip 1.0.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
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
from . import sharding
from . import tracking as TR
from .config import GRPOConfig, SFTConfig
from .evaluation import Evaluator
from .policy import (  # noqa: F401  (re-exported: tests, bench)
    Policy,
    freeze_encoders,
    load_policy,
    make_accelerator,
    make_reference,
    param_groups,
    set_train,
)
from .schedules import GRPOSchedule, SFTSchedule
from .seeds import derive_seed

logger = logging.getLogger("janus_r1.training")




class Run:
    """What both loops share: accelerator, model, optimizer, scheduler, checkpoints, log, progress bar."""

    def __init__(self, cfg, schedule, reference: bool = False) -> None:
        self.cfg = cfg
        self.stage = type(cfg).__name__[:-6].lower()
        self.acc = acc = make_accelerator(cfg)
        self.out = Path(cfg.out)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.model, self.vocab = load_policy(cfg.model, cfg.dtype, acc.device)
        freeze_encoders(self.model)
        found = ck.find_checkpoint(self.out, getattr(cfg, "resume", "auto"))
        # the frozen reference: the initial weights, before the checkpoint's and before the checkpointing hook
        self.ref = make_reference(cfg, self.model, acc.device) if reference else None
        self.step = 0
        if found is not None:
            ck.check_compatible(found, self.model, self.stage, _jsonable(cfg))
            self.step = int(ck.load_model_weights(found, self.model)["step"])
        if cfg.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.j = Janus(self.model, self.vocab)
        self.root = Policy(self.model)  # the unwrapped policy: state dicts are keyed by its parameter names
        self.sharded = cfg.sharding == "fsdp" and acc.num_processes > 1  # one process has nothing to shard
        if self.sharded:
            sharding.shard(self.root, cfg.mixed_precision, acc.device)
        self.opt = torch.optim.AdamW(param_groups(self.model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas),
                                     eps=cfg.eps)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, schedule)
        if found is not None:
            ck.load_training_state(found, self.root, self.opt, self.sched, acc.process_index)
            self.log_main(f"resumed from {found} at step {self.step}")
        if self.sharded:
            self.policy = self.root
        else:
            self.policy, self.opt = acc.prepare(self.root, self.opt)
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

    def sync(self, last: bool):
        """Gradient all-reduce only on the last micro-batch of an update (DDP); FSDP reduce-scatters every
        backward so that no rank ever holds full-size gradients."""
        return contextlib.nullcontext() if last or self.sharded else self.acc.no_sync(self.policy)

    def optimizer_step(self) -> float:
        if self.sharded:
            norm = sharding.clip_grad_norm(self.trainable, self.cfg.grad_clip)
        else:
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
            ck.save_checkpoint(self.out, self.step, self.root, self.opt, self.sched,
                               {"stage": self.stage, "config": _jsonable(self.cfg)}, self.acc)
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
        """Export ``OUT/final`` (the full weights) and ``OUT/replicas.json``: each replica's weight digest, or
        the digest of the gathered weights of a sharded run."""
        self.acc.wait_for_everyone()
        target = self.out / "final"
        if self.sharded:
            state = sharding.model_state(self.root)  # collective; the main process gets the full weights
            digests = torch.tensor([weights_digest(state) if self.acc.is_main_process else 0])
            replicas = {"sharding": "fsdp", "processes": self.acc.num_processes}
        else:
            digests = self.acc.gather(torch.tensor([weights_digest(self.model.state_dict())],
                                                   device=self.acc.device))
            replicas = {"in_sync": len(set(digests.tolist())) == 1}
        if self.acc.is_main_process:
            ck.write_json(self.out / "replicas.json", {"digests": [int(x) for x in digests.tolist()], **replicas})
            if self.bar is not None:
                self.bar.close()
            self.tracker.finish()
            model = sharding.plain_model(self.model, state) if self.sharded else self.model
            ck.export_model(model, self.vocab, target)
        self.acc.wait_for_everyone()
        return target

    def mean_across(self, values: dict) -> dict:
        """Means over processes (NaN entries ignored)."""
        keys = sorted(values)
        t = torch.tensor([[values[k] for k in keys]], dtype=torch.float64, device=self.acc.device)
        t = self.acc.gather(t)
        return {k: float(torch.nanmean(t[:, i])) for i, k in enumerate(keys)}


def weights_digest(state: dict[str, torch.Tensor]) -> int:
    """A 62-bit digest of every tensor's bytes (equal digests = bit-identical replicas)."""
    h = hashlib.sha256()
    for name, p in sorted(state.items()):
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
            with run.sync(m == cfg.grad_accum - 1), acc.autocast():
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


def _prompt_batch(items: list, step: int, slot: int, slots: int, per: int, seed: int) -> list:
    """Prompts of (step, slot): an epoch-wise seeded permutation, cut into ``slots`` shares per step."""
    out = []
    for i in range(per):
        g = (step * slots + slot) * per + i
        epoch, pos = divmod(g, len(items))
        perm = list(range(len(items)))
        random.Random(derive_seed(seed, "epoch", epoch)).shuffle(perm)
        out.append(items[perm[pos]])
    return out


def _rollouts(run, cfg, items, reward) -> list:
    """This process's rollouts of a step: batch k is slot ``k * world + rank``, seeded by (step, slot), so a run
    on one process with ``rollout_batches = n`` draws what n processes draw with 1."""
    acc, j, world = run.acc, run.j, run.acc.num_processes
    trajs: list = []
    set_train(run.model, False)
    with torch.no_grad(), full_params(acc, run.policy):
        for k in range(cfg.rollout_batches):
            slot = k * world + acc.process_index
            batch = _prompt_batch(items, run.step, slot, world * cfg.rollout_batches, cfg.prompts_per_step, cfg.seed)
            seed = derive_seed(cfg.seed, "rollout", run.step, slot) % (2**62)
            if cfg.task == "edit":
                new = G.edit_rollout(j, load_images([b.input for b in batch]), [b.instruction for b in batch],
                                     cfg, seed)
            else:
                new = G.rollout(j, batch, cfg, seed)
            for t in new:
                t.group += k * cfg.prompts_per_step
            trajs += new
    with torch.no_grad():  # the judge (for `self`, the frozen reference) never builds a graph
        G.score_trajectories(trajs, reward, cfg, j.image_size)
    return trajs


def _grpo_update(run, cfg, trajs: list, ref_j: Janus) -> dict:
    """``inner_iterations`` updates on one rollout batch, each over micro-batches of trajectories whose gradients
    add up to the one-shot update's; old-policy log-probs come from the (sharded) policy's own forward."""
    acc, j = run.acc, run.j
    adv = G.advantages(trajs, cfg.group_size)
    segs = G.segments(trajs, cfg)
    chunks = G.micro_batches(segs, len(trajs), cfg.micro_batch)
    lp_old: list = [None] * len(segs)
    lp_ref: list = [None] * len(segs)
    with torch.no_grad(), acc.autocast():
        for c in chunks:
            sub = [segs[i] for i in c]
            old = run.policy(G.segment_logprobs, j, trajs, sub, cfg)
            for i, a, b in zip(c, old, G.segment_logprobs(ref_j.model, ref_j, trajs, sub, cfg)):
                lp_old[i], lp_ref[i] = a.detach().float(), b.float()
    coef = G.loss_coefficients(segs, lp_old)
    set_train(run.model, True)
    for _ in range(cfg.inner_iterations):
        loss_sum, sums = 0.0, {}
        for n, c in enumerate(chunks):
            sub = [segs[i] for i in c]
            with run.sync(n == len(chunks) - 1), acc.autocast():
                lp = run.policy(G.segment_logprobs, j, trajs, sub, cfg)
                loss, part = G.grpo_terms(lp, [lp_old[i] for i in c], [lp_ref[i] for i in c], sub, adv, cfg,
                                          [coef[i] for i in c])
                acc.backward(loss)
            loss_sum += float(loss.detach())
            sums = {k: sums.get(k, 0.0) + v for k, v in part.items()}
        norm = run.optimizer_step()
    return {"loss": loss_sum, "grad_norm": norm, **G.token_stats(sums)}


def train_grpo(cfg: GRPOConfig) -> Path:
    from .rewards import make_reward

    run = Run(cfg, GRPOSchedule(cfg.lr, cfg.warmup_steps, cfg.convert_lr, cfg.convert_steps, cfg.min_lr,
                                cfg.max_steps, cfg.decay), reference=True)
    ref_j = Janus(run.ref, run.vocab)
    questions = D.load_questions(cfg.prompts) if cfg.task == "t2i" and cfg.prompts else None  # paper B.2
    reward = make_reward(cfg.reward, ref_janus=ref_j, retries=cfg.reward_retries, timeout=cfg.reward_timeout,
                         device=str(run.acc.device), questions=questions)
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
        trajs = _rollouts(run, cfg, items, reward)
        stats = {**_grpo_update(run, cfg, trajs, ref_j), **G.rollout_stats(trajs, cfg), **TR.reward_spread(trajs)}
        run.end_step(run.mean_across(stats))
    return run.finish()


@contextlib.contextmanager
def full_params(acc, policy):
    """Rollouts and evaluation run the engine on the plain modules: a sharded policy gathers its weights."""
    with sharding.full_params(policy):
        yield
