"""4-bit (NF4) or 8-bit weights for the language model only, through bitsandbytes (an optional extra).

Only the LLaMA decoder's linear layers are quantised; ``lm_head``, the generation head and embeddings, both
aligners, SigLIP and the VQ model stay in the compute dtype (spec: quantising the heads or the VQ visibly hurts
images). The replaced layers keep their checkpoint tensors unquantised until the model is moved to its device:
bitsandbytes quantises each weight on the way, so a GPU never holds the bf16 copy of the decoder.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..errors import JanusR1Error

QUANT_MODES = ("none", "4bit", "8bit")


def check_mode(mode: str | None) -> str:
    mode = "none" if mode in (None, "", False) else str(mode).lower()
    if mode not in QUANT_MODES:
        raise JanusR1Error(f"quantize must be one of {', '.join(QUANT_MODES)} (got {mode!r}).")
    return mode


def _bnb():
    try:
        import bitsandbytes as bnb
    except ImportError as e:
        raise JanusR1Error(
            "4-bit/8-bit loading needs bitsandbytes: `pip install bitsandbytes` (or `pip install janus-r1[quant]`)."
        ) from e
    return bnb


def _replacement(bnb, linear: nn.Linear, mode: str, compute_dtype: torch.dtype) -> nn.Module:
    has_bias = linear.bias is not None
    w = linear.weight.data
    if mode == "4bit":
        new = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias,
                                compute_dtype=compute_dtype, quant_type="nf4", device="meta")
        new.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4")
    else:
        new = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias,
                                  has_fp16_weights=False, threshold=6.0, device="meta")
        new.weight = bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False)
    if has_bias:
        new.bias = nn.Parameter(linear.bias.data, requires_grad=False)
    return new


def quantize_language_model(model: nn.Module, mode: str, device: torch.device) -> nn.Module:
    """Swap the decoder's ``nn.Linear`` layers for bitsandbytes ones, then move the model to ``device``."""
    mode = check_mode(mode)
    if mode == "none":
        return model.to(device)
    bnb = _bnb()
    # bitsandbytes warns on every 8-bit matmul that bf16 inputs are cast to fp16; once is enough
    warnings.filterwarnings("once", message="MatMul8bitLt: inputs will be cast")
    compute_dtype = model.get_input_embeddings().weight.dtype
    lm = model.model.language_model
    count = 0
    for module in list(lm.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, _replacement(bnb, child, mode, compute_dtype))
                count += 1
    if count == 0:
        raise JanusR1Error("the language model has no linear layer to quantise; is this a Janus checkpoint?")
    model.config.janus_r1_quantization = mode
    return model.to(device)
