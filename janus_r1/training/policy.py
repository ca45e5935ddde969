"""The trained policy and what surrounds it: loading, frozen encoders, optimizer groups, the accelerator, the
frozen reference model, and the wrapper that routes every differentiable call through one module's forward."""

from __future__ import annotations

import os

import torch

from ..errors import JanusR1Error


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


def freeze_encoders(model, parts: tuple[str, ...] = ()) -> None:
    """SigLIP and the VQ model never train; ``parts`` (config ``freeze``) names more of ``model.model``."""
    for m in (model.model.vision_model, model.model.vqmodel, *(getattr(model.model, p) for p in parts)):
        m.requires_grad_(False)


def param_groups(model, weight_decay: float) -> list[dict]:
    """No weight decay on biases and norm weights (every 1-D parameter), decay on the rest. A ZeRO-3 parameter
    partitioned while loading (zero_load.py) holds an empty tensor: its shape is ``ds_shape``."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if len(getattr(p, "ds_shape", p.shape)) < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_accelerator(cfg):
    from datetime import timedelta

    from accelerate import Accelerator, DistributedDataParallelKwargs, InitProcessGroupKwargs

    # A CPU-only machine launched with several processes (torchrun / `accelerate launch --multi_gpu`) trains on
    # gloo; accelerate's own `--cpu` launcher needs mpirun for that.
    from accelerate.utils import DistributedType

    cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    acc = Accelerator(mixed_precision=cfg.mixed_precision, cpu=cpu,
                      kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True),
                                       InitProcessGroupKwargs(timeout=timedelta(minutes=cfg.collective_timeout_minutes))])
    if acc.distributed_type == DistributedType.DEEPSPEED:
        raise JanusR1Error("accelerate's DeepSpeed plugin would wrap the model a second time: launch with "
                           "recipes/accelerate_zero2.yaml or accelerate_zero3.yaml (plain processes) and set "
                           "sharding: zero2 or zero3 in the recipe; the trainer sets DeepSpeed up itself")
    if acc.distributed_type == DistributedType.FSDP:
        raise JanusR1Error("accelerate's FSDP plugin would wrap the model a second time: launch with "
                           "recipes/accelerate_fsdp.yaml (plain processes) and set sharding: fsdp in the recipe")
    return acc


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


def make_reference(cfg, model, device):
    """An unsharded frozen reference holding ``model``'s current weights (tests, bench/train_step.py, and the
    trainer with ``load_sharded: false``): bf16 when the run computes in bf16, never with the policy's
    checkpointing hook, without grads, in eval mode. Built as an empty skeleton filled tensor by tensor with the
    cast values -- never a deepcopy of the fp32 policy (a transient of the full fp32 model); the trainer itself
    builds it from the base files (``materialise.build_reference``)."""
    from ..model.loading import params_on_meta

    dtype = torch.bfloat16 if "bf16" in (cfg.dtype, cfg.mixed_precision) else torch.float32
    if cfg.ref_model:
        ref = load_policy(cfg.ref_model, cfg.dtype, device)[0].to(dtype)
        return ref.requires_grad_(False).eval()
    with params_on_meta():
        ref = type(model)(model.config)
    own = dict(ref.named_parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            q = torch.nn.Parameter(p.detach().to(device=device, dtype=dtype, copy=True), requires_grad=False)
            owner, _, leaf = name.rpartition(".")
            ref.get_submodule(owner)._parameters[leaf] = q
            own.pop(name)
        for name, b in model.named_buffers():
            owner, _, leaf = name.rpartition(".")
            v = b.detach().to(device=device, copy=True)
            ref.get_submodule(owner)._buffers[leaf] = v.to(dtype) if v.is_floating_point() else v
    if own:
        raise RuntimeError(f"make_reference: {sorted(own)[:3]} not copied")
    return ref.requires_grad_(False).eval()
