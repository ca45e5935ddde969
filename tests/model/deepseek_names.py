"""Every tensor name and shape of a released DeepSeek-layout checkpoint, derived from its config.json alone.

A restatement of DeepSeek's modules (``modeling_vlm.py``: LLaMA of transformers 4.33, timm's SigLIP-L/16 with its
MAP head, ``MlpProjector`` mlp_gelu, LlamaGen's VQ-16 and ``vision_head``), written independently of the
loader's own tables, so a test can run the real names through the loader's conversion without 15 GB of weights.
Anchors: Janus-Pro-7B has 936 tensors, Janus-Pro-1B 882 (real-checkpoints.md, transformers-janus.md §2).
"""

from __future__ import annotations

# transformers 4.33's LlamaConfig defaults: what the released language_config leaves out
LLAMA_433 = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=None)
SIGLIP_L16_384 = dict(width=1024, layers=24, mlp=4096, patch=16, image=384)  # timm vit_large_patch16_siglip_384
VQ16 = dict(ch=128, ch_mult=[1, 1, 2, 2, 4], z=256, res=2)  # LlamaGen VQ_16 defaults
CODEBOOK_USED = 65536  # LlamaGen registers codebook_used as zeros(65536)

EXPECTED_DROPPED_PREFIXES = ("vision_model.vision_tower.attn_pool.", "gen_vision_model.quantize.codebook_used")


def _llm(lang: dict) -> dict[str, tuple[int, ...]]:
    g = {**LLAMA_433, **{k: v for k, v in lang.items() if k in LLAMA_433 and v is not None}}
    d, inter, heads = g["hidden_size"], g["intermediate_size"], g["num_attention_heads"]
    kv = g["num_key_value_heads"] or heads
    hd = lang.get("head_dim") or d // heads
    vocab, n = lang["vocab_size"], lang["num_hidden_layers"]
    out = {"language_model.model.embed_tokens.weight": (vocab, d), "language_model.model.norm.weight": (d,),
           "language_model.lm_head.weight": (vocab, d)}
    for i in range(n):
        p = f"language_model.model.layers.{i}."
        out.update({p + "self_attn.q_proj.weight": (heads * hd, d), p + "self_attn.k_proj.weight": (kv * hd, d),
                    p + "self_attn.v_proj.weight": (kv * hd, d), p + "self_attn.o_proj.weight": (d, heads * hd),
                    p + "mlp.gate_proj.weight": (inter, d), p + "mlp.up_proj.weight": (inter, d),
                    p + "mlp.down_proj.weight": (d, inter), p + "input_layernorm.weight": (d,),
                    p + "post_attention_layernorm.weight": (d,)})
    return out


def _lin(out: dict, name: str, o: int, i: int) -> None:
    out[name + ".weight"], out[name + ".bias"] = (o, i), (o,)


def _siglip() -> dict[str, tuple[int, ...]]:
    g, t = SIGLIP_L16_384, "vision_model.vision_tower."
    w, m, n_pos = g["width"], g["mlp"], (g["image"] // g["patch"]) ** 2
    out: dict = {t + "patch_embed.proj.weight": (w, 3, g["patch"], g["patch"]), t + "patch_embed.proj.bias": (w,),
                 t + "pos_embed": (1, n_pos, w)}
    for i in range(g["layers"]):
        b = f"{t}blocks.{i}."
        for norm in ("norm1", "norm2"):
            _lin(out, b + norm, w, 0)
            out[b + norm + ".weight"] = (w,)
        _lin(out, b + "attn.qkv", 3 * w, w)
        _lin(out, b + "attn.proj", w, w)
        _lin(out, b + "mlp.fc1", m, w)
        _lin(out, b + "mlp.fc2", w, m)
    out[t + "norm.weight"], out[t + "norm.bias"] = (w,), (w,)
    ap = t + "attn_pool."  # timm's AttentionPoolLatent (MAP head), unused by Janus
    out[ap + "latent"] = (1, 1, w)
    _lin(out, ap + "q", w, w)
    _lin(out, ap + "kv", 2 * w, w)
    _lin(out, ap + "proj", w, w)
    out[ap + "norm.weight"], out[ap + "norm.bias"] = (w,), (w,)
    _lin(out, ap + "mlp.fc1", m, w)
    _lin(out, ap + "mlp.fc2", w, m)
    return out


def _norm(out: dict, name: str, c: int) -> None:
    out[name + ".weight"], out[name + ".bias"] = (c,), (c,)


def _conv(out: dict, name: str, o: int, i: int, k: int) -> None:
    out[name + ".weight"], out[name + ".bias"] = (o, i, k, k), (o,)


def _res(out: dict, p: str, cin: int, cout: int) -> None:
    _norm(out, p + "norm1", cin)
    _conv(out, p + "conv1", cout, cin, 3)
    _norm(out, p + "norm2", cout)
    _conv(out, p + "conv2", cout, cout, 3)
    if cin != cout:
        _conv(out, p + "nin_shortcut", cout, cin, 1)


def _attn(out: dict, p: str, c: int) -> None:
    _norm(out, p + "norm", c)
    for x in ("q", "k", "v", "proj_out"):
        _conv(out, p + x, c, c, 1)


def _mid(out: dict, p: str, c: int) -> None:
    _res(out, p + "mid.0.", c, c)
    _attn(out, p + "mid.1.", c)
    _res(out, p + "mid.2.", c, c)


def _vq(codebook: int, code_dim: int) -> dict[str, tuple[int, ...]]:
    """LlamaGen's VQModel: encoder levels high->low resolution with attention at the last; decoder levels low->high
    resolution, res_blocks+1 blocks each, attention at level 0."""
    g, out = VQ16, {}
    ch, mult, z, nres = g["ch"], g["ch_mult"], g["z"], g["res"]
    e = "gen_vision_model.encoder."
    _conv(out, e + "conv_in", ch, 3, 3)
    cin = ch
    for lvl, m in enumerate(mult):
        cout = ch * m
        for r in range(nres):
            _res(out, f"{e}conv_blocks.{lvl}.res.{r}.", cin, cout)
            cin = cout
            if lvl == len(mult) - 1:
                _attn(out, f"{e}conv_blocks.{lvl}.attn.{r}.", cout)
        if lvl != len(mult) - 1:
            _conv(out, f"{e}conv_blocks.{lvl}.downsample.conv", cout, cout, 3)
    _mid(out, e, cin)
    _norm(out, e + "norm_out", cin)
    _conv(out, e + "conv_out", z, cin, 3)
    d = "gen_vision_model.decoder."
    cin = ch * mult[-1]
    _conv(out, d + "conv_in", cin, z, 3)
    _mid(out, d, cin)
    for lvl, m in enumerate(reversed(mult)):
        cout = ch * m
        for r in range(nres + 1):
            _res(out, f"{d}conv_blocks.{lvl}.res.{r}.", cin, cout)
            cin = cout
            if lvl == 0:
                _attn(out, f"{d}conv_blocks.{lvl}.attn.{r}.", cout)
        if lvl != len(mult) - 1:
            _conv(out, f"{d}conv_blocks.{lvl}.upsample.conv", cout, cout, 3)
    _norm(out, d + "norm_out", cin)
    _conv(out, d + "conv_out", 3, cin, 3)
    q = "gen_vision_model."
    _conv(out, q + "quant_conv", code_dim, z, 1)
    _conv(out, q + "post_quant_conv", z, code_dim, 1)
    out[q + "quantize.embedding.weight"] = (codebook, code_dim)
    out[q + "quantize.codebook_used"] = (CODEBOOK_USED,)
    return out


def deepseek_tensors(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the checkpoint this DeepSeek config.json describes."""
    ap, gap = cfg["aligner_config"]["params"], cfg["gen_aligner_config"]["params"]
    ghp, gvp = cfg["gen_head_config"]["params"], cfg["gen_vision_config"]["params"]
    out = {**_llm(cfg["language_config"]), **_siglip(), **_vq(gvp["image_token_size"], gvp["n_embed"])}
    _lin(out, "aligner.layers.0", ap["n_embed"], ap["input_dim"])
    _lin(out, "aligner.layers.2", ap["n_embed"], ap["n_embed"])
    _lin(out, "gen_aligner.layers.0", gap["n_embed"], gap["input_dim"])
    _lin(out, "gen_aligner.layers.2", gap["n_embed"], gap["n_embed"])
    _lin(out, "gen_head.output_mlp_projector", ghp["image_token_embed"], ghp["n_embed"])
    _lin(out, "gen_head.vision_head", ghp["image_token_size"], ghp["image_token_embed"])
    out["gen_embed.weight"] = (gvp["image_token_size"], gvp["n_embed"])
    return out
