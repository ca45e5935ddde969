"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for the trainer, and the state dicts both engines save.

Why not accelerate's FSDP plugin: accelerate 1.15 selects FSDP only for GPU-like distributed types (a CPU run is
MULTI_CPU), so CI could never exercise it; ``fully_shard`` runs the same code on a CPU mesh with gloo and on GPUs
with NCCL. Accelerate still owns the process group, devices, autocast and the gathers of the log statistics.

* Every LLaMA decoder layer is its own FSDP unit; the root unit (:class:`trainer.Policy`) holds the rest
  (embeddings, heads, aligners and the frozen SigLIP / VQ model; FSDP2 allows frozen and trainable parameters in
  one unit). Every differentiable call goes through ``policy(fn, ...)`` so the root all-gathers its parameters.
* Parameters stay fp32 (the master weights); ``mixed_precision: bf16`` makes FSDP compute in bf16 and reduce
  gradients in fp32 (``MixedPrecisionPolicy``).
* Rollouts run the engine's decode loop on the plain modules, whose calls are not collective and differ between
  ranks: :func:`full_params` all-gathers every unit once, keeps it gathered, and reshards afterwards.
* Checkpoints and the export hold the full (gathered) weights and optimizer state, keyed by parameter name, so a
  run can resume on another number of processes (``get_model_state_dict`` / ``get_optimizer_state_dict`` with
  ``full_state_dict=True, cpu_offload=True``; resumed shards are cut with ``distribute_tensor``).
"""

from __future__ import annotations

import contextlib

import torch


def _fsdp():
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    return FSDPModule, MixedPrecisionPolicy, fully_shard


def mesh_shape(world: int, shard_group: int) -> tuple[int, ...]:
    """The device mesh of ``world`` processes: ``(world,)`` (FSDP: every process holds a 1/world shard) or, with
    ``shard_group`` g (HSDP), ``(world / g, g)``: shards within groups of g consecutive ranks (a node), replicas
    across the groups -- the all-gathers and reduce-scatters stay inside a node, only the gradient all-reduce
    between replicas crosses the network."""
    if shard_group in (0, world):
        return (world,)
    if shard_group < 0 or world % shard_group:
        from ..errors import JanusR1Error

        raise JanusR1Error(f"fsdp_shard_group {shard_group} does not divide the {world} processes: set it to the "
                           "processes per node (0: shard over every process)")
    return (world // shard_group, shard_group)


def shard(policy: torch.nn.Module, mixed_precision: str, device: torch.device,
          shard_group: int = 0) -> torch.nn.Module:
    """``fully_shard`` each decoder layer, then the root, over the mesh of :func:`mesh_shape` (a 2-D mesh makes
    FSDP2 hybrid: replicate on dim 0, shard on dim 1)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    _, MixedPrecisionPolicy, fully_shard = _fsdp()
    shape = mesh_shape(dist.get_world_size(), shard_group)
    mesh = init_device_mesh(device.type, shape, mesh_dim_names=("replicate", "shard")[-len(shape):])
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
          if mixed_precision == "bf16" else MixedPrecisionPolicy())
    for layer in policy.model.model.language_model.layers:
        fully_shard(layer, mesh=mesh, mp_policy=mp)
    fully_shard(policy, mesh=mesh, mp_policy=mp)
    return policy


def mesh_of(policy: torch.nn.Module) -> list[int]:
    """The mesh shape a sharded policy's parameters live on (``[]`` when not sharded)."""
    p = next(iter(policy.parameters()))
    return list(p.device_mesh.shape) if hasattr(p, "device_mesh") else []


def set_gradient_sync(policy: torch.nn.Module, last: bool) -> None:
    """Before a micro-batch's backward: gradients cross between HSDP replicas (an all-reduce over the network)
    only on the update's last micro-batch; the others only reduce-scatter within the shard group, and FSDP2 adds
    their partial sums into that final all-reduce. The reduce-scatter itself runs every micro-batch on purpose:
    skipping it (``set_requires_gradient_sync(False)``) would keep full-size unsharded gradients on every rank
    (28 GB in fp32 at 7B). A 1-D mesh has no all-reduce to skip."""
    if is_sharded(policy) and len(mesh_of(policy)) == 2:
        policy.set_requires_all_reduce(last, recurse=True)


def is_sharded(policy: torch.nn.Module) -> bool:
    FSDPModule = _fsdp()[0]
    return isinstance(policy, FSDPModule)


@contextlib.contextmanager
def full_params(policy: torch.nn.Module):
    """Gather every unit's parameters for the engine's (non-collective) decode loop; a no-op when not sharded."""
    if not is_sharded(policy):
        yield
        return
    FSDPModule = _fsdp()[0]
    units = [m for m in policy.modules() if isinstance(m, FSDPModule)]
    inner = [m for m in units if m is not policy]
    for m in inner:  # a layer forward (transformers' runner) must not reshard in the middle of a rollout
        m.set_reshard_after_forward(False, recurse=False)
    for m in units:
        m.unshard()
    try:
        yield
    finally:
        for m in units:
            m.reshard()
        for m in inner:
            m.set_reshard_after_forward(True, recurse=False)


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> float:
    """Global gradient norm (before clipping), the same number on every rank; DTensor norms are reduced."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **kw)


def model_state(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full weights of ``policy.model`` on CPU (the main process; other ranks of a sharded run get ``{}``)."""
    if is_sharded(policy):
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        sd = get_model_state_dict(policy, options=_options())
        return {k.removeprefix("model."): v for k, v in sd.items()}
    return {k: v.detach().cpu().contiguous() for k, v in policy.model.state_dict().items()}


def optimizer_state(policy: torch.nn.Module, optimizer) -> dict:
    """``{"state": {param name: {k: v}}, "param_groups": [{..., "params": [names]}]}`` (full, on CPU)."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
    if is_sharded(policy):
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(policy, optimizer, options=_options())
    names = {p: n for n, p in policy.named_parameters()}
    flat = [p for g in optimizer.param_groups for p in g["params"]]
    sd = optimizer.state_dict()
    state = {names[flat[i]]: {k: (v.detach().cpu() if torch.is_tensor(v) else v) for k, v in st.items()}
             for i, st in sd["state"].items()}
    groups = [{**g, "params": [names[flat[i]] for i in g["params"]]} for g in sd["param_groups"]]
    return {"state": state, "param_groups": groups}


def load_optimizer_state(policy: torch.nn.Module, optimizer, named: dict) -> None:
    """Inverse of :func:`optimizer_state` on any number of processes: each rank keeps its shard of every state."""
    optimizer = getattr(optimizer, "optimizer", optimizer)
    params = dict(policy.named_parameters())
    flat = [p for g in optimizer.param_groups for p in g["params"]]
    index = {id(p): i for i, p in enumerate(flat)}
    state = {}
    for name, st in named["state"].items():
        p = params[name]
        state[index[id(p)]] = {k: _like(_load(v), p) if k != "step" else _load(v) for k, v in st.items()}
    groups = [{**g, "params": [index[id(params[n])] for n in g["params"]]} for g in named["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _load(v):
    return v.load() if hasattr(v, "load") else v  # checkpoint.Deferred


def _like(v, p: torch.Tensor):
    """A full state tensor laid out like parameter ``p`` (this rank's shard of it when ``p`` is a DTensor)."""
    if not torch.is_tensor(v) or not hasattr(p, "device_mesh") or hasattr(v, "device_mesh"):
        return v  # not a tensor, an unsharded parameter, or already this rank's shard (a sharded checkpoint)
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(v.to(p.device_mesh.device_type), p.device_mesh, p.placements, src_data_rank=None)


def plain_model(model: torch.nn.Module, state: dict[str, torch.Tensor], copy: bool = False) -> torch.nn.Module:
    """An unsharded copy of ``model``'s architecture holding ``state`` (for ``save_pretrained``); ``model`` itself
    when it is not sharded, unless ``copy`` (DeepSpeed's module holds bf16 or partitioned weights)."""
    if not copy and not any(hasattr(p, "device_mesh") for p in model.parameters()):
        return model
    with torch.device("meta"):
        plain = type(model)(model.config)
    plain.load_state_dict(state, assign=True)
    buffers = dict(model.named_buffers())
    for name, b in list(plain.named_buffers()):  # non-persistent buffers (rotary tables) are not in ``state``
        if b.is_meta:
            owner, _, leaf = name.rpartition(".")
            plain.get_submodule(owner).register_buffer(leaf, buffers[name].detach().cpu(), persistent=False)
    return plain
