"""DeepSeek "multi_modality" checkpoints -> transformers' ``JanusForConditionalGeneration``, converted on load.

Janus-Pro-1B/7B and Janus-Pro-R1-7B ship in DeepSeek's own layout (``config.json`` with ``language_config``,
``vision_config``, ... sub-configs and state-dict keys of ``MultiModalityCausalLM``). Converting them ahead of time
would cost a second 15 GB copy for no gain, so this module converts the *config* and each *tensor name* at load
time instead: every rule is a rename (plus a split of the fused SigLIP ``qkv`` and a squeeze of ``pos_embed``),
so the loaded tensors stay the checkpoint's own (mmap-backed) storage.

The inverse direction (transformers -> DeepSeek) exists to write tiny DeepSeek-layout directories that look like
the real ones, so the loader is tested against the layout it will meet in the wild.

References: ``transformers-janus.md`` §2 (key map, config map) and ``janus-pro-r1.md`` §1.6 (checkpoint layout).
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import JanusR1Error

if TYPE_CHECKING:  # transformers is imported lazily so that importing janus_r1 stays cheap
    from transformers import JanusConfig

# --------------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------------

# DeepSeek hard-codes the SigLIP geometry in code (``siglip_vit.py``), keyed by ``vision_config.params.model_name``;
# config.json never states it, so the converter needs this table. Explicit keys in ``params`` override it (tiny
# models use that to describe their own geometry).
SIGLIP_GEOMETRIES: dict[str, dict] = {
    "siglip_large_patch16_384": dict(
        width=1024, layers=24, heads=16, patch_size=16, mlp_ratio=4.0, image_size=384
    ),
}
SIGLIP_GEOMETRY_KEYS = ("width", "layers", "heads", "patch_size", "mlp_ratio", "image_size")

# Same story for the VQ tokenizer: DeepSeek builds ``VQ_models[cls]()`` with LlamaGen's defaults.
VQ_GEOMETRIES: dict[str, dict] = {
    "VQ-16": dict(base_channels=128, z_channels=256, ch_mult=[1, 1, 2, 2, 4], num_res_blocks=2),
}
VQ_GEOMETRY_KEYS = ("base_channels", "z_channels", "ch_mult", "num_res_blocks")

DEFAULT_SIGLIP = "siglip_large_patch16_384"
DEFAULT_VQ = "VQ-16"

# Per-module values that the DeepSeek layout cannot express (its code hard-codes them); the writer refuses configs
# that differ, so a written directory never silently means something else.
_FIXED_VISION = dict(
    hidden_act="gelu", layer_norm_eps=1e-6, attention_bias=True, use_qk_norm=False, num_channels=3
)
_FIXED_VQ = dict(double_latent=False, in_channels=3, out_channels=3, hidden_act="gelu")


def _sub(cfg: Mapping, key: str) -> dict:
    """``cfg[key]["params"]`` with an actionable error when the DeepSeek config lacks it."""
    sub = cfg.get(key)
    if not isinstance(sub, Mapping):
        raise JanusR1Error(
            f"DeepSeek config.json has no {key!r} section (found keys: {sorted(cfg)}); a Janus-Pro config.json "
            "has language_config, vision_config, aligner_config, gen_vision_config, gen_aligner_config and "
            "gen_head_config."
        )
    params = sub.get("params", {})
    if not isinstance(params, Mapping):
        raise JanusR1Error(
            f"DeepSeek config.json: {key}.params must be an object, found {type(params).__name__}."
        )
    return dict(params)


def _need(params: Mapping, section: str, key: str):
    if key not in params:
        raise JanusR1Error(f"DeepSeek config.json: {section}.params lacks {key!r} (found: {sorted(params)}).")
    return params[key]


def janus_config_from_deepseek(cfg: dict, image_token_id: int | None) -> JanusConfig:
    """Build a transformers ``JanusConfig`` from a DeepSeek ``multi_modality`` config.json dict.

    ``tie_word_embeddings`` is forced off at the top level *and* in the text config: Janus-Pro's ``lm_head`` is
    separate, and a tied model would silently overwrite ``embed_tokens`` with ``lm_head`` during a manual
    ``load_state_dict`` (transformers-janus.md §7 item 1). ``image_token_id`` comes from the tokenizer (the 1B and
    7B ids differ); ``None`` keeps transformers' default.
    """
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    if not isinstance(cfg, Mapping):
        raise JanusR1Error(f"DeepSeek config must be a JSON object, found {type(cfg).__name__}.")

    lang = cfg.get("language_config")
    if not isinstance(lang, Mapping):
        raise JanusR1Error(
            "DeepSeek config.json has no 'language_config' object (the LlamaConfig of the LLM)."
        )
    lang = dict(lang)
    if lang.get("model_type", "llama") != "llama":
        raise JanusR1Error(
            f"language_config.model_type is {lang['model_type']!r}; only 'llama' is supported."
        )
    lang["model_type"] = "llama"
    lang["tie_word_embeddings"] = False
    text = LlamaConfig.from_dict(lang)
    text.tie_word_embeddings = False

    # SigLIP understanding tower: geometry from the model-name table, overridden by explicit keys.
    vp = _sub(cfg, "vision_config")
    name = vp.get("model_name", DEFAULT_SIGLIP)
    geo = dict(SIGLIP_GEOMETRIES.get(name, {}))
    geo.update({k: vp[k] for k in SIGLIP_GEOMETRY_KEYS if k in vp})
    missing = [k for k in SIGLIP_GEOMETRY_KEYS if k not in geo]
    if missing:
        raise JanusR1Error(
            f"Unknown SigLIP model_name {name!r} in vision_config (known: {sorted(SIGLIP_GEOMETRIES)}) and no "
            f"explicit {missing} in vision_config.params to describe its geometry."
        )
    if vp.get("select_layer", -1) != -1:
        raise JanusR1Error(
            f"vision_config.select_layer={vp['select_layer']!r} is not supported; Janus-Pro uses -1 (all blocks)."
        )
    image_size, patch = int(geo["image_size"]), int(geo["patch_size"])
    if image_size % patch:
        raise JanusR1Error(f"vision image_size {image_size} is not a multiple of patch_size {patch}.")

    ap = _sub(cfg, "aligner_config")
    if ap.get("projector_type", "mlp_gelu") != "mlp_gelu":
        raise JanusR1Error(
            f"aligner_config.projector_type {ap['projector_type']!r} is not supported (mlp_gelu)."
        )
    if int(ap.get("input_dim", geo["width"])) != int(geo["width"]):
        raise JanusR1Error(
            f"aligner_config.input_dim {ap['input_dim']} differs from the SigLIP width {geo['width']}."
        )
    vision = JanusVisionConfig(
        hidden_size=int(geo["width"]),
        num_hidden_layers=int(geo["layers"]),
        num_attention_heads=int(geo["heads"]),
        image_size=image_size,
        patch_size=patch,
        mlp_ratio=float(geo["mlp_ratio"]),
        projection_dim=int(_need(ap, "aligner_config", "n_embed")),
        depth=int(ap.get("depth", 2)),
        num_image_tokens=(image_size // patch) ** 2,
    )

    # VQ tokenizer + generation embedding / aligner / head.
    gv_section = cfg.get("gen_vision_config") or {}
    gvp = _sub(cfg, "gen_vision_config")
    vq_cls = gv_section.get("cls", DEFAULT_VQ) if isinstance(gv_section, Mapping) else DEFAULT_VQ
    vgeo = dict(VQ_GEOMETRIES.get(vq_cls, {}))
    vgeo.update({k: gvp[k] for k in VQ_GEOMETRY_KEYS if k in gvp})
    missing = [k for k in VQ_GEOMETRY_KEYS if k not in vgeo]
    if missing:
        raise JanusR1Error(
            f"Unknown VQ class {vq_cls!r} in gen_vision_config (known: {sorted(VQ_GEOMETRIES)}) and no explicit "
            f"{missing} in gen_vision_config.params."
        )
    codebook = int(_need(gvp, "gen_vision_config", "image_token_size"))
    code_dim = int(_need(gvp, "gen_vision_config", "n_embed"))

    gap = _sub(cfg, "gen_aligner_config")
    ghp = _sub(cfg, "gen_head_config")
    if gap.get("projector_type", "mlp_gelu") != "mlp_gelu":
        raise JanusR1Error(f"gen_aligner_config.projector_type {gap['projector_type']!r} is not supported.")
    if int(gap.get("input_dim", code_dim)) != code_dim:
        raise JanusR1Error(
            f"gen_aligner_config.input_dim {gap['input_dim']} differs from gen_vision_config.n_embed {code_dim}."
        )
    gen_d = int(_need(gap, "gen_aligner_config", "n_embed"))
    head_mid = int(_need(ghp, "gen_head_config", "image_token_embed"))
    # transformers uses one ``projection_dim`` for the gen aligner output and the gen head's hidden width.
    if head_mid != gen_d:
        raise JanusR1Error(
            f"gen_head_config.image_token_embed ({head_mid}) differs from gen_aligner_config.n_embed ({gen_d}); "
            "transformers' Janus classes need them equal."
        )
    if int(ghp.get("image_token_size", codebook)) != codebook:
        raise JanusR1Error(
            f"gen_head_config.image_token_size {ghp['image_token_size']} differs from "
            f"gen_vision_config.image_token_size {codebook}."
        )
    vq = JanusVQVAEConfig(
        embed_dim=code_dim,
        num_embeddings=codebook,
        latent_channels=int(vgeo["z_channels"]),
        base_channels=int(vgeo["base_channels"]),
        channel_multiplier=[int(c) for c in vgeo["ch_mult"]],
        num_res_blocks=int(vgeo["num_res_blocks"]),
        projection_dim=gen_d,
        num_hidden_layers=int(gap.get("depth", 2)),
        image_token_embed_dim=int(_need(ghp, "gen_head_config", "n_embed")),
        num_patches=image_size // patch,
    )

    kwargs: dict = dict(text_config=text, vision_config=vision, vq_config=vq, tie_word_embeddings=False)
    if image_token_id is not None:
        kwargs["image_token_id"] = int(image_token_id)
    out = JanusConfig(**kwargs)
    out.tie_word_embeddings = False
    out.text_config.tie_word_embeddings = False
    return out


def _check_fixed(cfg, fixed: Mapping, what: str) -> None:
    bad = {k: getattr(cfg, k) for k, v in fixed.items() if getattr(cfg, k, v) != v}
    if bad:
        raise JanusR1Error(
            f"{what} has settings the DeepSeek layout cannot express: {bad} (expected {dict(fixed)})."
        )


def _dtype_name(dtype) -> str:
    """``torch.bfloat16`` / ``"bfloat16"`` -> ``"bfloat16"``; unknown -> ``"float32"`` (what an unset config means)."""
    if dtype is None:
        return "float32"
    return str(dtype).removeprefix("torch.")


def deepseek_config_from_janus(cfg: JanusConfig) -> dict:
    """The DeepSeek ``multi_modality`` config.json dict for a transformers ``JanusConfig`` (inverse of the above).

    Used to write tiny DeepSeek-layout directories. Geometry that differs from the named SigLIP / VQ-16 defaults is
    written as explicit extra keys in ``params`` (which DeepSeek's own code ignores), so the result round-trips
    through :func:`janus_config_from_deepseek` to an equivalent config, and a real-size config looks like the
    shipped one.
    """
    text, vision, vq = cfg.text_config, cfg.vision_config, cfg.vq_config
    _check_fixed(vision, _FIXED_VISION, "vision_config")
    _check_fixed(vq, _FIXED_VQ, "vq_config")
    dtype_name = _dtype_name(getattr(cfg, "dtype", None) or getattr(text, "dtype", None))

    rope = dict(getattr(text, "rope_parameters", None) or {})
    if rope.get("rope_type", "default") != "default":
        raise JanusR1Error(f"text_config rope_parameters {rope} cannot be written in the DeepSeek layout.")
    lang: dict = dict(
        vocab_size=text.vocab_size,
        hidden_size=text.hidden_size,
        intermediate_size=text.intermediate_size,
        num_hidden_layers=text.num_hidden_layers,
        num_attention_heads=text.num_attention_heads,
        num_key_value_heads=text.num_key_value_heads,
        hidden_act=text.hidden_act,
        max_position_embeddings=text.max_position_embeddings,
        rms_norm_eps=text.rms_norm_eps,
        rope_theta=float(rope.get("rope_theta", 10000.0)),
        attention_bias=bool(text.attention_bias),
        mlp_bias=bool(getattr(text, "mlp_bias", False)),
        model_type="llama",
        torch_dtype=dtype_name,
    )
    head_dim = getattr(text, "head_dim", None)
    if head_dim is not None and head_dim != text.hidden_size // text.num_attention_heads:
        lang["head_dim"] = head_dim

    table = SIGLIP_GEOMETRIES[DEFAULT_SIGLIP]
    geo = dict(
        width=vision.hidden_size,
        layers=vision.num_hidden_layers,
        heads=vision.num_attention_heads,
        patch_size=vision.patch_size,
        mlp_ratio=float(vision.mlp_ratio),
        image_size=vision.image_size,
    )
    vparams: dict = dict(
        image_size=vision.image_size, model_name=DEFAULT_SIGLIP, select_feature="same", select_layer=-1
    )
    vparams.update({k: v for k, v in geo.items() if table.get(k) != v})

    vq_table = VQ_GEOMETRIES[DEFAULT_VQ]
    vgeo = dict(
        base_channels=vq.base_channels,
        z_channels=vq.latent_channels,
        ch_mult=[int(c) for c in vq.channel_multiplier],
        num_res_blocks=vq.num_res_blocks,
    )
    gvparams: dict = dict(image_token_size=vq.num_embeddings, n_embed=vq.embed_dim)
    gvparams.update({k: v for k, v in vgeo.items() if vq_table.get(k) != v})

    return {
        "architectures": ["MultiModalityCausalLM"],
        "model_type": "multi_modality",
        "torch_dtype": dtype_name,
        "language_config": lang,
        "vision_config": {"cls": "CLIPVisionTower", "model_type": "vision", "params": vparams},
        "aligner_config": {
            "cls": "MlpProjector",
            "model_type": "aligner",
            "params": dict(
                projector_type="mlp_gelu",
                depth=vision.depth,
                input_dim=vision.hidden_size,
                n_embed=vision.projection_dim,
            ),
        },
        "gen_vision_config": {"cls": DEFAULT_VQ, "model_type": "gen_vision", "params": gvparams},
        "gen_aligner_config": {
            "cls": "MlpProjector",
            "model_type": "gen_aligner",
            "params": dict(
                projector_type="mlp_gelu",
                depth=vq.num_hidden_layers,
                input_dim=vq.embed_dim,
                n_embed=vq.projection_dim,
            ),
        },
        "gen_head_config": {
            "cls": "vision_head",
            "model_type": "gen_head",
            "params": dict(
                n_embed=vq.image_token_embed_dim,
                image_token_embed=vq.projection_dim,
                image_token_size=vq.num_embeddings,
            ),
        },
    }


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


_VT = r"^vision_model\.vision_tower\."
_VL = "model.vision_model.encoder.layers"
_WB = r"(weight|bias)$"

# Ordered: the first matching rule wins. A key that matches none is an unexpected key.
DEEPSEEK_TO_JANUS_RULES: tuple[_Rule, ...] = (
    # LLM
    _r(r"^language_model\.model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$", op="drop"),  # old 4.x buffer
    _r(r"^language_model\.model\.(.+)$", r"model.language_model.\1"),
    _r(r"^language_model\.lm_head\.(.+)$", r"lm_head.\1"),
    # SigLIP tower (timm names)
    _r(_VT + r"pos_embed$", "model.vision_model.embeddings.position_embedding.weight", "squeeze0"),
    _r(_VT + r"patch_embed\.proj\." + _WB, r"model.vision_model.embeddings.patch_embedding.\1"),
    _r(_VT + r"blocks\.(\d+)\.norm([12])\." + _WB, _VL + r".\1.layer_norm\2.\3"),
    _r(_VT + r"blocks\.(\d+)\.attn\.qkv\." + _WB, _VL + r".\1.self_attn.{}_proj.\2", "split_qkv"),
    _r(_VT + r"blocks\.(\d+)\.attn\.proj\." + _WB, _VL + r".\1.self_attn.projection_layer.\2"),
    _r(_VT + r"blocks\.(\d+)\.mlp\.(fc[12])\." + _WB, _VL + r".\1.mlp.\2.\3"),
    _r(_VT + r"norm\." + _WB, r"model.vision_model.post_layernorm.\1"),
    _r(_VT + r"attn_pool\..+$", op="drop"),  # MAP head; DeepSeek runs the tower with ignore_head=True
    # aligners (understanding and generation)
    _r(r"^aligner\.layers\.0\." + _WB, r"model.aligner.fc1.\1"),
    _r(r"^aligner\.layers\.([1-9]\d*[02468]|[2468])\." + _WB, _mlp_index("model.aligner")),
    _r(r"^gen_aligner\.layers\.0\." + _WB, r"model.generation_aligner.fc1.\1"),
    _r(r"^gen_aligner\.layers\.([1-9]\d*[02468]|[2468])\." + _WB, _mlp_index("model.generation_aligner")),
    # generation head and embedding
    _r(r"^gen_head\.output_mlp_projector\." + _WB, r"model.generation_head.proj_out.\1"),
    _r(r"^gen_head\.vision_head\." + _WB, r"model.generation_head.vision_head.\1"),
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
        r"^gen_vision_model\.(encoder|decoder)\.(conv_in|norm_out|conv_out)\." + _WB,
        r"model.vqmodel.\1.\2.\3",
    ),
    _r(r"^gen_vision_model\.(quant_conv|post_quant_conv)\." + _WB, r"model.vqmodel.\1.\2"),
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

_TVL = r"^model\.vision_model\.encoder\.layers\.(\d+)\."
_VTO = "vision_model.vision_tower."


def _inv_mlp_index(prefix: str) -> Callable[[re.Match], str]:
    def repl(m: re.Match) -> str:
        return f"{prefix}.layers.{2 * (int(m[1]) + 1)}.{m[2]}"

    return repl


JANUS_TO_DEEPSEEK_RULES: tuple[_Rule, ...] = (
    _r(r"^model\.language_model\.(.+)$", r"language_model.model.\1"),
    _r(r"^lm_head\.(.+)$", r"language_model.lm_head.\1"),
    _r(r"^model\.vision_model\.embeddings\.position_embedding\.weight$", _VTO + "pos_embed", "unsqueeze0"),
    _r(r"^model\.vision_model\.embeddings\.patch_embedding\." + _WB, _VTO + r"patch_embed.proj.\1"),
    _r(_TVL + r"layer_norm([12])\." + _WB, _VTO + r"blocks.\1.norm\2.\3"),
    _r(_TVL + r"self_attn\.([qkv])_proj\." + _WB, _VTO + r"blocks.\1.attn.qkv.\3", "merge_qkv"),
    _r(_TVL + r"self_attn\.projection_layer\." + _WB, _VTO + r"blocks.\1.attn.proj.\2"),
    _r(_TVL + r"mlp\.(fc[12])\." + _WB, _VTO + r"blocks.\1.mlp.\2.\3"),
    _r(r"^model\.vision_model\.post_layernorm\." + _WB, _VTO + r"norm.\1"),
    _r(r"^model\.aligner\.fc1\." + _WB, r"aligner.layers.0.\1"),
    _r(r"^model\.aligner\.hidden_layers\.(\d+)\." + _WB, _inv_mlp_index("aligner")),
    _r(r"^model\.generation_aligner\.fc1\." + _WB, r"gen_aligner.layers.0.\1"),
    _r(r"^model\.generation_aligner\.hidden_layers\.(\d+)\." + _WB, _inv_mlp_index("gen_aligner")),
    _r(r"^model\.generation_head\.proj_out\." + _WB, r"gen_head.output_mlp_projector.\1"),
    _r(r"^model\.generation_head\.vision_head\." + _WB, r"gen_head.vision_head.\1"),
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
        out.update(_unused_deepseek_tensors(out))
    return out


def _unused_deepseek_tensors(ds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's AttentionPoolLatent (MAP head) and LlamaGen's codebook usage buffer, shaped like the real ones."""
    pos = ds[_VTO + "pos_embed"]
    width, dtype = pos.shape[-1], pos.dtype
    hidden = (
        ds[_VTO + "blocks.0.mlp.fc1.weight"].shape[0] if _VTO + "blocks.0.mlp.fc1.weight" in ds else 4 * width
    )
    gen = torch.Generator().manual_seed(1234)

    def rnd(*shape: int) -> torch.Tensor:
        return (0.02 * torch.randn(shape, generator=gen)).to(dtype)

    ap = _VTO + "attn_pool."
    return {
        ap + "latent": rnd(1, 1, width),
        ap + "q.weight": rnd(width, width),
        ap + "q.bias": rnd(width),
        ap + "kv.weight": rnd(2 * width, width),
        ap + "kv.bias": rnd(2 * width),
        ap + "proj.weight": rnd(width, width),
        ap + "proj.bias": rnd(width),
        ap + "norm.weight": torch.ones(width, dtype=dtype),
        ap + "norm.bias": torch.zeros(width, dtype=dtype),
        ap + "mlp.fc1.weight": rnd(hidden, width),
        ap + "mlp.fc1.bias": rnd(hidden),
        ap + "mlp.fc2.weight": rnd(width, hidden),
        ap + "mlp.fc2.bias": rnd(width),
        "gen_vision_model.quantize.codebook_used": torch.zeros(65536, dtype=dtype),
    }


# --------------------------------------------------------------------------------------------------------------
# Shards
# --------------------------------------------------------------------------------------------------------------

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
BIN_INDEX = "pytorch_model.bin.index.json"
BIN_SINGLE = "pytorch_model.bin"
_SHARD_GLOBS = ("model-*-of-*.safetensors", "pytorch_model-*-of-*.bin")


def _index_files(model_dir: Path, index_name: str) -> list[Path]:
    index = model_dir / index_name
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        weight_map = data["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise JanusR1Error(
            f"Cannot read the shard index {index}: {e}. It needs a 'weight_map' object."
        ) from e
    files = [model_dir / n for n in names]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise JanusR1Error(
            f"{index} lists shard(s) that are not in {model_dir}: {missing[:5]}. The download is incomplete; "
            "fetch the missing files again."
        )
    return files


def weight_files(model_dir: str | Path) -> list[Path]:
    """The checkpoint's weight files in load order, from the index when there is one.

    Preference: safetensors (index, then single file) before pickled ``.bin`` (index, then single file), like
    transformers. Unindexed ``model-0000i-of-0000n`` shards are accepted too, sorted by name.
    """
    d = Path(model_dir)
    if (d / SAFETENSORS_INDEX).is_file():
        return _index_files(d, SAFETENSORS_INDEX)
    if (d / SAFETENSORS_SINGLE).is_file():
        return [d / SAFETENSORS_SINGLE]
    if (d / BIN_INDEX).is_file():
        return _index_files(d, BIN_INDEX)
    if (d / BIN_SINGLE).is_file():
        return [d / BIN_SINGLE]
    for pattern in _SHARD_GLOBS:
        shards = sorted(d.glob(pattern))
        if shards:
            return shards
    found = sorted(p.name for p in d.iterdir()) if d.is_dir() else []
    raise JanusR1Error(
        f"No weights in {d}: expected model.safetensors, model-0000i-of-0000n.safetensors + "
        f"{SAFETENSORS_INDEX}, pytorch_model.bin or pytorch_model-0000i-of-0000n.bin + {BIN_INDEX}. "
        f"Found: {found[:20]}."
    )


def read_shard(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of one weight file, without unpickling anything but tensors.

    safetensors through ``safe_open`` (mmap); ``.bin`` through ``torch.load(weights_only=True, mmap=True)`` so even
    a 10 GB pickle shard stays on disk until a tensor is touched. Any failure names the file.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:
                return {k: f.get_tensor(k) for k in f.keys()}
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            # Legacy (non-zip) torch.save format cannot be mmapped; still weights_only.
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except JanusR1Error:
        raise
    except pickle.UnpicklingError:  # torch's weights_only unpickler met a non-tensor object
        raise JanusR1Error(
            f"Refused to load weight file {path}: besides tensors it pickles Python objects, and unpickling those "
            "could run arbitrary code, so janus-r1 never does. If you trust where the file comes from, convert it "
            "to safetensors there (safetensors.torch.save_file(state_dict, 'model.safetensors')) and load that."
        ) from None
    except Exception as e:  # safetensors, zipfile and unpickler errors have no common base class
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise JanusR1Error(
            f"Cannot read weight file {path} ({type(e).__name__}: {first}). The file is corrupt or truncated, or "
            "(for .bin) pickles objects other than tensors, which are never unpickled; download it again."
        ) from e
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise JanusR1Error(f"Weight file {path} does not hold a flat {{name: tensor}} state dict.")
    return dict(obj)


def iter_deepseek_shards(model_dir: str | Path) -> Iterator[dict[str, torch.Tensor]]:
    """Yield the raw (DeepSeek-named) tensors one weight file at a time, never the whole checkpoint at once."""
    for path in weight_files(model_dir):
        yield read_shard(path)
