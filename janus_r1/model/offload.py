"""Decoder-layer offload for cards that cannot hold the model: everything small stays on the device (SigLIP, VQ,
aligners, heads, embeddings -- about 2 GB for 7B in bf16), the LLaMA decoder layers that fit in a budget too, and
the rest are streamed from CPU RAM (or from a folder on disk) at every step through accelerate's hooks.

Slow (each offloaded layer crosses the bus once per token) but it runs; for an 8 GB card 4-bit is the faster
choice. An offloaded model is decoded through transformers' own forward (the generic runner), which is where the
hooks live.
"""

from __future__ import annotations

import torch

from ..errors import JanusR1Error

RESIDENT = (
    "model.vision_model", "model.aligner", "model.vqmodel", "model.generation_embeddings",
    "model.generation_aligner", "model.generation_head", "model.language_model.embed_tokens",
    "model.language_model.norm", "model.language_model.rotary_emb", "lm_head",
)


def device_map(model: torch.nn.Module, device: torch.device, max_memory_gib: float,
               offload_dir: str | None) -> dict[str, str]:
    """Resident parts and the first layers that fit in ``max_memory_gib`` on ``device``; the rest offloaded."""
    if max_memory_gib < 0:
        raise JanusR1Error(f"max_memory_gib must be >= 0 (got {max_memory_gib}).")
    layers = model.model.language_model.layers
    dev = str(device)
    mapping = {name: dev for name in RESIDENT}
    resident_bytes = sum(p.numel() * p.element_size() for name in RESIDENT
                         for p in model.get_submodule(name).parameters())
    per_layer = sum(p.numel() * p.element_size() for p in layers[0].parameters())
    room = max_memory_gib * 2**30 - resident_bytes
    on_device = max(0, min(len(layers), int(room // per_layer))) if per_layer else len(layers)
    away = "disk" if offload_dir else "cpu"
    for i in range(len(layers)):
        mapping[f"model.language_model.layers.{i}"] = dev if i < on_device else away
    return mapping


def offload(model: torch.nn.Module, device: torch.device, max_memory_gib: float,
            offload_dir: str | None = None) -> torch.nn.Module:
    """Dispatch ``model`` (on the CPU) so that at most ``max_memory_gib`` of weights live on ``device``."""
    try:
        from accelerate import dispatch_model
    except ImportError as e:
        raise JanusR1Error("offloading needs accelerate: `pip install accelerate`.") from e
    mapping = device_map(model, device, max_memory_gib, offload_dir)
    if device.type == "cpu" and not offload_dir:
        return model  # nothing to offload to
    return dispatch_model(model, device_map=mapping, main_device=str(device), offload_dir=offload_dir)
