"""DeepSpeed ZeRO-2 / ZeRO-3 for the trainer (``sharding: zero2 | zero3``), set up directly like FSDP2.

Why ``deepspeed.initialize`` and not accelerate's DeepSpeed plugin: on a machine without GPUs, accelerate 1.15
starts DeepSpeed's process group but reports one process, so CI could never test a sharded run with it. Here
accelerate owns the process group (gloo on CPUs, NCCL on GPUs) and DeepSpeed wraps the trainer's AdamW on it.

* ``mixed_precision: bf16`` is DeepSpeed's own bf16 mode: the module computes in bf16 and the optimizer keeps fp32
  master weights and AdamW states, partitioned over the processes (ZeRO-2: states and gradients; ZeRO-3: the
  weights too, gathered module by module as each runs).
* Every differentiable call goes through the engine's forward (``engine(fn, ...)``, :class:`policy.Policy`).
  ZeRO-3 needs every rank to run the same modules in the same order: within ``sequences.every_module`` each
  loss runs every module exactly once per call (``sequences.Pass``), and a list of per-segment results (a
  different number on each rank) crosses the engine as one tensor (:class:`_Flat`).
  Rollouts and evaluation run the engine's decode loop on the plain modules: under ZeRO-3 :func:`full_params`
  gathers every weight once and lifts DeepSpeed's per-module hooks while the (non-collective) loop runs.
* Checkpoints never use DeepSpeed's own files (``torch.save`` pickles that it loads with ``weights_only=False``,
  tied to the number of processes). DeepSpeed's public fragment API (``deepspeed.utils.safe_get_full_fp32_param``,
  ``safe_get_full_optimizer_state`` and their setters) reads and writes the full fp32 master weights and AdamW
  states, keyed by parameter name: the checkpoint every other engine writes, so a run resumes on any number of
  processes and under any engine.
* The frozen SigLIP / VQ weights (and buffers) have no fp32 master: DeepSpeed's bf16 mode rounds them in the
  module, so their original values are kept on the CPU of the main process for checkpoints and the export.
"""

from __future__ import annotations

import contextlib
import os

import torch

from ..errors import JanusR1Error
from .sequences import every_module

STAGES = {"zero2": 2, "zero3": 3}


def _deepspeed():
    try:
        import deepspeed
    except ImportError as e:
        raise JanusR1Error("sharding zero2 / zero3 needs DeepSpeed: pip install deepspeed (or use sharding: "
                           "fsdp, which needs nothing more)") from e
    return deepspeed


def ds_config(stage: int, mixed_precision: str, grad_clip: float, persist_numel: int = 100_000,
              live_numel: int = 1_000_000_000) -> dict:
    """One micro-batch per ``backward``; the trainer marks the accumulation boundary itself. ZeRO-3 gathers each
    module when it runs: weights up to ``persist_numel`` elements stay gathered, and at most ``live_numel``
    elements are kept gathered ahead of use (prefetch) or for a reuse soon after."""
    zero: dict = {"stage": stage}
    if stage == 3:
        zero.update(stage3_param_persistence_threshold=persist_numel, stage3_max_live_parameters=live_numel,
                    stage3_max_reuse_distance=live_numel,
                    stage3_prefetch_bucket_size=min(50_000_000, live_numel))
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": grad_clip,
        "bf16": {"enabled": mixed_precision == "bf16"},
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,  # the trainer's torch AdamW (no fused CPU/CUDA Adam build needed)
        "steps_per_print": 2**62,
        "wall_clock_breakdown": False,
    }


class _Flat:
    """``fn`` with a list of tensors returned as one flat tensor: DeepSpeed hooks every output tensor of the
    root module for its backward, and the number of per-segment log-probs differs between ranks."""

    def __init__(self, fn) -> None:
        self.fn = fn
        self.shapes: list[torch.Size] | None = None

    def __call__(self, model, *args, **kwargs):
        out = self.fn(model, *args, **kwargs)
        if isinstance(out, list) and out and all(torch.is_tensor(t) for t in out):
            self.shapes = [t.shape for t in out]
            return torch.cat([t.reshape(-1) for t in out])
        return out

    def split(self, out):
        if self.shapes is None:
            return out
        return [t.reshape(s) for t, s in zip(out.split([s.numel() for s in self.shapes]), self.shapes)]


class Zero:
    """A DeepSpeed engine around the policy plus what checkpoints need: parameter names, optimizer groups by
    name, and the frozen tensors' original values."""

    def __init__(self, policy: torch.nn.Module, optimizer: torch.optim.Optimizer, stage: int,
                 mixed_precision: str, grad_clip: float, main: bool, frozen: dict | None,
                 persist_numel: int, live_numel: int) -> None:
        deepspeed = _deepspeed()
        names = {p: n for n, p in policy.named_parameters()}
        self.groups = [{"params": [names[p] for p in g["params"]], "weight_decay": g["weight_decay"]}
                       for g in optimizer.param_groups]
        trainable = {n for g in self.groups for n in g["params"]}
        # frozen parameters and buffers keep their exact values for the export (bf16 mode rounds them); a policy
        # partitioned while loading (zero_load.py) hands them over, keyed like ``policy.model``
        if frozen is not None:
            self.frozen = {"model." + k: v for k, v in frozen.items()} if main else {}
        else:
            self.frozen = {k: v.detach().cpu().clone() for k, v in policy.state_dict().items()
                           if k not in trainable} if main else {}
        buffers = {k: b.detach().clone() for k, b in policy.named_buffers()}
        self.stage = stage
        _one_process_group()
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=policy, optimizer=optimizer, config=ds_config(stage, mixed_precision, grad_clip, persist_numel,
                                                                      live_numel),
            dist_init_required=False)
        for k, b in policy.named_buffers():  # bf16 mode casts buffers too (the rotary frequencies)
            b.data = buffers[k].to(b.device)
        self.params = dict(policy.named_parameters())
        self.trainable = [n for n in self.params if n in trainable]

    def __call__(self, fn, *args, **kwargs):
        """``fn(model, ...)`` through the engine's forward (``Policy``). Under ZeRO-3 every module runs once per
        call on every rank (``sequences.every_module``) and a list result crosses the engine as one tensor."""
        if self.stage != 3:
            return self.engine(fn, *args, **kwargs)
        flat = _Flat(fn)
        with every_module():
            return flat.split(self.engine(flat, *args, **kwargs))

    @property
    def base_optimizer(self) -> torch.optim.Optimizer:
        """The torch AdamW inside ZeRO's optimizer: the learning-rate schedule sets its groups' ``lr``."""
        return self.optimizer.optimizer

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        """Gradients of one micro-batch; the optimizer steps only after the ``last`` one."""
        self.engine.set_gradient_accumulation_boundary(last)
        self.engine.backward(loss)

    def step(self) -> float:
        """Clip to ``gradient_clipping``, step, zero the gradients; returns the global norm before clipping."""
        self.engine.set_gradient_accumulation_boundary(True)
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    @contextlib.contextmanager
    def full_params(self):
        """ZeRO-3: every weight gathered and the per-module fetch/release hooks lifted while the engine's decode
        loop runs the plain modules (different lengths on each rank, so no collective may happen inside)."""
        if self.stage != 3:
            yield
            return
        deepspeed = _deepspeed()
        offload = getattr(self.optimizer, "parameter_offload", None)
        if not (hasattr(offload, "_remove_module_hooks") and hasattr(offload, "setup_zero_stage3_hooks")):
            raise JanusR1Error(f"DeepSpeed {deepspeed.__version__}: ZeRO-3 no longer lets zero.py lift its module "
                               "hooks for rollouts; use sharding: zero2 or fsdp (same checkpoints)")
        with deepspeed.zero.GatheredParameters(list(self.params.values()), modifier_rank=None):
            offload._remove_module_hooks()
            try:
                yield
            finally:
                offload.setup_zero_stage3_hooks()

    def model_state(self, main: bool) -> dict[str, torch.Tensor]:
        """Full fp32 weights of ``policy.model`` keyed like its ``state_dict`` (collective; ``{}`` off the main
        process)."""
        from deepspeed.utils import safe_get_full_fp32_param

        out = {}
        for n in self.trainable:
            full = safe_get_full_fp32_param(self.params[n])  # collective: every rank asks for every weight
            if main:
                out[n] = full.detach().cpu().clone()
        if not main:
            return {}
        out.update(self.frozen)
        return {k.removeprefix("model."): v for k, v in out.items()}

    def optimizer_state(self, main: bool) -> dict:
        """``{"state": {name: {exp_avg, exp_avg_sq, step}}, "param_groups": [...]}`` like
        :func:`sharding.optimizer_state` (collective; ``{}`` off the main process)."""
        from deepspeed.utils import safe_get_full_optimizer_state

        steps = [st["step"] for st in self.base_optimizer.state.values() if "step" in st]
        state = {}
        if steps:
            self._link_states()
            step = steps[0].detach().cpu().clone() if torch.is_tensor(steps[0]) else steps[0]
            for n in self.trainable:
                st = {k: safe_get_full_optimizer_state(self.params[n], k) for k in ("exp_avg", "exp_avg_sq")}
                if main:
                    state[n] = {**{k: v.detach().cpu().clone() for k, v in st.items()},
                                "step": step.clone() if torch.is_tensor(step) else step}
        if not main:
            return {}
        hyper = {k: v for k, v in self.base_optimizer.param_groups[0].items() if k != "params"}
        return {"state": state, "param_groups": [{**hyper, **g} for g in self.groups]}

    def owned_state(self, rank: int, world: int) -> tuple[dict, dict]:
        """This rank's share of the fp32 weights and AdamW states for a sharded checkpoint (dcp_checkpoint.py):
        each weight is gathered once (collective, one at a time) and kept only by its owner, so no rank ever
        holds the whole state. Frozen weights are written by the main process, which kept their exact values."""
        from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

        from .dcp_checkpoint import owners

        own = owners({n: self.params[n].ds_numel if hasattr(self.params[n], "ds_numel") else self.params[n].numel()
                      for n in self.trainable}, world)
        steps = [st["step"] for st in self.base_optimizer.state.values() if "step" in st]
        if steps:
            self._link_states()
        model, state = {}, {}
        for n in self.trainable:
            full = safe_get_full_fp32_param(self.params[n])
            if own[n] == rank:
                model[n] = full.detach().cpu().clone()
            if not steps:
                continue
            st = {k: safe_get_full_optimizer_state(self.params[n], k) for k in ("exp_avg", "exp_avg_sq")}
            if own[n] == rank:
                step = steps[0].detach().cpu().clone() if torch.is_tensor(steps[0]) else steps[0]
                state[n] = {**{k: v.detach().cpu().clone() for k, v in st.items()}, "step": step}
        if rank == 0:
            model.update(self.frozen)
        hyper = {k: v for k, v in self.base_optimizer.param_groups[0].items() if k != "params"}
        return model, {"state": state, "param_groups": [{**hyper, **g} for g in self.groups]}

    def _flat_masters(self) -> list[torch.Tensor]:
        """This rank's flat fp32 partitions, the tensors ZeRO's AdamW keys its states by."""
        name = "single_partition_of_fp32_groups" if self.stage == 2 else "fp32_partitioned_groups_flat"
        flats = getattr(self.optimizer, name, None)
        if flats is None:
            raise JanusR1Error(f"DeepSpeed {_deepspeed().__version__}: ZeRO-{self.stage} keeps no {name}; zero.py "
                               "cannot restore optimizer states with it: resume with sharding: fsdp or none")
        return list(flats)

    def _link_states(self) -> None:
        """ZeRO-2 points each weight's fragment at AdamW's states after its first step, but only the states that
        exist by then: AdamW creates them group by group, so the second group (no weight decay) is never linked
        and ``safe_get_full_optimizer_state`` fails for it. Link them again once all exist."""
        if self.stage != 2:
            return
        link = getattr(self.optimizer, "_lazy_init_hp_params_optimizer_state", None)
        if link is None or not hasattr(self.optimizer, "_hp_optimizer_states_linked"):
            raise JanusR1Error(f"DeepSpeed {_deepspeed().__version__}: its ZeRO-2 optimizer no longer links AdamW "
                               "states the way zero.py expects; use sharding: zero3 or fsdp (same checkpoints)")
        self.optimizer._hp_optimizer_states_linked = False
        link()

    def load(self, weights: dict[str, torch.Tensor], named: dict) -> None:
        """Set the fp32 masters to a checkpoint's exact weights and AdamW states to its states (each rank keeps its
        partition). The bf16 module weights were loaded before :class:`Zero` was built."""
        from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

        for n in self.trainable:
            safe_set_full_fp32_param(self.params[n], weights[n.removeprefix("model.")].to(torch.float32))
        if not named["state"]:
            return
        step = next(iter(named["state"].values()))["step"]
        for flat in self._flat_masters():  # AdamW creates its states at its first step: create them now
            self.base_optimizer.state[flat] = {"step": torch.tensor(float(_load(step))),
                                               "exp_avg": torch.zeros_like(flat), "exp_avg_sq": torch.zeros_like(flat)}
        self._link_states()
        for n in self.trainable:
            for k in ("exp_avg", "exp_avg_sq"):
                safe_set_full_optimizer_state(self.params[n], _load(named["state"][n][k]).to(torch.float32), k)


def _one_process_group() -> None:
    """DeepSpeed runs on a process group; a plain one-process launch gets a single-member one."""
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        os.environ.setdefault("LOCAL_RANK", "0")  # what torchrun would set; DeepSpeed asserts it


def _load(v):
    return v.load() if hasattr(v, "load") else v  # checkpoint.Deferred
