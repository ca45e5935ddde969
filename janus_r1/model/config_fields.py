"""Field-by-field checks of a config.json before transformers sees it, so a bad value is one clear error.

transformers builds whatever it is given: ``"hidden_size": "4096"`` ends in a ``TypeError`` deep inside
``nn.Linear``, ``"_attn_implementation": "flash_attention_2"`` (what transformers 4.50 wrote into the R1 config)
in an ImportError on any machine without flash-attn. Here each field the loader reads is checked for its type and
named (``language_config.hidden_size``) in the error; bookkeeping keys that only describe how a config was saved
are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import JanusR1Error

# The LlamaConfig fields that describe the network. Everything else in a re-serialised language_config (generation
# defaults, ``_attn_implementation*``, ``architectures``, ``id2label``, ``transformers_version``, ...) is how a
# transformers version saved it, not what the weights are, and is dropped.
LLAMA_FIELDS: dict[str, tuple[type, ...]] = {
    "vocab_size": (int,),
    "hidden_size": (int,),
    "intermediate_size": (int,),
    "num_hidden_layers": (int,),
    "num_attention_heads": (int,),
    "num_key_value_heads": (int, type(None)),
    "head_dim": (int, type(None)),
    "max_position_embeddings": (int,),
    "rms_norm_eps": (float, int),
    "rope_theta": (float, int),
    "rope_scaling": (dict, type(None)),
    "hidden_act": (str,),
    "attention_bias": (bool,),
    "attention_dropout": (float, int),
    "mlp_bias": (bool,),
    "model_type": (str,),
    "torch_dtype": (str, type(None)),
}

# Per section of the DeepSeek layout: the ``params`` the converter reads and their types.
PARAM_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "vision_config": {
        "image_size": (int,), "model_name": (str,), "select_layer": (int,), "select_feature": (str,),
        "width": (int,), "layers": (int,), "heads": (int,), "patch_size": (int,), "mlp_ratio": (float, int),
    },
    "aligner_config": {"depth": (int,), "input_dim": (int,), "n_embed": (int,), "projector_type": (str,)},
    "gen_vision_config": {
        "image_token_size": (int,), "n_embed": (int,), "base_channels": (int,), "z_channels": (int,),
        "ch_mult": (list,), "num_res_blocks": (int,),
    },
    "gen_aligner_config": {"depth": (int,), "input_dim": (int,), "n_embed": (int,), "projector_type": (str,)},
    "gen_head_config": {"image_token_embed": (int,), "image_token_size": (int,), "n_embed": (int,)},
}

# transformers-layout sub-configs: the geometry fields whose type a typo can break.
JANUS_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "text_config": {k: v for k, v in LLAMA_FIELDS.items() if k != "model_type"},
    "vision_config": {
        "hidden_size": (int,), "num_hidden_layers": (int,), "num_attention_heads": (int,), "image_size": (int,),
        "patch_size": (int,), "mlp_ratio": (float, int), "projection_dim": (int,), "depth": (int,),
    },
    "vq_config": {
        "embed_dim": (int,), "num_embeddings": (int,), "latent_channels": (int,), "base_channels": (int,),
        "channel_multiplier": (list,), "num_res_blocks": (int,), "projection_dim": (int,),
        "image_token_embed_dim": (int,), "num_patches": (int,),
    },
}

_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "an object",
          list: "a list", type(None): "null"}


def check_fields(section: Mapping, where: str, fields: Mapping[str, tuple[type, ...]]) -> None:
    """Raise one error naming ``where.field`` for the first field of the wrong JSON type (bools are not ints)."""
    for key, types in fields.items():
        if key not in section:
            continue
        value = section[key]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if key in ("ch_mult", "channel_multiplier") and ok:
            ok = all(isinstance(x, int) and not isinstance(x, bool) for x in value)
        if not ok:
            want = " or ".join(dict.fromkeys(_NAMES[t] for t in types))
            raise JanusR1Error(
                f"field '{where}.{key}' must be {want}, found {type(value).__name__} {value!r}."
            )


def llama_fields(lang: Mapping) -> dict:
    """The network-describing fields of a ``language_config`` (type-checked), bookkeeping keys dropped."""
    check_fields(lang, "language_config", LLAMA_FIELDS)
    return {k: v for k, v in lang.items() if k in LLAMA_FIELDS}


def section_params(cfg: Mapping, key: str) -> dict:
    """``cfg[key]["params"]`` of a DeepSeek config, every field the converter reads type-checked."""
    sub = cfg.get(key)
    if not isinstance(sub, Mapping):
        found = "missing" if sub is None else f"a {type(sub).__name__}, not an object"
        raise JanusR1Error(
            f"section {key!r} is {found} (found keys: {sorted(cfg)}); a Janus-Pro config.json has "
            "language_config, vision_config, aligner_config, gen_vision_config, gen_aligner_config and "
            "gen_head_config."
        )
    params = sub.get("params", {})
    if not isinstance(params, Mapping):
        raise JanusR1Error(f"field '{key}.params' must be an object, found {type(params).__name__}.")
    check_fields(params, f"{key}.params", PARAM_FIELDS.get(key, {}))
    return dict(params)


def need(params: Mapping, section: str, key: str):
    """A required ``params`` field, or an error naming it."""
    if key not in params:
        raise JanusR1Error(f"field '{section}.params.{key}' is missing (found: {sorted(params)}).")
    return params[key]
