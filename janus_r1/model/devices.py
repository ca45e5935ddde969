"""Device and dtype names as users write them (``"auto"``, ``"cuda:1"``, ``"bf16"``) -> torch objects.

One parser for the loader, the CLI and the nodes, so every entry point accepts the same spellings and refuses a
typo with the same message before anything is downloaded or loaded.
"""

from __future__ import annotations

import torch

from ..errors import JanusR1Error

DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
}


def is_auto(value: object) -> bool:
    """``"auto"`` in any case and with surrounding blanks."""
    return isinstance(value, str) and value.strip().lower() == "auto"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` / ``"auto"``: cuda, else mps, else cpu. Otherwise the named device, refused when it is absent."""
    if device is None or is_auto(device):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise JanusR1Error(f"Unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise JanusR1Error(f"Device {device!r} requested but CUDA is not available; use 'auto' or 'cpu'.")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise JanusR1Error(f"Device {device!r} requested but MPS is not available; use 'auto' or 'cpu'.")
    if dev.type == "meta":
        raise JanusR1Error("Device 'meta' cannot hold weights; use 'auto', 'cpu', 'cuda' or 'mps'.")
    return dev


def parse_dtype(dtype: str | torch.dtype, what: str = "dtype") -> torch.dtype:
    """A floating-point ``torch.dtype`` or one of :data:`DTYPES`' names; ``what`` names the argument in errors."""
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise JanusR1Error(f"{what} {dtype} is not a floating-point dtype; use bf16, fp16 or fp32.")
        return dtype
    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key in DTYPES:
            return DTYPES[key]
    raise JanusR1Error(
        f"Unknown {what} {dtype!r}; use 'auto' (the checkpoint's own), 'bf16'/'bfloat16', 'fp16'/'float16', "
        "'fp32'/'float32' or a torch.dtype."
    )


def resolve_dtype(dtype: str | torch.dtype, cfg: dict, source: str = "config.json") -> torch.dtype:
    """``"auto"`` means the checkpoint's ``torch_dtype`` (bfloat16 for the real ones); fp32 when it says nothing.
    ``source`` (the config file) names where a bad stored dtype came from."""
    if not is_auto(dtype):
        return parse_dtype(dtype, "dtype")
    stored, field = None, None
    for section in (None, "text_config", "language_config"):
        sub = cfg if section is None else cfg.get(section)
        if not isinstance(sub, dict):
            continue
        for key in ("torch_dtype", "dtype"):
            if sub.get(key) is not None:
                stored, field = sub[key], key if section is None else f"{section}.{key}"
                break
        if stored is not None:
            break
    if stored is None or stored == "auto":
        return torch.float32
    try:
        return parse_dtype(stored, "checkpoint torch_dtype")
    except JanusR1Error as e:
        raise JanusR1Error(f"{source}: field '{field}' must name a floating-point dtype (bfloat16, float16, "
                           f"float32), found {type(stored).__name__} {stored!r}; pass dtype='bf16' (or fp16 / fp32) "
                           "to load it anyway.") from e
