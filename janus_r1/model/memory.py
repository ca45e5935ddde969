"""How much accelerator memory a run needs: weights + the static KV cache of the longest context + a margin
for activations. The ComfyUI loader passes this to ``load_models_gpu`` before each use; the CLI can print it.

The introspective context is the longest any task builds (spec §2.5): prompt + for each earlier round
(image + SELF_CHECK + reflection + REGEN_TRIGGER) + the image being drawn, for 2 CFG rows per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import defaults

SELF_CHECK_TOKENS = 16  # "<end_of_image>\nLet me think Does this image match the prompt..." (about 15)
TRIGGER_TOKENS = 12  # "<EOS>\nNext, I will draw a new image<begin_of_image>" (about 10)
VQ_DECODE_CHUNK = 4  # images decoded at once (see generation.facade.Janus.decode_codes)
PROMPT_TOKENS = defaults.MAX_PROMPT_TOKENS  # a caption prompt's token budget with its template
EDIT_TEXT_TOKENS = 160  # editing template + instruction (<= defaults.MAX_INSTRUCTION_TOKENS = 90)
TASKS = ("text_to_image", "best_of_n", "generate", "regenerate", "judge", "edit")


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations

    def __str__(self) -> str:
        gib = 1024**3
        return (f"{self.total / gib:.2f} GiB (weights {self.weights / gib:.2f}, KV cache {self.kv_cache / gib:.2f},"
                f" activations {self.activations / gib:.2f})")


def context_tokens(num_image_tokens: int, max_rounds: int, max_reflection: int,
                   prompt_tokens: int = PROMPT_TOKENS) -> int:
    """Tokens of the longest row an introspective run of ``max_rounds`` images builds."""
    per_round = num_image_tokens + SELF_CHECK_TOKENS + max_reflection + TRIGGER_TOKENS
    return prompt_tokens + (max_rounds - 1) * per_round + num_image_tokens + SELF_CHECK_TOKENS + max_reflection


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer as stored (quantised storage counted as it is)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.device.type == "meta" or id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total


def kv_cache_bytes(model: torch.nn.Module, rows: int, tokens: int) -> int:
    """Bytes of the static KV cache the decode loop allocates for ``rows`` sequences of ``tokens`` positions."""
    text = model.config.text_config
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    dtype = model.get_input_embeddings().weight.dtype
    elt = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 2
    return 2 * text.num_hidden_layers * rows * kv_heads * head_dim * tokens * elt


def run_bytes(model: torch.nn.Module, rows: int, context_tokens: int, new_tokens: int, images_out: int = 0) -> int:
    """Bytes one phase needs beyond the weights: the static KV cache of ``rows`` sequences (CFG rows counted) of
    ``context_tokens + new_tokens`` positions, the prefill's activations, the logits, and the VQ decoder's
    full-resolution maps for the images it decodes (in chunks of ``VQ_DECODE_CHUNK``). The ComfyUI nodes pass it
    to ``load_models_gpu`` before every run."""
    text = model.config.text_config
    dtype = model.get_input_embeddings().weight.dtype
    elt = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 2
    kv = kv_cache_bytes(model, rows, context_tokens + new_tokens)
    prefill = rows * context_tokens * (4 * text.hidden_size + 2 * text.intermediate_size) * elt
    if context_tokens <= 4096:  # attention scores, where SDPA falls back to its math kernel (the CPU)
        prefill += rows * text.num_attention_heads * context_tokens * context_tokens * elt
    logits = rows * text.vocab_size * 4 * 2
    side = int(model.config.vision_config.image_size)
    vq = 3 * model.config.vq_config.base_channels * 4 * side * side * 4 * min(images_out, VQ_DECODE_CHUNK)
    return int(kv + prefill + logits + vq)


def estimate(model: torch.nn.Module, samples: int = 1, max_rounds: int = 3, max_reflection: int = 256,
             prompt_tokens: int = PROMPT_TOKENS) -> MemoryEstimate:
    """Peak memory of an introspective run of ``samples`` images at once with up to ``max_rounds`` rounds: the
    weights plus :func:`memory_needed` for ``generate``, with its KV cache shown apart."""
    n_img = int(model.config.vision_config.num_image_tokens)
    kv = kv_cache_bytes(model, 2 * samples, context_tokens(n_img, max_rounds, max_reflection, prompt_tokens))
    need = memory_needed(model, "generate", samples, max_rounds, max_reflection, prompt_tokens)
    return MemoryEstimate(weight_bytes(model), kv, need - kv)


def memory_needed(model: torch.nn.Module, task: str, batch: int = 1, rounds: int = 1, reflection: int = 0,
                  prompt_tokens: int = PROMPT_TOKENS) -> int:
    """Bytes beyond the weights that one call of ``task`` needs for ``batch`` outputs: the one place that knows
    each task's rows (CFG doubles the drawing rows), context and new tokens. ComfyUI hands it to
    ``load_models_gpu(memory_required=...)`` as core nodes do with ``VAE.memory_used_decode``.

    ``batch`` counts output images (for ``judge``: images judged); ``rounds`` and ``reflection`` bound an
    introspective run (``generate``/``regenerate``); ``prompt_tokens`` is the caller's prompt budget."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)} (got {task!r})")
    n_img = int(model.config.vision_config.num_image_tokens)
    judge_ctx = prompt_tokens + n_img + SELF_CHECK_TOKENS
    if task in ("generate", "regenerate"):
        ctx = context_tokens(n_img, max(rounds, 1), reflection, prompt_tokens)
        return run_bytes(model, 2 * batch, ctx, 0, batch)  # ctx already counts the last phase's new tokens
    if task == "judge":
        return run_bytes(model, batch, judge_ctx, max(reflection, 1))
    if task == "edit":
        return run_bytes(model, 2 * batch, n_img + EDIT_TEXT_TOKENS, n_img, batch)
    draw = run_bytes(model, 2 * batch, prompt_tokens, n_img, batch)
    return draw if task == "text_to_image" else max(draw, run_bytes(model, batch, judge_ctx, 1))
