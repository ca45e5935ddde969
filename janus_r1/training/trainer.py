"""The training loops (SFT and GRPO); ``run.Run`` holds what they share (accelerator, sharding, checkpoints).

Every random choice is drawn from a generator seeded by (seed, step, rank), so the data position is the step
number and a resumed run is bit-identical to an uninterrupted one. SigLIP and the VQ model are frozen (and kept
in eval mode); AdamW (0.9, 0.95), eps 1e-6, wd 0.05 without decay on biases and norms, grad clip 1.0.
"""

from __future__ import annotations

import contextlib
import logging
import random
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from ..errors import JanusR1Error
from ..generation.fused import borrowed_weights
from ..generation.tasks import Janus, load_images
from . import data as D
from . import grpo as G
from . import loader as L
from . import sft as S
from . import tracking as TR
from .config import GRPOConfig, SFTConfig
from .policy import (  # noqa: F401  (re-exported: tests, bench)
    Policy,
    freeze_encoders,
    load_policy,
    make_accelerator,
    make_reference,
    param_groups,
    set_train,
)
from .run import Run, weights_digest  # noqa: F401  (re-exported)
from .schedules import GRPOSchedule, SFTSchedule
from .seeds import derive_seed

logger = logging.getLogger("janus_r1.training")


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
                run.backward(loss / cfg.grad_accum, m == cfg.grad_accum - 1)
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


def batches_per_decode(model, cfg, budget: int | None) -> int:
    """How many of a process's ``rollout_batches`` one decode takes. Decoding is bandwidth-bound (every step reads
    every weight once, whatever the rows), so one decode of all the trajectories that fit costs about what one
    batch costs. ``rollout_rows`` > 0 caps the trajectories per decode (whole batches); 0 takes as many batches
    as ``budget`` bytes hold by the memory formula (``model.memory.memory_needed``: the KV cache of the longest
    introspective context, CFG rows counted, prefill and logits), all of them when ``budget`` is None (CPU)."""
    per = cfg.prompts_per_step * cfg.group_size
    if cfg.rollout_rows:
        return max(1, min(cfg.rollout_batches, cfg.rollout_rows // per))
    if budget is None:
        return cfg.rollout_batches
    from ..model.memory import memory_needed

    def need(n: int) -> int:
        if cfg.task == "edit":
            return memory_needed(model, "edit", n * per)
        return memory_needed(model, "generate", n * per, cfg.max_rounds, cfg.max_reflection, cfg.max_prompt_tokens)

    n = cfg.rollout_batches
    while n > 1 and need(n) > budget:
        n -= 1
    return n


def rollout_budget(run) -> int | None:
    """Bytes a rollout decode may use on this process's accelerator, computed once per run (inside the first
    rollout, the policy gathered) so every step groups its batches the same way: 90 % of the card minus what is
    allocated, minus the AdamW states a run that has not stepped yet will allocate (a resumed run holds them
    already: both compute the same budget). None on the CPU: no limit."""
    if getattr(run, "_rollout_budget", "unset") != "unset":
        return run._rollout_budget
    budget = None
    dev = run.acc.device
    if dev.type == "cuda":
        total = torch.cuda.get_device_properties(dev).total_memory
        used = torch.cuda.memory_allocated(dev)
        opt = getattr(run, "opt", None)
        if opt is not None and not getattr(opt, "state", None):
            used += 2 * sum(_local(p).numel() * 4 for p in run.trainable)
        budget = max(int(0.9 * total) - used, 0)
    run._rollout_budget = budget
    return budget


def _local(p: torch.Tensor) -> torch.Tensor:
    return p.to_local() if hasattr(p, "to_local") else p


def _rollouts(run, cfg, items) -> list:
    """This process's rollouts of a step: batch k is slot ``k * world + rank``, its prompts chosen by its slot.
    Batches are decoded together, as many as fit (:func:`batches_per_decode`); a decode is seeded by (step, its
    first slot). A decode of one batch draws exactly what that slot always drew, so a run on one process with
    ``rollout_batches = n`` and ``rollout_rows = prompts_per_step * group_size`` draws what n processes draw with
    1; merged decodes draw other, equally random samples. Unscored (see :func:`_score`)."""
    acc, j, world = run.acc, run.j, run.acc.num_processes
    per = cfg.prompts_per_step
    trajs: list = []
    set_train(run.model, False)
    with torch.no_grad(), run.full_params(), run.rollout_precision(), borrowed_weights(run.j.model):
        size = batches_per_decode(run.model, cfg, rollout_budget(run))
        if not getattr(run, "_told_decodes", False):
            run._told_decodes = True
            run.log_main(f"rollouts: {size * per * cfg.group_size} trajectories per decode, "
                         f"{-(-cfg.rollout_batches // size)} decode(s) per update")
        for k0 in range(0, cfg.rollout_batches, size):
            slots = [k * world + acc.process_index for k in range(k0, min(k0 + size, cfg.rollout_batches))]
            batch = [b for slot in slots
                     for b in _prompt_batch(items, run.step, slot, world * cfg.rollout_batches, per, cfg.seed)]
            seed = derive_seed(cfg.seed, "rollout", run.step, slots[0]) % (2**62)
            if cfg.task == "edit":
                new = G.edit_rollout(j, load_images([b.input for b in batch]), [b.instruction for b in batch],
                                     cfg, seed)
            else:
                new = G.rollout(j, batch, cfg, seed)
            for t in new:
                t.group += k0 * per
            trajs += new
    return trajs


def _score(run, cfg, trajs: list, reward) -> None:
    """Fill the trajectories' rewards; ``self`` gathers a sharded reference (collective: main thread only)."""
    gather = run.ref.full_params() if getattr(reward, "uses_reference", False) else contextlib.nullcontext()
    with torch.no_grad(), gather:  # the judge builds no graph
        G.score_trajectories(trajs, reward, cfg, run.j.image_size)


def _now(fn, *args) -> Future:
    """``fn(*args)`` run here and now, its result or exception kept like a thread's (:func:`_grpo_update` agrees
    on failures across ranks the same way for both)."""
    done: Future = Future()
    try:
        done.set_result(fn(*args))
    except Exception as e:  # noqa: BLE001  (re-raised by Run.fail_together, on every rank)
        done.set_exception(e)
    return done


def _overlaps(reward, cfg) -> bool:
    """A served judge (HTTP) scores in a thread while the old and reference log-probs are computed: they do not
    depend on the rewards. An in-process judge (``self``, ``vlm:``) shares the device (and, sharded, the
    collectives), so it scores first."""
    return cfg.overlap_rewards and getattr(reward, "remote", False)


def _grpo_update(run, cfg, trajs: list, ref_j: Janus, scored=None) -> dict:
    """``inner_iterations`` updates on one rollout batch, each over micro-batches of trajectories whose gradients
    add up to the one-shot update's; old-policy log-probs come from the (sharded) policy's own forward -- except
    with mu = 1, where the policy has not moved since the rollout: the ratio is 1 and the current log-probs,
    detached, are the old ones (one forward saved; the gradient is the same, tests/training/test_training_overlap).
    ``scored``: the future of the rewards being computed meanwhile (None: already scored)."""
    acc, j = run.acc, run.j
    segs = G.segments(trajs, cfg)
    chunks = G.micro_batches(segs, len(trajs), cfg.micro_batch)
    need_old = G.old_logprobs_needed(cfg)
    lp_old: list = [None] * len(segs)
    lp_ref: list = [None] * len(segs)
    with torch.no_grad(), acc.autocast():
        for c in chunks:
            sub = [segs[i] for i in c]
            if need_old:
                for i, a in zip(c, run.policy(G.segment_logprobs, j, trajs, sub, cfg)):
                    lp_old[i] = a.detach().float()
            for i, b in zip(c, run.ref.root(G.segment_logprobs, ref_j, trajs, sub, cfg)):
                lp_ref[i] = b.float()
    if scored is not None:  # every rank learns whether any judge failed before the update's collectives
        run.fail_together(scored.exception())
    adv = G.advantages(trajs, cfg.group_size)
    coef = G.loss_coefficients(segs, lp_ref, G.global_rows(segs, run.gather) if cfg.advantage == "segments" else None)
    set_train(run.model, True)
    for _ in range(cfg.inner_iterations):
        loss_sum, sums = 0.0, {}
        for n, c in enumerate(chunks):
            sub = [segs[i] for i in c]
            with run.sync(n == len(chunks) - 1), acc.autocast():
                lp = run.policy(G.segment_logprobs, j, trajs, sub, cfg)
                old = [lp_old[i] for i in c] if need_old else [x.detach() for x in lp]
                loss, part = G.grpo_terms(lp, old, [lp_ref[i] for i in c], sub, adv, cfg, [coef[i] for i in c])
                run.backward(loss, n == len(chunks) - 1)
            loss_sum += float(loss.detach())
            sums = {k: sums.get(k, 0.0) + v for k, v in part.items()}
        norm = run.optimizer_step()
    return {"loss": loss_sum, "grad_norm": norm, **G.token_stats(sums)}


def train_grpo(cfg: GRPOConfig) -> Path:
    from .rewards import make_reward

    run = Run(cfg, GRPOSchedule(cfg.lr, cfg.warmup_steps, cfg.convert_lr, cfg.convert_steps, cfg.min_lr,
                                cfg.max_steps, cfg.decay), reference=True)
    ref_j = Janus(run.ref.model, run.vocab)
    questions = D.load_questions(cfg.prompts) if cfg.task == "t2i" and cfg.prompts else None  # paper B.2
    reward = make_reward(cfg.reward, ref_janus=ref_j, retries=cfg.reward_retries, timeout=cfg.reward_timeout,
                         device=str(run.acc.device), questions=questions, budget=cfg.reward_budget_minutes * 60)
    if cfg.task == "edit" and cfg.reward.split(":")[0] == "self":
        raise JanusR1Error("editing GRPO needs a judge that scores edits: --reward vlm:PATH or http:URL")
    if not cfg.prompts:
        raise JanusR1Error("train-grpo needs --prompts")
    if cfg.task == "edit":
        items, report = D.load_edit_rows(cfg.prompts, run.vocab, need_output=False)
    else:
        items, report = D.load_prompts(cfg.prompts, run.vocab, "fail", cfg.max_prompt_tokens)
    run.log_main(f"prompts: {report.summary()}")
    pool = ThreadPoolExecutor(1, thread_name_prefix="janus-r1-reward") if _overlaps(reward, cfg) else None
    while run.step < cfg.max_steps:
        trajs = _rollouts(run, cfg, items)
        run.mark("rollout")
        scored = pool.submit(_score, run, cfg, trajs, reward) if pool else _now(_score, run, cfg, trajs, reward)
        stats = {**_grpo_update(run, cfg, trajs, ref_j, scored), **G.rollout_stats(trajs, cfg),
                 **TR.reward_spread(trajs, run.gather)}
        run.end_step(run.mean_across(stats))
    if pool is not None:
        pool.shutdown()
    return run.finish()

