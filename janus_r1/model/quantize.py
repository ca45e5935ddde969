"""4-bit or 8-bit weights for the language model only: int4 on core torch's kernels, or bitsandbytes.

Only the LLaMA decoder's linear layers are quantised; ``lm_head``, the generation head and embeddings, both
aligners, SigLIP and the VQ model stay in the compute dtype (spec: quantising the heads or the VQ visibly hurts
images).

Modes: ``"int4"`` -- group-wise int4 on torch's fused kernels (:mod:`.int4`; tinygemm on sm80+ GPUs, the CPU
kernel on the CPU, a dequantise-then-matmul reference elsewhere), no extra dependency, and faster than bf16 at
batch 1 where a fused kernel exists; ``"nf4"`` / ``"8bit"`` -- bitsandbytes (an optional extra), for cards older
than sm80 and for 8-bit; ``"4bit"`` -- int4 where a fused int4 kernel exists (or off CUDA), NF4 on older GPUs.

Each layer is quantised as it reaches the device: its host (often mmap-backed) weight is copied there alone and
dropped after, so a GPU never holds the bf16 copy of the decoder: the peak is the quantised model plus one bf16 layer.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..errors import JanusR1Error
from .int4 import DEFAULT_GROUP_SIZE, Int4Linear, fast_kernel

QUANT_MODES = ("none", "4bit", "int4", "nf4", "8bit")
_NF4_CPU_WIDTH = 64  # bitsandbytes' CPU 4-bit kernel reshapes every input row into blocks of 64


def check_mode(mode: str | None) -> str:
    """The mode, lower-cased, or a clear error naming the accepted ones."""
    mode = "none" if mode in (None, "", False) else str(mode).strip().lower()
    if mode not in QUANT_MODES:
        raise JanusR1Error(
            f"quantize must be one of {', '.join(QUANT_MODES)} (got {mode!r}): 4bit picks int4 where the device "
            "has a fused int4 kernel (CUDA sm80+, CPU), else NF4; nf4 and 8bit need bitsandbytes."
        )
    return mode


def resolve_mode(mode: str | None, device: torch.device | str) -> str:
    """What ``mode`` means on ``device``: ``"4bit"`` becomes ``"int4"`` or ``"nf4"`` (GPUs older than sm80)."""
    mode = check_mode(mode)
    device = torch.device(device)
    if mode != "4bit":
        return mode
    if fast_kernel(device) is None and device.type == "cuda":
        return "nf4"
    return "int4"


def _bnb(mode: str, device: torch.device):
    try:
        import bitsandbytes as bnb
    except ImportError as e:
        why = ""
        if device.type == "cuda":
            why = (f" (this GPU is sm{''.join(map(str, torch.cuda.get_device_capability(device)))}; torch's fused "
                   "int4 kernel needs sm80+, and quantize='int4' would run its slow reference kernel)")
        raise JanusR1Error(
            f"quantize={mode!r} needs bitsandbytes{why}: `pip install bitsandbytes` (or `pip install "
            "janus-r1[quant]`), or use quantize='int4', which needs nothing extra."
        ) from e
    return bnb


def decoder_linears(model: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    """``(parent, attribute, linear)`` for every ``nn.Linear`` of the language model's decoder."""
    lm = model.model.language_model
    return [(module, name, child) for module in lm.modules() for name, child in module.named_children()
            if isinstance(child, nn.Linear)]


def _check_nf4_cpu(linears: list[tuple[nn.Module, str, nn.Linear]], device: torch.device) -> None:
    widths = sorted({lin.in_features for _, _, lin in linears})
    if device.type == "cpu" and any(w % _NF4_CPU_WIDTH for w in widths):
        raise JanusR1Error(
            f"quantize='nf4' on the CPU (bitsandbytes) needs every language-model input width to be a multiple "
            f"of {_NF4_CPU_WIDTH}; this model has {widths}. Use quantize='int4' (or '4bit', which picks it on "
            "the CPU)."
        )


def quantize_linear(linear: nn.Linear, mode: str, device: torch.device, compute_dtype: torch.dtype,
                    group_size: int = DEFAULT_GROUP_SIZE) -> nn.Module:
    """One quantised replacement for ``linear``, already on ``device`` (``mode`` as :func:`resolve_mode` gives)."""
    if mode == "int4":
        return Int4Linear.from_linear(linear, device, group_size, compute_dtype)
    bnb = _bnb(mode, device)
    has_bias = linear.bias is not None
    w = linear.weight.data
    if mode == "nf4":
        new = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias,
                                compute_dtype=compute_dtype, quant_type="nf4", device="meta")
        new.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4")
    else:
        new = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias,
                                  has_fp16_weights=False, threshold=6.0, device="meta")
        new.weight = bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False)
    if has_bias:
        new.bias = nn.Parameter(linear.bias.data, requires_grad=False)
    return new.to(device)  # bitsandbytes quantises on the way to the device


def quantize_language_model(model: nn.Module, mode: str | None, device: torch.device | str | None = None,
                            group_size: int = DEFAULT_GROUP_SIZE) -> nn.Module:
    """Swap the decoder's ``nn.Linear`` layers for quantised ones, layer by layer, then move the model to ``device``.

    ``mode``: one of :data:`QUANT_MODES`. ``device``: where the model will run (default: where its embeddings
    are). The model's weights may sit on the CPU (the loader keeps them there, mmap-backed) or on ``device``.
    """
    device = torch.device(device) if device is not None else model.get_input_embeddings().weight.device
    mode = resolve_mode(mode, device)
    if mode == "none":
        return model.to(device)
    linears = decoder_linears(model)
    if not linears:
        raise JanusR1Error("the language model has no linear layer to quantise; is this a Janus checkpoint?")
    if mode == "nf4":
        _check_nf4_cpu(linears, device)
    if mode == "8bit":  # bitsandbytes warns on every 8-bit matmul that inputs are cast to fp16: expected, not actionable
        warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")
    compute_dtype = model.get_input_embeddings().weight.dtype
    if mode != "int4":
        _bnb(mode, device)  # fail before the first layer is touched
    slots = [(parent, name) for parent, name, _ in linears]
    del linears  # each host copy goes as soon as its layer is replaced
    for parent, name in slots:
        setattr(parent, name, quantize_linear(getattr(parent, name), mode, device, compute_dtype, group_size))
    model.config.janus_r1_quantization = mode
    return model.to(device)
