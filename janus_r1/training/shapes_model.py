"""A small Janus of the real architecture for the shapes world (:mod:`.shapes`), with a VQ model made for it.

Why: a random VQ decodes any code to noise, so nothing a model draws could be judged. Here the VQ-16 model (the
real topology: five-level encoder / decoder, attention, l2-normalised codebook) is set by hand so that a cell's
code is its colour and decoding draws it back exactly (:mod:`.shapes_vq`). SigLIP stays frozen (as in every stage
of the paper) and is set by hand too (:func:`build_flat_encoder`) so that it reads the cells: a random tower passes
almost nothing of the image through. The language model, heads, aligners and generation embeddings are random:
they are what pre-training, SFT and GRPO train.

This module is the *pre-training* side of ``bench/learns.py`` (and the learning test): building the tokenizer,
setting the VQ and the understanding path, and writing a model folder the engine loads like any other. Everything after that -- plain T2I
pre-training, ``build-data``, ``train-sft``, ``train-grpo`` -- runs through the shipped commands.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from . import shapes as W
from .shapes_vq import build_tile_vq, scene_codes

# 64 px, 16 image tokens; 4 layers, the width a parameter (the micro geometry's 32 x 2 cannot hold the world's
# rules). The understanding path (SigLIP, aligner) has the language model's width.
GEOMETRY = dict(
    image_size=W.SIZE,
    text=dict(num_hidden_layers=4, num_attention_heads=4),
    vision=dict(num_hidden_layers=1, num_attention_heads=2),
    vq=dict(base_channels=32, latent_channels=32, num_embeddings=64, embed_dim=8, num_res_blocks=1),
)
# the tests' width (fast; the verdict on empty canvases and GRPO's reward are learnt at it)
TEST_WIDTH = 64
# bench/learns.py's: at width 64, 3000 steps of text-to-image pre-training drew 2.5 % of held-out prompts right
# (colours not bound to their words); at 128, 33 % (measured, docs/training.md)
BENCH_WIDTH = 128


def corpus() -> list[str]:
    """Text the shapes tokenizer is trained on: every prompt, every reason form, the fixed template strings."""
    words = list(W.all_prompts())
    objs = [(c, s) for c in W.COLOURS for s in (*W.SHAPES, W.ODD)]
    words += [f"Yes, the image shows {p}." for p in W.all_prompts()[:24]]
    words += [f"No, the image does not match the prompt. Reason: there is no {c} {s}." for c, s in objs]
    words += [f"there are {k} {c} {W.PLURAL[s]}, not two" for c, s in objs for k in (1, 3)]
    words += [f"there is also a {c} {s}" for c, s in objs]
    words += [f"the {a[0]} {a[1]} is not left of the {b[0]} {b[1]}" for a in objs[:4] for b in objs[4:8]]
    words += ["Let me think Does this image match the prompt...", "Next, I will draw a new image",
              "Please generate an image."]
    return words



def build_tokenizer():
    from ..model.tiny import _CORPUS, build_tiny_tokenizer

    return build_tiny_tokenizer(corpus() + _CORPUS)


def shapes_config(tokenizer, width: int = TEST_WIDTH):
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    g = GEOMETRY
    d = width
    text = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=4096, rms_norm_eps=1e-6,
                       tie_word_embeddings=False, hidden_size=d, intermediate_size=4 * d, **g["text"])
    vision = JanusVisionConfig(image_size=g["image_size"], patch_size=16, mlp_ratio=4.0, projection_dim=d,
                               num_image_tokens=(g["image_size"] // 16) ** 2, hidden_size=d, **g["vision"])
    vq = JanusVQVAEConfig(channel_multiplier=[1, 1, 2, 2, 4], projection_dim=d, image_token_embed_dim=d,
                          num_patches=g["image_size"] // 16, **g["vq"])
    return JanusConfig(text_config=text, vision_config=vision, vq_config=vq, tie_word_embeddings=False,
                       image_token_id=tokenizer.convert_tokens_to_ids("<image_placeholder>"))


def _batch(rng: random.Random, n: int, max_objects: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random scenes as pixels in [-1, 1] (B, 3, 64, 64) and their codes (B, 16)."""
    xs, cs = [], []
    for _ in range(n):
        scene = W.random_scene(rng, max_objects=max_objects)
        xs.append(np.asarray(W.render(scene), dtype=np.float32) / 127.5 - 1.0)
        cs.append(scene_codes(scene))
    return torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous(), torch.tensor(cs)


@torch.no_grad()
def check_vq(vqmodel, seed: int = 1, n: int = 64) -> dict:
    """Share of cells ``encode`` gives their code, and of scenes the rule judge reads back from ``decode``."""
    from PIL import Image

    from ..generation import vq

    x, codes = _batch(random.Random(seed), n)
    got = vq.encode(vqmodel, x)
    px = ((vq.decode(vqmodel, codes) + 1) * 127.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    ok = sum(scene_codes(W.read_scene(Image.fromarray(px[k]))) == codes[k].tolist() for k in range(n))
    return {"code_acc": round(float((got == codes).float().mean()), 4), "decode_read_acc": ok / n}


def new_model(seed: int = 0, width: int = TEST_WIDTH):
    """The untrained shapes Janus and its tokenizer. The frozen SigLIP tower gets fan-in scaled random weights
    (``tiny.randomize_``): with transformers' 0.02 init its output barely depends on the image (the position
    embeddings and the final norm dominate; measured: the spread between images 3 % of the features', 16 % after)
    -- a real Janus has a trained tower there. (Not enough on its own: short Task-II runs still leave the verdict
    at chance; :func:`build_flat_encoder` sets the understanding path by hand.)"""
    from transformers import JanusForConditionalGeneration

    from ..model.tiny import randomize_

    torch.manual_seed(seed)
    tok = build_tokenizer()
    model = JanusForConditionalGeneration(shapes_config(tok, width)).eval()
    randomize_(model.model.vision_model, seed)
    return model, tok


def save_model(model, tok, out) -> Path:
    """A transformers-layout model folder (config, tokenizer, one safetensors file) the engine loads."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    return out


def build_base(out, seed: int = 0, width: int = BENCH_WIDTH) -> tuple[Path, dict]:
    """Write the untrained shapes Janus (VQ and understanding path set by hand, random language model) as a
    transformers-layout model folder."""
    model, tok = new_model(seed, width)
    build_flat_encoder(model)
    build_tile_vq(model.model.vqmodel)
    report = check_vq(model.model.vqmodel, seed + 1)
    out = save_model(model, tok, out)
    (out / "vq_check.json").write_text(json.dumps(report) + "\n")
    return out, report


CONTENT_GAIN, POSITION_GAIN = 2.0, 0.3
ANCHOR = 4.0  # two constant feature dims (+A, -A): post_layernorm's scale then hardly depends on the content


@torch.no_grad()
def build_flat_encoder(model) -> None:
    """Set the *understanding* path (SigLIP and aligner) by hand so that each image token says what its cell holds.

    Why: a real Janus is pre-trained to read images; a random, frozen SigLIP passes almost nothing through
    (measured: the Yes/No logits moved by ~1e-5 between a correct scene and an empty canvas, and Task-II SFT left
    the verdict at chance). One 16 px patch is one cell, so one linear filter bank suffices: per colour channel,
    the cell's mean offset from the ground (what tiles differ in), its top-minus-bottom and its corner mass (zero
    and proportional to the mean on a tile: kept for pictures from other sources); the position embedding adds the
    cell's row and column (one-hot, and the column as a number for "left of"). The transformer blocks are identities (attention and MLP outputs zeroed: the residual passes),
    post_layernorm keeps the features (two constant anchor dims fix its scale) and the aligner (trainable, as in
    the paper) starts as a near-linear map (GELU in its linear range)."""
    vm, al = model.model.vision_model, model.model.aligner
    d = vm.config.hidden_size
    conv = vm.embeddings.patch_embedding
    conv.weight.zero_()
    conv.bias.zero_()
    p = conv.kernel_size[0]
    yy, xx = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    h = p // 2
    corner = ((yy < 5) | (yy >= p - 5)) & ((xx < 5) | (xx >= p - 5))
    masks = [torch.ones(p, p), (yy < h).float() - (yy >= h).float(), corner.float()]
    bg = torch.tensor(W.BACKGROUND, dtype=torch.float32) / 127.5 - 1.0
    k = 16
    for m in masks:
        m = 2.0 * m / (p * p) * (p * p / m.abs().sum())  # the mean over the filter's support, doubled
        for ch in range(3):
            conv.weight[k, ch] = m
            conv.bias[k] = -(m.sum() * bg[ch])
            k += 1
    conv.bias[d - 2], conv.bias[d - 1] = ANCHOR, -ANCHOR
    pos = vm.embeddings.position_embedding.weight
    pos.zero_()
    g = int(round(pos.shape[0] ** 0.5))
    for i in range(pos.shape[0]):
        r, c = divmod(i, g)
        pos[i, r], pos[i, g + c], pos[i, 2 * g] = 1.0, 1.0, c - (g - 1) / 2
    for layer in vm.encoder.layers:
        for lin in (layer.self_attn.projection_layer, layer.mlp.fc2):
            lin.weight.zero_()
            lin.bias.zero_()
    vm.post_layernorm.weight.fill_(1.0)
    vm.post_layernorm.bias.zero_()
    # aligner: content features loud, positions quiet, anchors dropped, a constant "ground" dim -- so that after
    # the language model's RMSNorm an occupied cell's token points elsewhere than an empty one's
    shift = 3.0
    gain = torch.zeros(d)
    gain[16:k], gain[:2 * g + 1] = CONTENT_GAIN, POSITION_GAIN
    al.fc1.weight.copy_(torch.eye(d))
    al.fc1.bias.fill_(shift)
    for lin in al.hidden_layers:
        lin.weight.copy_(torch.diag(gain))
        lin.bias.copy_(-gain * shift)
        lin.bias[k] = 1.0
