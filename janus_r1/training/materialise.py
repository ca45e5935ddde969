"""The policy and its frozen reference without a full copy of the model per rank.

Why: loading a 7B model in fp32 on the CPU of each of 8 ranks before sharding costs 8 x ~30 GB of host memory at
once, and a reference made by ``deepcopy`` of the fp32 policy costs a ~59 GB transient per GPU and then an
unsharded 14.8 GB copy on every rank. Here (``sharding: fsdp`` on several processes, ``load_sharded: true``):

1. :func:`skeleton` builds the model from its config with parameters on the ``meta`` device (real buffers:
   rotary tables are computed in ``__init__`` and never stored) -- no memory, no init time;
2. the trainer shards it (``fully_shard`` works on meta parameters) and :func:`fill` allocates only this rank's
   shards (``to_empty``) and copies into them, tensor by tensor, the rows this rank owns from the weight files:
   safetensors are opened with ``safe_open`` (mmap) and one tensor is read at a time, DeepSpeed-free; the
   DeepSeek layout is converted per tensor with the loader's own rules (``model/deepseek_keys.py``).

Peak host memory per rank while loading: its shards + one full tensor (the largest is the 102400 x 4096
embedding, 1.6 GB in fp32) -- not the model. The reference is built the same way from the base files (or
``ref_model``), in bf16 when the run computes in bf16, and sharded like the policy (FSDP2 under every multi-process
engine: it is only ever called, never trained). One process or ``sharding: none`` keeps the engine's loader.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..errors import JanusR1Error


def skeleton(name: str, dtype: torch.dtype):
    """``(model, vocab)``: ``tiny-random`` built for real (it is tiny), anything else with meta parameters of
    ``dtype`` (a model folder: the parameters' dtype is what :func:`fill` allocates)."""
    from ..model.vocabulary import Vocabulary

    if name == "tiny-random":
        from ..model.tiny import build_tiny_model

        model, tok = build_tiny_model("micro", seed=0)
        return model.to(dtype), Vocabulary(tok)
    from transformers import JanusConfig, JanusForConditionalGeneration

    from ..model.deepseek_config import janus_config_from_deepseek
    from ..model.directory import detect_layout, load_tokenizer, read_config
    from ..model.loading import params_on_meta
    from ..model.sources import resolve_model_dir

    model_dir = resolve_model_dir(name, progress=False)
    vocab = load_tokenizer(model_dir)
    if detect_layout(model_dir) == "deepseek":
        config = janus_config_from_deepseek(read_config(model_dir), vocab.ids.image_placeholder)
    else:
        config = JanusConfig.from_pretrained(str(model_dir))
        config.tie_word_embeddings = config.text_config.tie_word_embeddings = False
        config.image_token_id = vocab.ids.image_placeholder
    with params_on_meta():
        model = JanusForConditionalGeneration(config)
    if any(v >= config.text_config.vocab_size for v in vars(vocab.ids).values()):
        raise JanusR1Error(f"the tokenizer of {name} has ids outside the model's vocabulary")
    # the meta parameters take ``dtype`` now: ``fill`` allocates (``to_empty``) in the parameter's own dtype, so
    # a bf16 reference built from fp32 skeleton parameters would silently be fp32 (2x its memory and all-gathers).
    # Buffers (rotary tables) stay as built, like the engine loader keeps them.
    for p in model.parameters():
        p.data = p.data.to(dtype)
    return model.eval(), vocab


def source_tensors(name: str) -> Iterator[tuple[str, torch.Tensor]]:
    """``(state-dict name, full tensor)`` of the model's weights, one at a time."""
    if name == "tiny-random":
        from ..model.tiny import build_tiny_model

        yield from build_tiny_model("micro", seed=0)[0].state_dict().items()
        return
    from ..model.deepseek_keys import convert_deepseek_tensor
    from ..model.directory import detect_layout
    from ..model.shards import read_shard, weight_files
    from ..model.sources import resolve_model_dir

    model_dir = resolve_model_dir(name, progress=False)
    deepseek = detect_layout(model_dir) == "deepseek"
    for path in weight_files(model_dir):
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                raw = ((k, f.get_tensor(k)) for k in f.keys())
                yield from _converted(raw, deepseek, path, convert_deepseek_tensor)
        else:  # .bin: weights_only + mmap, tensors paged in when touched
            yield from _converted(read_shard(path).items(), deepseek, path, convert_deepseek_tensor)


def _converted(raw, deepseek: bool, path, convert):
    for key, t in raw:
        if not deepseek:
            yield key, t
            continue
        items = convert(key, t)
        if items is None:
            raise JanusR1Error(f"{path.name}: {key} is not a Janus-Pro tensor")
        yield from items


def _row_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """FSDP2's ``Shard(0)``: ``torch.chunk`` over the ranks (chunks of ceil(n / world) rows, the last shorter)."""
    c = -(-n // world)
    lo = min(rank * c, n)
    return lo, min(lo + c, n)


def _shard_dim(t) -> int:
    """The mesh dimension a parameter is sharded on (the last: FSDP's only one, or HSDP's shard dim)."""
    return max(d for d, pl in enumerate(t.placements) if pl.is_shard())


@torch.no_grad()
def fill(root: torch.nn.Module, name: str, dtype: torch.dtype, device, copy: bool = True) -> None:
    """Allocate ``root``'s (sharded, meta) parameters on ``device`` and (``copy``) copy into each this rank's rows
    from ``name``'s files; without ``copy`` a sharded checkpoint fills them next. Every parameter and persistent
    buffer must be found exactly once (strict, like the loader)."""
    model = root.model
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}  # real: params_on_meta keeps them
    root.to_empty(device=device)
    for n, b in buffers.items():
        owner, _, leaf = n.rpartition(".")
        model.get_submodule(owner)._buffers[leaf] = b.to(device)
    if not copy:
        return
    targets = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    expected = set(model.state_dict())
    seen: set[str] = set()
    for key, full in source_tensors(name):
        if key not in expected:
            raise JanusR1Error(f"{name}: the weight files hold {key}, which this model does not have")
        t = targets[key]
        cast = dtype if full.is_floating_point() and t.is_floating_point() else t.dtype
        if hasattr(t, "device_mesh"):
            local = t.to_local()
            dim = _shard_dim(t)
            lo, hi = _row_range(full.shape[0], t.device_mesh.get_local_rank(dim), t.device_mesh.size(dim))
            if tuple(t.shape) != tuple(full.shape) or local.shape[0] != hi - lo:
                raise JanusR1Error(f"{name}: {key} has shape {list(full.shape)}, the model expects {list(t.shape)}")
            local.copy_(full[lo:hi].to(cast))
        else:
            if tuple(t.shape) != tuple(full.shape):
                raise JanusR1Error(f"{name}: {key} has shape {list(full.shape)}, the model expects {list(t.shape)}")
            t.copy_(full.to(cast))
        seen.add(key)
        del full
    missing = expected - seen
    if missing:
        raise JanusR1Error(f"{name}: the weight files lack {len(missing)} tensor(s), e.g. {sorted(missing)[:3]}")


class Reference:
    """The frozen KL reference (and ``self`` judge): ``root(fn, ...)`` calls ``fn(model, ...)`` -- collectively
    when sharded; :meth:`full_params` gathers it for the engine's decode loop (the ``self`` judge)."""

    def __init__(self, model: torch.nn.Module, root: torch.nn.Module, sharded: bool) -> None:
        self.model, self.root, self.sharded = model, root, sharded

    @contextlib.contextmanager
    def full_params(self):
        from . import sharding

        with sharding.full_params(self.root) if self.sharded else contextlib.nullcontext():
            yield


def reference_dtype(cfg) -> torch.dtype:
    return torch.bfloat16 if "bf16" in (cfg.dtype, cfg.mixed_precision) else torch.float32


def build_reference(cfg, device, world: int, sharded_load: bool) -> Reference:
    """The reference from the base files (``ref_model`` or ``model``): sharded with FSDP2 over several
    processes (any engine), else a plain copy; never a copy of the policy; no grads, eval mode, no
    checkpointing hook."""
    from . import sharding
    from .policy import Policy, load_policy

    name = cfg.ref_model or cfg.model
    dtype = reference_dtype(cfg)
    shard = world > 1 and cfg.sharding != "none"
    group = cfg.fsdp_shard_group if cfg.sharding == "fsdp" else 0  # HSDP: the policy's mesh
    if shard and sharded_load:
        model, _ = skeleton(name, dtype)
        model.requires_grad_(False)
        root = Policy(model)
        sharding.shard(root, "no", torch.device(device), group)
        if any(p.is_meta for p in model.parameters()):
            fill(root, name, dtype, device)
        else:  # tiny-random: built for real, already sharded from its values
            pass
    else:
        model = load_policy(name, "bf16" if dtype == torch.bfloat16 else "fp32", device)[0].to(dtype)
        model.requires_grad_(False)
        root = Policy(model)
        if shard:
            sharding.shard(root, "no", torch.device(device), group)
    model.eval()
    return Reference(model, root, shard)
