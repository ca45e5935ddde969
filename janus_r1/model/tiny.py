"""Tiny random Janus models and an offline tiny tokenizer, for tests, benchmarks and demos without weights.

A tiny model draws noise: it has the real topology (SigLIP tower, VQ-16 with five levels, LLaMA, both heads) with
random weights, so every code path runs and every weight is exercised, but nothing it makes means anything.

Geometries:
  * ``micro``: 64 px images, 16 image tokens (4x4), LLM width 32 -- most tests.
  * ``real``: 384 px images, 576 image tokens (24x24), LLM width 128 -- the real token count, for one
    end-to-end test and the benchmarks.
"""

from __future__ import annotations

import math

import torch

from .vocabulary import ADDITIONAL_SPECIAL_TOKENS, BOI, BOS, EOI, EOS, PAD

TOKENIZER_VOCAB = 512

_CORPUS = [
    "a red cat sitting on a blue chair",
    "Yes, the image matches the prompt.",
    "No, the image does not match the prompt. Reason: the dog is missing.",
    "a photo of two green apples and a yellow banana on a wooden table",
    "Let me think Does this image match the prompt...",
    "Next, I will draw a new image",
    "Please generate an image. Make the sky purple and add a moon.",
    "an astronaut riding a horse in a field of flowers, oil painting",
    "The colour, shape, texture and spatial relation of the objects are correct.",
    "Yes No Yes No wait nice the image shows a",
]

GEOMETRIES: dict[str, dict] = {
    "micro": dict(
        image_size=64,
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
        vision=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2),
        vq=dict(base_channels=32, latent_channels=32, num_embeddings=64, embed_dim=8, num_res_blocks=1),
    ),
    "real": dict(
        image_size=384,
        text=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4),
        vision=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4),
        vq=dict(base_channels=32, latent_channels=64, num_embeddings=1024, embed_dim=8, num_res_blocks=2),
    ),
}


def build_tiny_tokenizer(corpus: list[str] | None = None):
    """A byte-level BPE tokenizer with every Janus special token, trained in-process (no network) on ``corpus``
    (default: a few sentences of the tests' prompts and answers)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [BOS, EOS, PAD, BOI, EOI, *ADDITIONAL_SPECIAL_TOKENS]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB - len(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((corpus or _CORPUS) * 4, trainer=trainer)
    tok.add_special_tokens(specials)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        padding_side="left",
        additional_special_tokens=ADDITIONAL_SPECIAL_TOKENS,
        model_max_length=16384,
        clean_up_tokenization_spaces=False,
    )
    return fast


def tiny_config(geometry: str = "micro", vocab_size: int = TOKENIZER_VOCAB, image_token_id: int | None = None):
    """A transformers ``JanusConfig`` of the given tiny geometry (untied lm_head, as in Janus-Pro)."""
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    if geometry not in GEOMETRIES:
        raise ValueError(f"unknown geometry {geometry!r}; choose one of {sorted(GEOMETRIES)}")
    g = GEOMETRIES[geometry]
    d = g["text"]["hidden_size"]
    n_tokens = (g["image_size"] // 16) ** 2
    text = LlamaConfig(
        vocab_size=vocab_size,
        max_position_embeddings=16384,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        **g["text"],
    )
    vision = JanusVisionConfig(
        image_size=g["image_size"],
        patch_size=16,
        mlp_ratio=4.0,
        projection_dim=d,
        num_image_tokens=n_tokens,
        **g["vision"],
    )
    vq = JanusVQVAEConfig(
        channel_multiplier=[1, 1, 2, 2, 4],
        projection_dim=d,
        image_token_embed_dim=d,
        num_patches=g["image_size"] // 16,
        **g["vq"],
    )
    kwargs = dict(text_config=text, vision_config=vision, vq_config=vq, tie_word_embeddings=False)
    if image_token_id is not None:
        kwargs["image_token_id"] = image_token_id
    return JanusConfig(**kwargs)


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter (norms and biases included) a seeded random value so equality tests see them all."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if p.ndim == 1 and ("norm" in name or name.endswith("layernorm.weight")) and name.endswith("weight"):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
        elif p.ndim == 1:
            p.copy_(0.05 * torch.randn(p.shape, generator=gen))
        else:
            fan_in = p[0].numel() if p.ndim > 1 else p.numel()
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(max(fan_in, 1)))
    return model


def build_tiny_model(geometry: str = "micro", seed: int = 0, tokenizer=None):
    """A random ``JanusForConditionalGeneration`` in eval mode plus the tokenizer it goes with."""
    from transformers import JanusForConditionalGeneration

    tokenizer = tokenizer or build_tiny_tokenizer()
    cfg = tiny_config(
        geometry,
        vocab_size=len(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<image_placeholder>"),
    )
    model = JanusForConditionalGeneration(cfg)
    randomize_(model, seed)
    return model.eval(), tokenizer
