"""Checkpoint loading in both layouts, the DeepSeek key/config conversion and tiny model directories.

Everything runs on CPU with the micro geometry. The same seeded weights are written in every layout and format and
must load to bit-identical models; the DeepSeek key map is also checked numerically against small functional
re-statements of DeepSeek's SigLIP and VQ-16 forward passes (janus-pro-r1.md §1.3-§1.4), written against DeepSeek
tensor names, so a consistently wrong forward+inverse map (e.g. reversed decoder levels) cannot pass.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from janus_r1.errors import JanusR1Error
from janus_r1.model.deepseek_config import deepseek_config_from_janus, janus_config_from_deepseek
from janus_r1.model.deepseek_keys import convert_deepseek_state_dict, janus_state_dict_to_deepseek
from janus_r1.model.directory import detect_layout, load_tokenizer
from janus_r1.model.loading import load_model
from janus_r1.model.shards import iter_deepseek_shards
from janus_r1.model.sources import resolve_model_dir
from janus_r1.model.tiny import build_tiny_model
from janus_r1.model.tiny_files import write_tiny
from janus_r1.model.vocabulary import t2i_prompt

SEED = 0
VARIANTS = {
    "deepseek-safetensors-1": dict(layout="deepseek", weights="safetensors", shards=1),
    "deepseek-safetensors-3": dict(layout="deepseek", weights="safetensors", shards=3),
    "deepseek-bin-1": dict(layout="deepseek", weights="bin", shards=1),
    "deepseek-bin-2": dict(layout="deepseek", weights="bin", shards=2),
    "transformers-safetensors-1": dict(layout="transformers", weights="safetensors", shards=1),
    "transformers-bin-1": dict(layout="transformers", weights="bin", shards=1),
}


@pytest.fixture(scope="module")
def ref():
    model, tok = build_tiny_model("micro", SEED)
    return model, tok


@pytest.fixture(scope="module")
def ref_outputs(ref) -> dict[str, torch.Tensor]:
    return _outputs(*ref)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {name: write_tiny(root / name, geometry="micro", seed=SEED, **kw) for name, kw in VARIANTS.items()}


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def _load(path, **kw):
    kw.setdefault("device", "cpu")
    kw.setdefault("progress", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(str(path), **kw)


def _image_features(model, pixels: torch.Tensor) -> torch.Tensor:
    """SigLIP + aligner features; transformers 5 wraps them in an output object, 4.5x returns the tensor."""
    out = model.model.get_image_features(pixels)
    return out if isinstance(out, torch.Tensor) else out.pooler_output


# Same weights loaded from different files are bit-identical (asserted on the state dicts); their forward passes
# are compared within a tolerance far below any real difference, because a torch build may pick a different
# kernel for differently aligned (mmapped) storage -- torch 2.14.1 does, by a few ulp, in the generation head.
CLOSE = dict(rtol=1e-5, atol=1e-6)


@torch.no_grad()
def _outputs(model, tok, vq: bool = True) -> dict[str, torch.Tensor]:
    """Every head of the model on fixed inputs: text logits, image-token logits, VQ decode, SigLIP features."""
    ids = torch.tensor([tok.encode(t2i_prompt("a red cat on a blue chair"))])
    n = model.config.vision_config.num_image_tokens
    codes = torch.randint(
        0, model.config.vq_config.num_embeddings, (1, n), generator=torch.Generator().manual_seed(1)
    )
    size = model.config.vision_config.image_size
    pixels = torch.rand((1, 3, size, size), generator=torch.Generator().manual_seed(2)) * 2 - 1
    text_logits = model(input_ids=ids).logits
    embeds = torch.cat(
        [model.get_input_embeddings()(ids), model.prepare_embeddings_for_image_generation(codes[:1, :3])],
        dim=1,
    )
    hidden = model.model.language_model(inputs_embeds=embeds).last_hidden_state
    out = {
        "text_logits": text_logits,
        "gen_logits": model.model.generation_head(hidden[:, -1]),
        "image_features": _image_features(model, pixels),
    }
    if vq:  # the slowest part on CPU (convolutions at full resolution)
        out["vq_decode"] = model.model.vqmodel.decode(codes)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Same weights, every layout and format
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_layout_loads_the_same_model(variant, dirs, ref, ref_outputs):
    ref_model = ref[0]
    model, vocab = _load(dirs[variant], dtype="auto")
    assert detect_layout(dirs[variant]) == VARIANTS[variant]["layout"]

    sd, ref_sd = model.state_dict(), ref_model.state_dict()
    assert sorted(sd) == sorted(ref_sd)
    for key in ref_sd:
        assert sd[key].dtype == torch.float32, key
        assert torch.equal(sd[key], ref_sd[key]), key
    assert not any(p.is_meta for p in model.parameters())
    for (name, buf), (ref_name, ref_buf) in zip(model.named_buffers(), ref_model.named_buffers()):
        assert name == ref_name and torch.equal(buf, ref_buf), name
    assert not model.training
    assert model.config.image_token_id == vocab.ids.image_placeholder == ref_model.config.image_token_id

    got, want = _outputs(model, vocab.tokenizer), ref_outputs
    for name in want:
        assert got[name].shape == want[name].shape, name
        torch.testing.assert_close(got[name], want[name], **CLOSE, msg=name)


def test_deepseek_and_transformers_layouts_agree_in_bf16(dirs):
    a, vocab = _load(dirs["deepseek-safetensors-3"], dtype="bf16")
    b, _ = _load(dirs["transformers-safetensors-1"], dtype="bf16")
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sb)
    oa, ob = _outputs(a, vocab.tokenizer, vq=False), _outputs(b, vocab.tokenizer, vq=False)
    for name in oa:
        assert torch.equal(oa[name], ob[name]), name


def test_lm_head_is_not_tied_to_embeddings(dirs, ref):
    ref_model, _ = ref
    for variant in ("deepseek-safetensors-1", "transformers-safetensors-1"):
        model, _ = _load(dirs[variant])
        emb = model.model.language_model.embed_tokens.weight
        head = model.lm_head.weight
        assert emb.data_ptr() != head.data_ptr()
        assert not torch.equal(emb, head)
        # the tie trap would overwrite the embedding table with lm_head: it must still be the checkpoint's own
        assert torch.equal(emb, ref_model.model.language_model.embed_tokens.weight)
        assert torch.equal(head, ref_model.lm_head.weight)
        assert model.config.tie_word_embeddings is False
        assert model.config.text_config.tie_word_embeddings is False


# ---------------------------------------------------------------------------------------------------------------
# Key map
# ---------------------------------------------------------------------------------------------------------------


def test_key_round_trip_and_deepseek_names(ref):
    model, _ = ref
    sd = model.state_dict()
    ds = janus_state_dict_to_deepseek(sd)
    width = model.config.vision_config.hidden_size
    n_pos = model.config.vision_config.num_image_tokens

    assert "gen_vision_model.quantize.codebook_used" in ds
    assert any(k.startswith("vision_model.vision_tower.attn_pool.") for k in ds)
    assert list(ds["vision_model.vision_tower.blocks.0.attn.qkv.weight"].shape) == [3 * width, width]
    assert list(ds["vision_model.vision_tower.blocks.0.attn.qkv.bias"].shape) == [3 * width]
    assert list(ds["vision_model.vision_tower.pos_embed"].shape) == [1, n_pos, width]
    assert not any(k.startswith("model.") or (k.startswith("vision_model.") and "_proj." in k) for k in ds)
    for key in (
        "language_model.model.embed_tokens.weight",
        "language_model.lm_head.weight",
        "aligner.layers.2.weight",
        "gen_aligner.layers.0.bias",
        "gen_head.output_mlp_projector.weight",
        "gen_head.vision_head.bias",
        "gen_embed.weight",
        "gen_vision_model.decoder.conv_blocks.0.attn.0.q.weight",
        "gen_vision_model.decoder.conv_blocks.0.upsample.conv.weight",
        "gen_vision_model.encoder.conv_blocks.4.attn.0.proj_out.weight",
        "gen_vision_model.encoder.mid.1.norm.weight",
        "gen_vision_model.quantize.embedding.weight",
    ):
        assert key in ds, key

    back, unmapped = convert_deepseek_state_dict(ds)
    assert unmapped == []
    assert sorted(back) == sorted(sd)
    for key in sd:
        assert torch.equal(back[key], sd[key]), key

    _, unmapped = convert_deepseek_state_dict({"vision_model.vision_tower.extra.weight": torch.zeros(1)})
    assert unmapped == ["vision_model.vision_tower.extra.weight"]


def test_real_geometry_deepseek_key_layout():
    """At the real VQ-16 topology the written names match the released checkpoint's (janus-pro-r1.md §1.6)."""
    model, _ = build_tiny_model("real", SEED)
    ds = janus_state_dict_to_deepseek(model.state_dict())
    assert len(ds) == 420 and len(model.state_dict()) == 414

    def modules(prefix: str) -> set[str]:
        return {k[len(prefix) :].rsplit(".", 3)[0] for k in ds if k.startswith(prefix) and ".attn." in k}

    assert modules("gen_vision_model.encoder.conv_blocks.") == {"4.attn"}
    assert modules("gen_vision_model.decoder.conv_blocks.") == {"0.attn"}
    assert {k.split(".")[5] for k in ds if k.startswith("gen_vision_model.decoder.conv_blocks.0.res.")} == {
        "0",
        "1",
        "2",
    }
    assert {k.split(".")[5] for k in ds if k.startswith("gen_vision_model.encoder.conv_blocks.4.attn.")} == {
        "0",
        "1",
    }
    ups = {int(k.split(".")[3]) for k in ds if ".upsample." in k}
    downs = {int(k.split(".")[3]) for k in ds if ".downsample." in k}
    assert ups == downs == {0, 1, 2, 3}
    # decoder level 0 is the lowest resolution (most channels), level 4 the highest: [512-style -> 128-style]
    c0 = ds["gen_vision_model.decoder.conv_blocks.0.res.0.conv1.weight"].shape[0]
    c4 = ds["gen_vision_model.decoder.conv_blocks.4.res.0.conv1.weight"].shape[0]
    assert c0 == 4 * c4


# Functional restatements of DeepSeek's modules from the spec, reading DeepSeek tensor names directly.


def _gn(x, sd, p):
    return F.group_norm(x, 32, sd[p + ".weight"], sd[p + ".bias"], eps=1e-6)


def _conv(x, sd, p, stride=1, padding=None):
    w = sd[p + ".weight"]
    return F.conv2d(
        x, w, sd[p + ".bias"], stride=stride, padding=w.shape[-1] // 2 if padding is None else padding
    )


def _swish(x):
    return x * torch.sigmoid(x)


def _res(x, sd, p):
    h = _conv(_swish(_gn(x, sd, p + ".norm1")), sd, p + ".conv1")
    h = _conv(_swish(_gn(h, sd, p + ".norm2")), sd, p + ".conv2")
    if p + ".nin_shortcut.weight" in sd:
        x = _conv(x, sd, p + ".nin_shortcut")
    return x + h


def _attn(x, sd, p):
    h = _gn(x, sd, p + ".norm")
    q, k, v = (_conv(h, sd, f"{p}.{n}") for n in "qkv")
    b, c, hh, ww = q.shape
    w_ = torch.softmax(torch.bmm(q.reshape(b, c, -1).permute(0, 2, 1), k.reshape(b, c, -1)) * c**-0.5, dim=2)
    h = torch.bmm(v.reshape(b, c, -1), w_.permute(0, 2, 1)).reshape(b, c, hh, ww)
    return x + _conv(h, sd, p + ".proj_out")


def _count(sd, prefix, leaf):
    n = 0
    while f"{prefix}.{n}.{leaf}" in sd:
        n += 1
    return n


def _ds_level(x, sd, p):
    n_attn = _count(sd, p + ".attn", "norm.weight")
    for i in range(_count(sd, p + ".res", "norm1.weight")):
        x = _res(x, sd, f"{p}.res.{i}")
        if n_attn:
            x = _attn(x, sd, f"{p}.attn.{i}")
    return x


def _ds_mid(x, sd, p):
    return _res(_attn(_res(x, sd, p + ".0"), sd, p + ".1"), sd, p + ".2")


def _ds_vq_decode(sd, codes, grid):
    g = "gen_vision_model."
    z = F.normalize(sd[g + "quantize.embedding.weight"][codes], dim=-1)
    z = z.reshape(codes.shape[0], grid, grid, -1).permute(0, 3, 1, 2)
    x = _ds_mid(_conv(_conv(z, sd, g + "post_quant_conv"), sd, g + "decoder.conv_in"), sd, g + "decoder.mid")
    for level in range(_count(sd, g + "decoder.conv_blocks", "res.0.norm1.weight")):
        p = f"{g}decoder.conv_blocks.{level}"
        x = _ds_level(x, sd, p)
        if p + ".upsample.conv.weight" in sd:
            x = _conv(F.interpolate(x, scale_factor=2.0, mode="nearest"), sd, p + ".upsample.conv")
    return _conv(_swish(_gn(x, sd, g + "decoder.norm_out")), sd, g + "decoder.conv_out")


def _ds_vq_encode_latent(sd, pixels):
    g = "gen_vision_model."
    x = _conv(pixels, sd, g + "encoder.conv_in")
    for level in range(_count(sd, g + "encoder.conv_blocks", "res.0.norm1.weight")):
        p = f"{g}encoder.conv_blocks.{level}"
        x = _ds_level(x, sd, p)
        if p + ".downsample.conv.weight" in sd:
            x = _conv(F.pad(x, (0, 1, 0, 1)), sd, p + ".downsample.conv", stride=2, padding=0)
    x = _ds_mid(x, sd, g + "encoder.mid")
    x = _conv(_swish(_gn(x, sd, g + "encoder.norm_out")), sd, g + "encoder.conv_out")
    return _conv(x, sd, g + "quant_conv")


def _ds_siglip_aligner(sd, pixels, heads):
    t = "vision_model.vision_tower."
    x = _conv(
        pixels, sd, t + "patch_embed.proj", stride=sd[t + "patch_embed.proj.weight"].shape[-1], padding=0
    )
    x = x.flatten(2).transpose(1, 2) + sd[t + "pos_embed"]
    b, n, w = x.shape
    for i in range(_count(sd, t + "blocks", "norm1.weight")):
        p = f"{t}blocks.{i}."
        h = F.layer_norm(x, (w,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(h, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(b, n, 3, heads, w // heads).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-2, -1) * (w // heads) ** -0.5, dim=-1) @ v
        x = x + F.linear(
            a.transpose(1, 2).reshape(b, n, w), sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"]
        )
        h = F.layer_norm(x, (w,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        h = F.linear(
            F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])), sd[p + "mlp.fc2.weight"]
        )
        x = x + h + sd[p + "mlp.fc2.bias"]
    x = F.layer_norm(x, (w,), sd[t + "norm.weight"], sd[t + "norm.bias"], eps=1e-6)
    x = F.linear(x, sd["aligner.layers.0.weight"], sd["aligner.layers.0.bias"])
    return F.linear(F.gelu(x), sd["aligner.layers.2.weight"], sd["aligner.layers.2.bias"])


@torch.no_grad()
def test_key_map_matches_deepseek_semantics_numerically(dirs, ref):
    """Decoder level order, qkv split and aligner indices checked against DeepSeek-named functional forwards."""
    model, _ = _load(dirs["deepseek-safetensors-1"])
    ds = load_file(str(dirs["deepseek-safetensors-1"] / "model.safetensors"))
    cfg = model.config
    grid = cfg.vision_config.image_size // cfg.vision_config.patch_size
    codes = torch.randint(
        0, cfg.vq_config.num_embeddings, (1, grid * grid), generator=torch.Generator().manual_seed(3)
    )
    size = cfg.vision_config.image_size
    pixels = torch.rand((1, 3, size, size), generator=torch.Generator().manual_seed(4)) * 2 - 1

    want = _ds_vq_decode(ds, codes, grid)
    got = model.model.vqmodel.decode(codes)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)

    vq = model.model.vqmodel
    torch.testing.assert_close(
        vq.quant_conv(vq.encoder(pixels)), _ds_vq_encode_latent(ds, pixels), rtol=1e-4, atol=1e-5
    )

    feats = _image_features(model, pixels)
    torch.testing.assert_close(
        feats, _ds_siglip_aligner(ds, pixels, cfg.vision_config.num_attention_heads), rtol=1e-4, atol=1e-5
    )


def test_iter_deepseek_shards_yields_each_shard(dirs, ref):
    shards = list(iter_deepseek_shards(dirs["deepseek-safetensors-3"]))
    assert len(shards) == 3 and all(shards)
    keys = [k for s in shards for k in s]
    assert len(keys) == len(set(keys))
    assert set(keys) == set(janus_state_dict_to_deepseek(ref[0].state_dict()))
    index = json.loads((dirs["deepseek-safetensors-3"] / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(keys)
    bins = list(iter_deepseek_shards(dirs["deepseek-bin-2"]))
    assert len(bins) == 2 and {k for s in bins for k in s} == set(keys)


# ---------------------------------------------------------------------------------------------------------------
# Config map
# ---------------------------------------------------------------------------------------------------------------

_SKIP = {"dtype", "torch_dtype", "transformers_version"}  # 4.5x spells it torch_dtype


@pytest.mark.parametrize("geometry", ["micro", "real"])
def test_config_round_trip(geometry):
    from janus_r1.model.tiny import tiny_config

    cfg = tiny_config(geometry, image_token_id=7)
    ds = deepseek_config_from_janus(cfg)
    assert ds["model_type"] == "multi_modality"
    back = janus_config_from_deepseek(json.loads(json.dumps(ds)), 7)
    for sub in ("text_config", "vision_config", "vq_config"):
        a = {k: v for k, v in getattr(cfg, sub).to_dict().items() if k not in _SKIP}
        b = {k: v for k, v in getattr(back, sub).to_dict().items() if k not in _SKIP}
        assert a == b, sub
    assert back.image_token_id == 7
    assert back.tie_word_embeddings is False and back.text_config.tie_word_embeddings is False


def test_config_of_the_released_7b_layout():
    """config.json as shipped by deepseek-ai/Janus-Pro-7B (language_config holds only five keys)."""
    cfg = {
        "architectures": ["MultiModalityCausalLM"],
        "model_type": "multi_modality",
        "torch_dtype": "bfloat16",
        "language_config": {
            "max_position_embeddings": 16384,
            "model_type": "llama",
            "num_hidden_layers": 30,
            "torch_dtype": "bfloat16",
            "vocab_size": 102400,
        },
        "vision_config": {
            "cls": "CLIPVisionTower",
            "model_type": "vision",
            "params": {
                "image_size": 384,
                "model_name": "siglip_large_patch16_384",
                "select_feature": "same",
                "select_layer": -1,
            },
        },
        "aligner_config": {
            "cls": "MlpProjector",
            "model_type": "aligner",
            "params": {"depth": 2, "input_dim": 1024, "n_embed": 4096, "projector_type": "mlp_gelu"},
        },
        "gen_vision_config": {
            "cls": "VQ-16",
            "model_type": "gen_vision",
            "params": {"image_token_size": 16384, "n_embed": 8},
        },
        "gen_aligner_config": {
            "cls": "MlpProjector",
            "model_type": "gen_aligner",
            "params": {"depth": 2, "input_dim": 8, "n_embed": 4096, "projector_type": "mlp_gelu"},
        },
        "gen_head_config": {
            "cls": "vision_head",
            "model_type": "gen_head",
            "params": {"image_token_embed": 4096, "image_token_size": 16384, "n_embed": 4096},
        },
    }
    c = janus_config_from_deepseek(cfg, 100581)
    t, v, q = c.text_config, c.vision_config, c.vq_config
    assert (t.hidden_size, t.intermediate_size, t.num_attention_heads, t.num_key_value_heads) == (
        4096,
        11008,
        32,
        32,
    )
    assert (t.num_hidden_layers, t.vocab_size, t.max_position_embeddings, t.rms_norm_eps) == (
        30,
        102400,
        16384,
        1e-6,
    )
    assert c.tie_word_embeddings is False and t.tie_word_embeddings is False
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.patch_size, v.image_size) == (
        1024,
        24,
        16,
        16,
        384,
    )
    assert (v.mlp_ratio, v.projection_dim, v.depth, v.num_image_tokens) == (4.0, 4096, 2, 576)
    assert (q.num_embeddings, q.embed_dim, q.base_channels, q.latent_channels) == (16384, 8, 128, 256)
    assert (list(q.channel_multiplier), q.num_res_blocks, q.num_patches) == ([1, 1, 2, 2, 4], 2, 24)
    assert (q.projection_dim, q.image_token_embed_dim, q.num_hidden_layers) == (4096, 4096, 2)
    assert c.image_token_id == 100581

    bad = json.loads(json.dumps(cfg))
    bad["vision_config"]["params"]["model_name"] = "siglip_huge_patch99"
    with pytest.raises(JanusR1Error, match="siglip_huge_patch99"):
        janus_config_from_deepseek(bad, None)


# ---------------------------------------------------------------------------------------------------------------
# Strictness
# ---------------------------------------------------------------------------------------------------------------


def test_unexpected_key_is_fatal(dirs, tmp_path):
    d = _copy(dirs["deepseek-safetensors-1"], tmp_path)
    sd = load_file(str(d / "model.safetensors"))
    sd["vision_model.vision_tower.blocks.0.attn.extra_gate"] = torch.zeros(3)
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(JanusR1Error, match=r"vision_model\.vision_tower\.blocks\.0\.attn\.extra_gate"):
        _load(d)


def test_mapped_key_outside_the_model_is_fatal(dirs, tmp_path):
    d = _copy(dirs["deepseek-safetensors-1"], tmp_path)
    sd = load_file(str(d / "model.safetensors"))
    sd["language_model.model.layers.7.mlp.up_proj.weight"] = torch.zeros(64, 32)  # the micro LLM has 2 layers
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(JanusR1Error, match=r"language_model\.model\.layers\.7\.mlp\.up_proj\.weight"):
        _load(d)


@pytest.mark.parametrize(
    "key", ["language_model.lm_head.weight", "gen_vision_model.decoder.conv_blocks.0.attn.0.q.bias"]
)
def test_missing_key_is_fatal(dirs, tmp_path, key):
    d = _copy(dirs["deepseek-safetensors-1"], tmp_path)
    sd = load_file(str(d / "model.safetensors"))
    del sd[key]
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(JanusR1Error, match="lacks 1 tensor") as err:
        _load(d)
    assert key in str(err.value)


def test_missing_key_in_transformers_layout_is_fatal(dirs, tmp_path):
    d = _copy(dirs["transformers-safetensors-1"], tmp_path)
    sd = load_file(str(d / "model.safetensors"))
    del sd["lm_head.weight"]
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(JanusR1Error, match=r"missing keys: lm_head\.weight"):
        _load(d)


def test_shape_mismatch_is_fatal(dirs, tmp_path):
    d = _copy(dirs["deepseek-safetensors-1"], tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["language_config"]["intermediate_size"] = 96
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(JanusR1Error, match=r"shape .*config.json does not match"):
        _load(d)


def test_bad_directories_give_useful_errors(dirs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(JanusR1Error, match="does not exist"):
        _load(tmp_path / "nowhere")
    with pytest.raises(JanusR1Error, match="does not exist"):
        resolve_model_dir("./not/here/at/all")

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(JanusR1Error, match="No config.json"):
        _load(empty)

    bert = _copy(dirs["deepseek-safetensors-1"], tmp_path / "b")
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(JanusR1Error, match=r"'bert'.*multi_modality"):
        detect_layout(bert)
    (bert / "config.json").write_text("{not json")
    with pytest.raises(JanusR1Error, match="JSON"):
        _load(bert)

    notok = _copy(dirs["deepseek-safetensors-1"], tmp_path / "t")
    (notok / "tokenizer.json").unlink()
    with pytest.raises(JanusR1Error, match="tokenizer.json"):
        _load(notok)
    with pytest.raises(JanusR1Error, match="tokenizer.json"):
        load_tokenizer(notok)

    noweights = _copy(dirs["deepseek-safetensors-1"], tmp_path / "w")
    (noweights / "model.safetensors").unlink()
    with pytest.raises(JanusR1Error, match="No weights"):
        _load(noweights)


@pytest.mark.parametrize(
    "variant,name",
    [
        ("deepseek-safetensors-1", "model.safetensors"),
        ("deepseek-safetensors-3", "model-00002-of-00003.safetensors"),
        ("deepseek-bin-1", "pytorch_model.bin"),
        ("transformers-safetensors-1", "model.safetensors"),
        ("transformers-bin-1", "pytorch_model.bin"),
    ],
)
def test_corrupt_weights_name_the_file(dirs, tmp_path, variant, name):
    d = _copy(dirs[variant], tmp_path)
    f = d / name
    data = f.read_bytes()
    if name.endswith(".bin"):
        f.write_bytes(b"this is not a pickle" * 100)
    else:
        f.write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(JanusR1Error, match=name.replace(".", r"\.")):
        _load(d)


def test_offline_unknown_repo_fails_fast(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    start = time.monotonic()
    with pytest.raises(JanusR1Error, match="not found locally and HF_HUB_OFFLINE=1") as err:
        load_model("nobody/not-a-model", device="cpu", progress=False)
    assert time.monotonic() - start < 10
    assert "nobody/not-a-model" in str(err.value) and "local" in str(err.value)


def test_tiny_random_is_written_once_and_warns(tmp_path, monkeypatch):
    monkeypatch.setenv("JANUS_R1_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="NOISE"):
        d = resolve_model_dir("tiny-random")
    assert d == tmp_path / "cache" / "tiny-random" and detect_layout(d) == "deepseek"
    stamp = (d / "model.safetensors").stat().st_mtime_ns
    with pytest.warns(UserWarning, match="NOISE"):
        model, vocab = load_model("tiny-random", device="cpu", progress=False)
    assert (d / "model.safetensors").stat().st_mtime_ns == stamp
    assert model.config.vision_config.num_image_tokens == 16
    assert not [p for p in d.parent.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------------------------------------------------------
# dtype, device, pickles
# ---------------------------------------------------------------------------------------------------------------


def test_dtypes(dirs):
    d = dirs["deepseek-safetensors-1"]
    model, _ = _load(d, dtype="bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.model.language_model.rotary_emb.inv_freq.dtype == torch.float32
    model, _ = _load(d, dtype="float32")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    model, _ = _load(dirs["transformers-safetensors-1"], dtype=torch.float16)
    assert {p.dtype for p in model.parameters()} == {torch.float16}
    with pytest.raises(JanusR1Error, match="nonsense"):
        _load(d, dtype="nonsense")
    with pytest.raises(JanusR1Error, match="device"):
        _load(d, device="warp-drive")


def test_auto_dtype_follows_the_checkpoint(dirs, tmp_path):
    d = _copy(dirs["deepseek-bin-1"], tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["torch_dtype"] = "bfloat16"
    (d / "config.json").write_text(json.dumps(cfg))
    model, _ = _load(d, dtype="auto")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_no_unpickling_without_weights_only(dirs, monkeypatch):
    real_load = torch.load
    calls = []

    def guarded(*args, **kwargs):
        assert kwargs.get("weights_only") is True, f"torch.load called without weights_only=True: {kwargs}"
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", guarded)
    for variant in ("deepseek-bin-1", "deepseek-bin-2", "transformers-bin-1"):
        _load(dirs[variant])
    assert len(calls) >= 4
    assert all(c.get("mmap") for c in calls[:3])


# ---------------------------------------------------------------------------------------------------------------
# Tiny directories
# ---------------------------------------------------------------------------------------------------------------


def test_deepseek_directory_looks_like_the_release(dirs):
    d = dirs["deepseek-safetensors-1"]
    names = set(os.listdir(d))
    assert {
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "processor_config.json",
        "preprocessor_config.json",
        "README.md",
        "model.safetensors",
    } <= names
    assert json.loads((d / "tokenizer_config.json").read_text())["pad_token"] is None
    assert "noise" in (d / "README.md").read_text()
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["model_type"] == "multi_modality" and cfg["torch_dtype"] == "float32"
    with safe_open(str(d / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert "gen_vision_model.quantize.codebook_used" in keys
    vocab = load_tokenizer(d)
    assert vocab.tokenizer.pad_token == "<\uff5c\u2581pad\u2581\uff5c>"


def test_write_tiny_is_atomic(tmp_path, monkeypatch):
    import janus_r1.model.tiny_files as tf

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tf, "_write_weights", boom)
    with pytest.raises(OSError, match="disk full"):
        write_tiny(tmp_path / "m")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()

    out = write_tiny(tmp_path / "m", layout="transformers")
    with pytest.raises(JanusR1Error, match="already exists"):
        write_tiny(out)
    write_tiny(out, overwrite=True)
    assert detect_layout(out) == "deepseek"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
