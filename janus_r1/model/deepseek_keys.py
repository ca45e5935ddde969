"""DeepSeek ``MultiModalityCausalLM`` tensor names <-> transformers ``JanusForConditionalGeneration`` names.

Converting a 15 GB checkpoint ahead of time would cost a second copy for no gain, so the loader converts each
*tensor name* at load time instead: every rule is a rename (plus a split of the fused SigLIP ``qkv`` and a squeeze
of ``pos_embed``), so the loaded tensors stay the checkpoint's own (mmap-backed) storage. The inverse rules write
tiny DeepSeek-layout checkpoints for the tests. The config is converted in :mod:`.deepseek_config`.

References: ``transformers-janus.md`` §2 (key map) and ``janus-pro-r1.md`` §1.6 (checkpoint layout).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from ..errors import JanusR1Error
from .tiny_weights import unused_deepseek_tensors

# --------------------------------------------------------------------------------------------------------------
# Keys: DeepSeek -> transformers
# --------------------------------------------------------------------------------------------------------------

Replacement = str | Callable[[re.Match], str]


@dataclass(frozen=True)
class _Rule:
    """One rename; ``op`` says what happens to the tensor: keep it, split the fused qkv, squeeze, or drop it."""

    pattern: re.Pattern
    repl: Replacement
    op: str = "rename"  # rename | split_qkv | squeeze0 | drop


def _r(pattern: str, repl: Replacement = "", op: str = "rename") -> _Rule:
    return _Rule(re.compile(pattern), repl, op)


def _mlp_index(prefix: str) -> Callable[[re.Match], str]:
    """DeepSeek's mlp_gelu projector is Sequential(Linear, GELU, Linear, GELU, ...): layers.2k -> hidden_layers.k-1."""

    def repl(m: re.Match) -> str:
        return f"{prefix}.hidden_layers.{int(m[1]) // 2 - 1}.{m[2]}"

    return repl


_DS_TOWER_RE = r"^vision_model\.vision_tower\."
_HF_LAYERS = "model.vision_model.encoder.layers"
_WEIGHT_OR_BIAS = r"(weight|bias)$"

# Ordered: the first matching rule wins. A key that matches none is an unexpected key.
DEEPSEEK_TO_JANUS_RULES: tuple[_Rule, ...] = (
    # LLM
    _r(r"^language_model\.model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$", op="drop"),  # old 4.x buffer
    _r(r"^language_model\.model\.(.+)$", r"model.language_model.\1"),
    _r(r"^language_model\.lm_head\.(.+)$", r"lm_head.\1"),
    # SigLIP tower (timm names)
    _r(_DS_TOWER_RE + r"pos_embed$", "model.vision_model.embeddings.position_embedding.weight", "squeeze0"),
    _r(_DS_TOWER_RE + r"patch_embed\.proj\." + _WEIGHT_OR_BIAS, r"model.vision_model.embeddings.patch_embedding.\1"),
    _r(_DS_TOWER_RE + r"blocks\.(\d+)\.norm([12])\." + _WEIGHT_OR_BIAS, _HF_LAYERS + r".\1.layer_norm\2.\3"),
    _r(_DS_TOWER_RE + r"blocks\.(\d+)\.attn\.qkv\." + _WEIGHT_OR_BIAS, _HF_LAYERS + r".\1.self_attn.{}_proj.\2", "split_qkv"),
    _r(_DS_TOWER_RE + r"blocks\.(\d+)\.attn\.proj\." + _WEIGHT_OR_BIAS, _HF_LAYERS + r".\1.self_attn.projection_layer.\2"),
    _r(_DS_TOWER_RE + r"blocks\.(\d+)\.mlp\.(fc[12])\." + _WEIGHT_OR_BIAS, _HF_LAYERS + r".\1.mlp.\2.\3"),
    _r(_DS_TOWER_RE + r"norm\." + _WEIGHT_OR_BIAS, r"model.vision_model.post_layernorm.\1"),
    _r(_DS_TOWER_RE + r"attn_pool\..+$", op="drop"),  # MAP head; DeepSeek runs the tower with ignore_head=True
    # aligners (understanding and generation)
    _r(r"^aligner\.layers\.0\." + _WEIGHT_OR_BIAS, r"model.aligner.fc1.\1"),
    _r(r"^aligner\.layers\.([1-9]\d*[02468]|[2468])\." + _WEIGHT_OR_BIAS, _mlp_index("model.aligner")),
    _r(r"^gen_aligner\.layers\.0\." + _WEIGHT_OR_BIAS, r"model.generation_aligner.fc1.\1"),
    _r(r"^gen_aligner\.layers\.([1-9]\d*[02468]|[2468])\." + _WEIGHT_OR_BIAS, _mlp_index("model.generation_aligner")),
    # generation head and embedding
    _r(r"^gen_head\.output_mlp_projector\." + _WEIGHT_OR_BIAS, r"model.generation_head.proj_out.\1"),
    _r(r"^gen_head\.vision_head\." + _WEIGHT_OR_BIAS, r"model.generation_head.vision_head.\1"),
    _r(r"^gen_embed\.weight$", "model.generation_embeddings.weight"),
    # VQ-16 (LlamaGen names). Both sides list decoder levels lowest resolution first, so conv_blocks.l -> up.l.
    _r(r"^gen_vision_model\.quantize\.codebook_used$", op="drop"),  # usage counter from training
    _r(r"^gen_vision_model\.(encoder|decoder)\.mid\.0\.(.+)$", r"model.vqmodel.\1.mid.block_1.\2"),
    _r(r"^gen_vision_model\.(encoder|decoder)\.mid\.1\.(.+)$", r"model.vqmodel.\1.mid.attn_1.\2"),
    _r(r"^gen_vision_model\.(encoder|decoder)\.mid\.2\.(.+)$", r"model.vqmodel.\1.mid.block_2.\2"),
    _r(
        r"^gen_vision_model\.encoder\.conv_blocks\.(\d+)\.res\.(.+)$",
        r"model.vqmodel.encoder.down.\1.block.\2",
    ),
    _r(
        r"^gen_vision_model\.encoder\.conv_blocks\.(\d+)\.(attn|downsample)\.(.+)$",
        r"model.vqmodel.encoder.down.\1.\2.\3",
    ),
    _r(
        r"^gen_vision_model\.decoder\.conv_blocks\.(\d+)\.res\.(.+)$", r"model.vqmodel.decoder.up.\1.block.\2"
    ),
    _r(
        r"^gen_vision_model\.decoder\.conv_blocks\.(\d+)\.(attn|upsample)\.(.+)$",
        r"model.vqmodel.decoder.up.\1.\2.\3",
    ),
    _r(
        r"^gen_vision_model\.(encoder|decoder)\.(conv_in|norm_out|conv_out)\." + _WEIGHT_OR_BIAS,
        r"model.vqmodel.\1.\2.\3",
    ),
    _r(r"^gen_vision_model\.(quant_conv|post_quant_conv)\." + _WEIGHT_OR_BIAS, r"model.vqmodel.\1.\2"),
    _r(r"^gen_vision_model\.quantize\.embedding\.weight$", "model.vqmodel.quantize.embedding.weight"),
)


def convert_deepseek_tensor(key: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]] | None:
    """Map one DeepSeek tensor to its transformers name(s): a list of (key, tensor), ``[]`` when the key is one of
    the tolerated unused tensors, ``None`` when no rule knows the key (the caller reports it as unexpected).

    Splitting ``qkv`` and squeezing ``pos_embed`` return views, so no data is copied.
    """
    for rule in DEEPSEEK_TO_JANUS_RULES:
        m = rule.pattern.match(key)
        if m is None:
            continue
        if rule.op == "drop":
            return []
        new = rule.repl(m) if callable(rule.repl) else m.expand(rule.repl)
        if rule.op == "split_qkv":
            if tensor.shape[0] % 3:
                raise JanusR1Error(
                    f"{key} has shape {list(tensor.shape)}; a fused qkv needs dim 0 divisible by 3."
                )
            q, k, v = tensor.chunk(3, dim=0)
            return [(new.format("q"), q), (new.format("k"), k), (new.format("v"), v)]
        if rule.op == "squeeze0":
            if tensor.ndim != 3 or tensor.shape[0] != 1:
                raise JanusR1Error(f"{key} has shape {list(tensor.shape)}; expected [1, num_patches, width].")
            return [(new, tensor[0])]
        return [(new, tensor)]
    return None


def is_tolerated_unused(key: str) -> bool:
    """True for DeepSeek tensors that exist in real checkpoints but are unused at inference (dropped on load)."""
    return any(r.op == "drop" and r.pattern.match(key) for r in DEEPSEEK_TO_JANUS_RULES)


def convert_deepseek_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Convert a (partial) DeepSeek state dict: ``(converted, unmapped_keys)``; tolerated unused keys vanish."""
    out: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for key, tensor in state_dict.items():
        items = convert_deepseek_tensor(key, tensor)
        if items is None:
            unmapped.append(key)
        else:
            out.update(items)
    return out, unmapped


# --------------------------------------------------------------------------------------------------------------
# Keys: transformers -> DeepSeek (for writing tiny DeepSeek-layout checkpoints)
# --------------------------------------------------------------------------------------------------------------

_HF_LAYER_RE = r"^model\.vision_model\.encoder\.layers\.(\d+)\."
_DS_TOWER = "vision_model.vision_tower."


def _inv_mlp_index(prefix: str) -> Callable[[re.Match], str]:
    def repl(m: re.Match) -> str:
        return f"{prefix}.layers.{2 * (int(m[1]) + 1)}.{m[2]}"

    return repl


JANUS_TO_DEEPSEEK_RULES: tuple[_Rule, ...] = (
    _r(r"^model\.language_model\.(.+)$", r"language_model.model.\1"),
    _r(r"^lm_head\.(.+)$", r"language_model.lm_head.\1"),
    _r(r"^model\.vision_model\.embeddings\.position_embedding\.weight$", _DS_TOWER + "pos_embed", "unsqueeze0"),
    _r(r"^model\.vision_model\.embeddings\.patch_embedding\." + _WEIGHT_OR_BIAS, _DS_TOWER + r"patch_embed.proj.\1"),
    _r(_HF_LAYER_RE + r"layer_norm([12])\." + _WEIGHT_OR_BIAS, _DS_TOWER + r"blocks.\1.norm\2.\3"),
    _r(_HF_LAYER_RE + r"self_attn\.([qkv])_proj\." + _WEIGHT_OR_BIAS, _DS_TOWER + r"blocks.\1.attn.qkv.\3", "merge_qkv"),
    _r(_HF_LAYER_RE + r"self_attn\.projection_layer\." + _WEIGHT_OR_BIAS, _DS_TOWER + r"blocks.\1.attn.proj.\2"),
    _r(_HF_LAYER_RE + r"mlp\.(fc[12])\." + _WEIGHT_OR_BIAS, _DS_TOWER + r"blocks.\1.mlp.\2.\3"),
    _r(r"^model\.vision_model\.post_layernorm\." + _WEIGHT_OR_BIAS, _DS_TOWER + r"norm.\1"),
    _r(r"^model\.aligner\.fc1\." + _WEIGHT_OR_BIAS, r"aligner.layers.0.\1"),
    _r(r"^model\.aligner\.hidden_layers\.(\d+)\." + _WEIGHT_OR_BIAS, _inv_mlp_index("aligner")),
    _r(r"^model\.generation_aligner\.fc1\." + _WEIGHT_OR_BIAS, r"gen_aligner.layers.0.\1"),
    _r(r"^model\.generation_aligner\.hidden_layers\.(\d+)\." + _WEIGHT_OR_BIAS, _inv_mlp_index("gen_aligner")),
    _r(r"^model\.generation_head\.proj_out\." + _WEIGHT_OR_BIAS, r"gen_head.output_mlp_projector.\1"),
    _r(r"^model\.generation_head\.vision_head\." + _WEIGHT_OR_BIAS, r"gen_head.vision_head.\1"),
    _r(r"^model\.generation_embeddings\.weight$", "gen_embed.weight"),
    _r(r"^model\.vqmodel\.(encoder|decoder)\.mid\.block_1\.(.+)$", r"gen_vision_model.\1.mid.0.\2"),
    _r(r"^model\.vqmodel\.(encoder|decoder)\.mid\.attn_1\.(.+)$", r"gen_vision_model.\1.mid.1.\2"),
    _r(r"^model\.vqmodel\.(encoder|decoder)\.mid\.block_2\.(.+)$", r"gen_vision_model.\1.mid.2.\2"),
    _r(
        r"^model\.vqmodel\.encoder\.down\.(\d+)\.block\.(.+)$",
        r"gen_vision_model.encoder.conv_blocks.\1.res.\2",
    ),
    _r(
        r"^model\.vqmodel\.encoder\.down\.(\d+)\.(attn|downsample)\.(.+)$",
        r"gen_vision_model.encoder.conv_blocks.\1.\2.\3",
    ),
    _r(
        r"^model\.vqmodel\.decoder\.up\.(\d+)\.block\.(.+)$",
        r"gen_vision_model.decoder.conv_blocks.\1.res.\2",
    ),
    _r(
        r"^model\.vqmodel\.decoder\.up\.(\d+)\.(attn|upsample)\.(.+)$",
        r"gen_vision_model.decoder.conv_blocks.\1.\2.\3",
    ),
    _r(r"^model\.vqmodel\.(.+)$", r"gen_vision_model.\1"),
)


def janus_key_to_deepseek(key: str) -> str:
    """The DeepSeek name of one transformers key (q/k/v projections all name the fused ``qkv`` tensor)."""
    for rule in JANUS_TO_DEEPSEEK_RULES:
        m = rule.pattern.match(key)
        if m is not None:
            return rule.repl(m) if callable(rule.repl) else m.expand(rule.repl)
    raise JanusR1Error(f"No DeepSeek name for transformers key {key!r}.")


def janus_state_dict_to_deepseek(
    state_dict: Mapping[str, torch.Tensor], *, with_unused: bool = True
) -> dict[str, torch.Tensor]:
    """A DeepSeek-layout state dict for a transformers Janus state dict (tiny checkpoints only; copies tensors).

    q/k/v are concatenated into ``qkv`` ([3W, W]), the position table gets its leading batch dim back, and with
    ``with_unused`` the tensors DeepSeek's checkpoints carry but never use (SigLIP ``attn_pool.*`` MAP head, VQ
    ``codebook_used``) are added with deterministic filler values, so a written file looks like the real one.
    """
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        for rule in JANUS_TO_DEEPSEEK_RULES:
            m = rule.pattern.match(key)
            if m is None:
                continue
            new = rule.repl(m) if callable(rule.repl) else m.expand(rule.repl)
            if rule.op == "merge_qkv":
                if m[2] == "q":
                    base = key.replace(".q_proj.", ".{}_proj.")
                    parts = [state_dict[base.format(c)] for c in "qkv"]
                    out[new] = torch.cat(parts, dim=0).contiguous()
            elif rule.op == "unsqueeze0":
                out[new] = tensor.detach().unsqueeze(0).clone()
            else:
                out[new] = tensor.detach().clone()
            break
        else:
            raise JanusR1Error(f"No DeepSeek name for transformers key {key!r}.")
    if with_unused:
        out.update(unused_deepseek_tensors(out))
    return out
