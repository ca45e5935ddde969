"""One training run's machinery, shared by the SFT and GRPO loops (trainer.py): accelerator, policy and its
sharding (DDP, FSDP2 or DeepSpeed ZeRO), optimizer, schedule, checkpoints, log, evaluation and the export."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import signal
from pathlib import Path

import torch

from ..errors import JanusR1Error
from ..generation.tasks import Janus
from ..model.compat import enable_checkpointing
from . import checkpoint as ck
from . import dcp_checkpoint as DC
from . import materialise as M
from . import sharding, zero
from . import tracking as TR
from .evaluation import Evaluator
from .policy import Policy, freeze_encoders, load_policy, make_accelerator, make_reference, param_groups

logger = logging.getLogger("janus_r1.training")


class Run:
    """What both loops share: accelerator, model, optimizer, scheduler, checkpoints, log, progress bar."""

    def __init__(self, cfg, schedule, reference: bool = False) -> None:
        self.cfg = cfg
        self.stage = type(cfg).__name__[:-6].lower()
        self.acc = acc = make_accelerator(cfg)
        self.out = Path(cfg.out)
        self.mark("start")
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        found = ck.find_checkpoint(self.out, getattr(cfg, "resume", "auto"), acc)  # verified (checksums.py)
        sharded_ck = found is not None and DC.is_sharded_checkpoint(found)
        self.sharded = cfg.sharding == "fsdp" and acc.num_processes > 1  # one process has nothing to shard
        # meta skeleton, sharded, each rank reading its rows (materialise.py); the old format loads in full
        lazy = self.sharded and cfg.load_sharded and (found is None or sharded_ck)
        # ZeRO-3 likewise: each rank keeps only its partition of each tensor (zero_load.py)
        lazy_zero = cfg.sharding == "zero3" and cfg.load_sharded and (found is None or sharded_ck)
        dtype = torch.bfloat16 if cfg.dtype == "bf16" else torch.float32
        self.model, self.vocab = (M.skeleton(cfg.model, dtype) if lazy or lazy_zero
                                  else load_policy(cfg.model, cfg.dtype, acc.device))
        freeze_encoders(self.model, tuple(cfg.freeze))
        self.mark("load")
        # the frozen reference: the initial weights (from the base files, never a copy of the policy)
        self.ref = None
        if reference:
            if cfg.load_sharded or cfg.ref_model:
                self.ref = M.build_reference(cfg, acc.device, acc.num_processes, cfg.load_sharded)
            else:  # the earlier design, kept for bench/train_memory.py's comparison: an unsharded cast copy
                ref = make_reference(cfg, self.model, acc.device)
                self.ref = M.Reference(ref, Policy(ref), False)
            self.mark("reference")
        self.step = 0
        if found is not None:
            ck.check_compatible(found, self.model, self.stage, _jsonable(cfg))
            if not sharded_ck:  # the gathered (old) format: every rank reads it, tensor by tensor
                self.step = int(ck.load_model_weights(found, self.model)["step"])
            else:
                self.step = int(json.loads((found / "state.json").read_text())["step"])
                if not (self.sharded or lazy_zero):  # replicas, ZeRO-2's module: the full weights on every rank
                    DC.load_weights(found, Policy(self.model), sharded=False)
        if cfg.gradient_checkpointing:
            enable_checkpointing(self.model)
        self.j = Janus(self.model, self.vocab)
        self.root = Policy(self.model)  # the unwrapped policy: state dicts are keyed by its parameter names
        if self.sharded:
            sharding.shard(self.root, cfg.mixed_precision, acc.device, cfg.fsdp_shard_group)
            if lazy and any(p.is_meta for p in self.model.parameters()):
                M.fill(self.root, cfg.model, dtype, acc.device, copy=not sharded_ck)
            if sharded_ck:  # each rank reads only the chunks of its shards
                DC.load_weights(found, self.root, sharded=True)
        frozen = None
        if lazy_zero:  # one full tensor at a time, partitioned at once; the masters are set from them
            from .zero_load import partition_from

            source = DC.iter_full(found, DC.W, 0) if sharded_ck else M.source_tensors(cfg.model)
            frozen = partition_from(self.model, source, torch.bfloat16 if cfg.mixed_precision == "bf16" else dtype,
                                    dtype, cfg.mixed_precision, cfg.grad_clip, acc.is_main_process,
                                    str(found or cfg.model), cfg.zero3_persist_numel)
            self.log_main(f"ZeRO-3: {found or cfg.model} loaded partitioned over {acc.num_processes} process(es)")
        self.mark("load")
        self.opt = torch.optim.AdamW(param_groups(self.model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas),
                                     eps=cfg.eps)
        self.zero = None  # DeepSpeed ZeRO (zero.py): it wraps the optimizer, the schedule drives its AdamW
        if cfg.sharding in zero.STAGES:
            self.zero = zero.Zero(self.root, self.opt, zero.STAGES[cfg.sharding], cfg.mixed_precision,
                                  cfg.grad_clip, acc.is_main_process, frozen, cfg.zero3_persist_numel,
                                  cfg.zero3_live_numel)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.zero.base_optimizer if self.zero else self.opt, schedule)
        if found is not None:
            ck.load_training_state(found, self.root, self.opt, self.sched, acc.process_index, self.zero, self.sharded)
            self.log_main(f"resumed from {found} at step {self.step}")
        if self.sharded:
            self.policy = self.root
        elif self.zero:
            self.policy = self.zero  # calls the engine's forward
        else:
            self.policy, self.opt = acc.prepare(self.root, self.opt)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.bar = None
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            from tqdm import tqdm

            self.bar = tqdm(total=cfg.max_steps, initial=self.step, desc=type(cfg).__name__[:-6].lower(),
                            disable=os.environ.get("JANUS_R1_NO_PROGRESS") == "1")
        self.saver = DC.Saver(self.out, acc, cfg.async_save) if cfg.checkpoint_format == "sharded" else None
        self.tracker = TR.Tracker(self.out, type(cfg).__name__[:-6].lower(), _jsonable(cfg), self.step,
                                  cfg.log_with, acc.is_main_process)
        self.evaluator = Evaluator(cfg.eval_prompts, cfg.eval_every, self.out, cfg.seed, cfg.max_steps)
        if self.evaluator.items and acc.is_main_process:
            self.evaluator.write_prompt_file()

    def mark(self, phase: str) -> None:
        """Memory trace for bench/train_memory.py (``JANUS_R1_MEMORY_TRACE=DIR``): this rank's peak RSS since the
        last mark, attributed to ``phase``, then the peak is reset. A no-op otherwise."""
        trace = os.environ.get("JANUS_R1_MEMORY_TRACE")
        if trace:
            from .memtrace import mark

            mark(Path(trace), self.acc.process_index, phase)

    def rollout_precision(self):
        """Rollouts in bf16 when the run computes in bf16: FSDP2 and DeepSpeed hand the decode loop bf16 weights
        already; one replica per process keeps fp32 masters, so its rollouts run under bf16 autocast instead of
        in fp32 (2x the weight traffic per decode step). ``mixed_precision: no`` keeps fp32 rollouts."""
        if self.cfg.mixed_precision == "bf16" and not (self.sharded or self.zero):
            return torch.autocast(self.acc.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def full_params(self):
        """Rollouts and evaluation run the engine on the plain modules: a sharded policy gathers its weights."""
        return self.zero.full_params() if self.zero else sharding.full_params(self.root)

    def log_main(self, msg: str) -> None:
        if self.acc.is_main_process:
            logger.warning(msg)

    def sync(self, last: bool):
        """Gradient all-reduce only on the last micro-batch of an update: DDP's ``no_sync``, HSDP's all-reduce
        between replicas (``sharding.set_gradient_sync``); FSDP reduce-scatters every backward so that no rank
        ever holds full-size gradients."""
        if self.sharded:
            sharding.set_gradient_sync(self.root, last)
        return contextlib.nullcontext() if last or self.sharded or self.zero else self.acc.no_sync(self.policy)

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        """One micro-batch's gradients; ``last`` marks the end of the update (DeepSpeed reduces then)."""
        if self.zero:
            self.zero.backward(loss, last)
        else:
            self.acc.backward(loss)

    def optimizer_step(self) -> float:
        if self.zero:
            return self.zero.step()
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
        if self.saver is not None:
            self.saver.poll()  # a background save that failed raises now, not at the next save
        self.mark("train")
        if self.step % self.cfg.save_every == 0 or last:
            self.save()
            self.mark("checkpoint")
            if os.environ.get("JANUS_R1_KILL_AFTER_STEP") == str(self.step):
                if self.saver is not None:
                    self.saver.wait()
                # every rank dies only after rank 0 has published: else the launcher may tear rank 0 down as soon
                # as another rank's kill is seen, before `latest` names this step (a flaky race in the tests)
                self.acc.wait_for_everyone()
                os.kill(os.getpid(), signal.SIGKILL)

    def save(self) -> None:
        """A checkpoint of the current step: sharded (every rank its share, in the background) or, with
        ``checkpoint_format: full``, the gathered safetensors of earlier versions (rank 0 writes everything)."""
        extra = {"stage": self.stage, "config": _jsonable(self.cfg)}
        if self.saver is None:
            ck.save_checkpoint(self.out, self.step, self.full_state(), self.sched, extra, self.acc)
            if self.acc.is_main_process:
                ck.prune(self.out, self.cfg.keep_checkpoints)
            return
        tensors, ometa = DC.flatten(*self.engine_state())
        sched = {k: v for k, v in self.sched.state_dict().items() if k != "lr_lambdas"}
        world = self.acc.num_processes
        step = self.step

        def small(tmp: Path) -> None:
            ck.write_rng(tmp, self.acc.process_index)
            if self.acc.is_main_process:
                ck.write_json(tmp / "state.json", {"step": step, "format": "sharded", "world": world,
                                                   "optimizer": ometa, "scheduler": sched, **extra})
                ck.write_model_files(self.model, self.vocab, tmp / "model")

        self.saver.save(step, tensors, small, lambda _: ck.prune(self.out, self.cfg.keep_checkpoints))

    def engine_state(self) -> tuple[dict, dict]:
        """This rank's share of the weights and optimizer state, as the engine holds it (no gathering)."""
        if self.zero:
            return self.zero.owned_state(self.acc.process_index, self.acc.num_processes)
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
                get_optimizer_state_dict,
            )

            opts = StateDictOptions()
            return get_model_state_dict(self.root, options=opts), get_optimizer_state_dict(self.root, self.opt, options=opts)
        return self.root.state_dict(), sharding.optimizer_state(self.root, self.opt)  # keyed like the others

    def full_state(self) -> tuple[dict, dict]:
        """The full weights and name-keyed optimizer state on the main process (collective when sharded)."""
        main = self.acc.is_main_process
        if self.zero:
            return self.zero.model_state(main), self.zero.optimizer_state(main)
        if self.sharded or main:  # replicas: only the main process copies its state
            return sharding.model_state(self.root), sharding.optimizer_state(self.root, self.opt)
        return {}, {}

    def evaluate(self) -> dict:
        """The held-out evaluation (evaluation.py) on the current weights, every process its share."""
        with self.full_params():
            return self.evaluator.run(self.model, self.vocab, self.step, self.acc.process_index,
                                      self.acc.num_processes, self.acc.gather)

    def finish(self) -> Path:
        """Export ``OUT/final`` and write ``OUT/replicas.json`` (each replica's weight digest, or the digest of
        the exported weights of a sharded run). With sharded checkpoints the export streams the last checkpoint
        (always written at the last step) tensor by tensor on the main process: nothing is gathered."""
        if self.saver is not None:
            self.saver.wait()
        self.acc.wait_for_everyone()
        target = self.out / "final"
        if self.saver is not None:
            from .export import export_checkpoint

            digest = 0
            if self.acc.is_main_process:
                _, digest = export_checkpoint(self.out, target)
            if self.sharded or self.zero:
                digests = torch.tensor([digest])
                replicas = {"sharding": self.cfg.sharding, "processes": self.acc.num_processes,
                            **({"mesh": sharding.mesh_of(self.root)} if self.sharded else {})}
            else:
                digests = self.acc.gather(torch.tensor([weights_digest(self.model.state_dict())],
                                                       device=self.acc.device))
                replicas = {"in_sync": len(set(digests.tolist())) == 1}
        elif self.sharded or self.zero:  # collective; the main process gets the full weights
            state = self.zero.model_state(self.acc.is_main_process) if self.zero else sharding.model_state(self.root)
            digests = torch.tensor([weights_digest(state) if self.acc.is_main_process else 0])
            replicas = {"sharding": self.cfg.sharding, "processes": self.acc.num_processes}
        else:
            digests = self.acc.gather(torch.tensor([weights_digest(self.model.state_dict())],
                                                   device=self.acc.device))
            replicas = {"in_sync": len(set(digests.tolist())) == 1}
        if self.acc.is_main_process:
            ck.write_json(self.out / "replicas.json", {"digests": [int(x) for x in digests.tolist()], **replicas})
            if self.bar is not None:
                self.bar.close()
            self.tracker.finish()
            if self.saver is None:
                model = (sharding.plain_model(self.model, state, copy=self.zero is not None)
                         if self.sharded or self.zero else self.model)
                ck.export_model(model, self.vocab, target)
        self.mark("export")
        self.acc.wait_for_everyone()
        return target

    def fail_together(self, error: BaseException | None, what: str = "the judge") -> None:
        """Raise on every rank if any rank's ``error`` is set (collective: one all-reduced flag per call, the
        messages gathered only when one is set). The failing rank raises its own exception; the others a
        :class:`JanusR1Error` with its message -- instead of waiting in the next collective for a rank that is
        gone until the process group's timeout kills them with a message that names no cause."""
        if self.acc.num_processes > 1:
            flag = self.acc.reduce(torch.tensor([float(error is not None)], device=self.acc.device), "sum")
            if float(flag.item()) > 0:
                from accelerate.utils import gather_object

                mine = None if error is None else str(error) if isinstance(error, JanusR1Error) else \
                    f"{type(error).__name__}: {error}"
                told = [(r, m) for r, m in enumerate(gather_object([mine])) if m is not None]
                if error is None:
                    rank, msg = told[0]
                    raise JanusR1Error(f"{what} failed on rank {rank}: {msg}")
        if error is not None:
            raise error

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Every process's rows of ``t``, concatenated, on the CPU (collective)."""
        return self.acc.gather(t.to(self.acc.device)).cpu()

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
