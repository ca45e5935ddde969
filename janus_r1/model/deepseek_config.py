"""DeepSeek ``multi_modality`` config.json <-> transformers ``JanusConfig``, both ways.

Janus-Pro-1B/7B and Janus-Pro-R1-7B ship DeepSeek's own config (``language_config``, ``vision_config``, ...
sub-configs, part of the geometry hard-coded in DeepSeek's code). The loader converts it at load time
(:func:`janus_config_from_deepseek`); the inverse (:func:`deepseek_config_from_janus`) writes tiny
DeepSeek-layout directories that look like the real ones, so the loader is tested on the layout it meets in the
wild. The tensor names are converted in :mod:`.deepseek_keys`.

References: ``transformers-janus.md`` §2 (config map) and ``janus-pro-r1.md`` §1.6 (checkpoint layout).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..errors import JanusR1Error
from .config_fields import llama_fields, need, section_params

if TYPE_CHECKING:  # transformers is imported lazily so that importing janus_r1 stays cheap
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

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


# --------------------------------------------------------------------------------------------------------------
# DeepSeek -> transformers
# --------------------------------------------------------------------------------------------------------------


_sub, _need = section_params, need


def _text_config(cfg: Mapping) -> LlamaConfig:
    """The LLM's ``LlamaConfig``, untied (Janus-Pro's lm_head is its own matrix)."""
    from transformers import LlamaConfig

    lang = cfg.get("language_config")
    if not isinstance(lang, Mapping):
        raise JanusR1Error("section 'language_config' (the LlamaConfig of the LLM) is missing or not an object.")
    lang = llama_fields(lang)  # type-checked; _attn_implementation and other bookkeeping keys dropped
    if lang.get("model_type", "llama") != "llama":
        raise JanusR1Error(
            f"field 'language_config.model_type' is {lang['model_type']!r}; only 'llama' is supported."
        )
    from transformers.activations import ACT2FN

    if lang.get("hidden_act", "silu") not in ACT2FN:
        raise JanusR1Error(f"field 'language_config.hidden_act' is {lang['hidden_act']!r}, not an activation "
                           "transformers knows (Janus-Pro uses 'silu').")
    lang["model_type"] = "llama"
    lang["tie_word_embeddings"] = False
    lang.pop("torch_dtype", None)  # the loader's dtype decides (devices.resolve_dtype checks the stored one)
    text = LlamaConfig.from_dict(lang)
    text.tie_word_embeddings = False
    return text


def _vision_config(cfg: Mapping) -> JanusVisionConfig:
    """SigLIP understanding tower + aligner: geometry from the model-name table, overridden by explicit keys."""
    from transformers import JanusVisionConfig

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
    return JanusVisionConfig(
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


def _vq_config(cfg: Mapping, num_patches: int) -> JanusVQVAEConfig:
    """VQ tokenizer + generation embedding / aligner / head, checked for the widths transformers ties together."""
    from transformers import JanusVQVAEConfig

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
    return JanusVQVAEConfig(
        embed_dim=code_dim,
        num_embeddings=codebook,
        latent_channels=int(vgeo["z_channels"]),
        base_channels=int(vgeo["base_channels"]),
        channel_multiplier=[int(c) for c in vgeo["ch_mult"]],
        num_res_blocks=int(vgeo["num_res_blocks"]),
        projection_dim=gen_d,
        num_hidden_layers=int(gap.get("depth", 2)),
        image_token_embed_dim=int(_need(ghp, "gen_head_config", "n_embed")),
        num_patches=num_patches,
    )


def janus_config_from_deepseek(cfg: dict, image_token_id: int | None, source: str = "config.json") -> JanusConfig:
    """Build a transformers ``JanusConfig`` from a DeepSeek ``multi_modality`` config.json dict.

    ``tie_word_embeddings`` is forced off at the top level *and* in the text config: Janus-Pro's ``lm_head`` is
    separate, and a tied model would silently overwrite ``embed_tokens`` with ``lm_head`` during a manual
    ``load_state_dict`` (transformers-janus.md §7 item 1). ``image_token_id`` comes from the tokenizer (the 1B and
    7B ids differ); ``None`` keeps transformers' default. Every error names ``source`` (the file) and the field;
    only the fields that describe the network are read (see :mod:`.config_fields`), so a config re-serialised by
    a later transformers (the R1 release: ``_attn_implementation: "flash_attention_2"`` and friends) builds the same
    model as the original.
    """
    from transformers import JanusConfig

    if not isinstance(cfg, Mapping):
        raise JanusR1Error(f"{source} must hold a JSON object, found {type(cfg).__name__}.")
    try:
        text = _text_config(cfg)
        vision = _vision_config(cfg)
        vq = _vq_config(cfg, vision.image_size // vision.patch_size)
        kwargs: dict = dict(text_config=text, vision_config=vision, vq_config=vq, tie_word_embeddings=False)
        if image_token_id is not None:
            kwargs["image_token_id"] = int(image_token_id)
        out = JanusConfig(**kwargs)
    except JanusR1Error as e:  # one line naming the file and the field
        raise JanusR1Error(f"{source}: {e}") from None
    except (ValueError, TypeError, KeyError, ZeroDivisionError) as e:  # a value transformers rejects
        raise JanusR1Error(f"{source}: a value transformers cannot use: {type(e).__name__}: {e}") from None
    out.tie_word_embeddings = False
    out.text_config.tie_word_embeddings = False
    return out


# --------------------------------------------------------------------------------------------------------------
# transformers -> DeepSeek (for writing tiny DeepSeek-layout directories)
# --------------------------------------------------------------------------------------------------------------


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


def _language_params(text, dtype_name: str) -> dict:
    """``language_config``: DeepSeek stores the LlamaConfig flat, with the default rope only."""
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
    return lang


def _vision_params(vision) -> dict:
    """``vision_config.params``: the SigLIP name, plus explicit keys wherever the geometry differs from it."""
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
    return vparams


def _gen_vision_params(vq) -> dict:
    """``gen_vision_config.params``: codebook size and width, plus explicit keys where VQ-16's geometry differs."""
    vq_table = VQ_GEOMETRIES[DEFAULT_VQ]
    vgeo = dict(
        base_channels=vq.base_channels,
        z_channels=vq.latent_channels,
        ch_mult=[int(c) for c in vq.channel_multiplier],
        num_res_blocks=vq.num_res_blocks,
    )
    gvparams: dict = dict(image_token_size=vq.num_embeddings, n_embed=vq.embed_dim)
    gvparams.update({k: v for k, v in vgeo.items() if vq_table.get(k) != v})
    return gvparams


def _section(cls: str, model_type: str, params: dict) -> dict:
    return {"cls": cls, "model_type": model_type, "params": params}


def _projector(depth: int, input_dim: int, n_embed: int) -> dict:
    return dict(projector_type="mlp_gelu", depth=depth, input_dim=input_dim, n_embed=n_embed)


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
    head = dict(
        n_embed=vq.image_token_embed_dim, image_token_embed=vq.projection_dim, image_token_size=vq.num_embeddings
    )
    return {
        "architectures": ["MultiModalityCausalLM"],
        "model_type": "multi_modality",
        "torch_dtype": dtype_name,
        "language_config": _language_params(text, dtype_name),
        "vision_config": _section("CLIPVisionTower", "vision", _vision_params(vision)),
        "aligner_config": _section(
            "MlpProjector", "aligner", _projector(vision.depth, vision.hidden_size, vision.projection_dim)
        ),
        "gen_vision_config": _section(DEFAULT_VQ, "gen_vision", _gen_vision_params(vq)),
        "gen_aligner_config": _section(
            "MlpProjector", "gen_aligner", _projector(vq.num_hidden_layers, vq.embed_dim, vq.projection_dim)
        ),
        "gen_head_config": _section("vision_head", "gen_head", head),
    }
