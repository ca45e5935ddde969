"""`Janus`: the loaded model and its vocabulary, with the embedding, VQ and prompt helpers every task uses."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from .. import defaults
from ..errors import JanusR1Error
from ..model.vocabulary import Vocabulary, t2i_prompt
from . import images as imgs
from . import templates, vq
from .context import Text, generation_embeds, understanding_embeds


@dataclass
class Janus:
    """The loaded model and its vocabulary: everything a task needs."""

    model: torch.nn.Module
    vocab: Vocabulary
    runner: str = "auto"  # decode runner: auto | graph | fixed | eager | dynamic (see decode.py)

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @property
    def num_image_tokens(self) -> int:
        return int(self.model.config.vision_config.num_image_tokens)

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    # --- embedding blocks (spec §2.8) -------------------------------------------------------------------
    def embed_und(self, images: list[Image.Image]) -> torch.Tensor:
        """SigLIP + aligner embeddings (B, N, D) of images the model is about to *read*."""
        return understanding_embeds(self.model, images)

    def embed_gen(self, codes: torch.Tensor) -> torch.Tensor:
        """Generation-path embeddings (B, N, D) of images the model is about to *draw after*."""
        return generation_embeds(self.model, codes)

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """VQ codes (B, N) of external images (centre crop, l2 nearest neighbour)."""
        return vq.encode(self.model.model.vqmodel, imgs.vq_pixels(images, self.image_size))

    def decode_codes(self, codes: torch.Tensor, chunk: int = 4, truncate: bool = False) -> list[Image.Image]:
        """Decode in chunks: the VQ decoder's full-resolution feature maps dominate peak memory.
        ``truncate``: 8-bit pixels by truncation, as the released scripts convert (re-encode mode only)."""
        out: list[Image.Image] = []
        for i in range(0, codes.shape[0], chunk):
            out += imgs.to_pil(vq.decode(self.model.model.vqmodel, codes[i : i + chunk]), truncate=truncate)
        return out

    # --- prompt pieces ----------------------------------------------------------------------------------
    def prompt_ids(self, prompt: str, max_tokens: int = defaults.MAX_PROMPT_TOKENS) -> list[int]:
        ids = self.vocab.encode_with_bos(t2i_prompt(prompt))
        if len(ids) > max_tokens:
            raise JanusR1Error(
                f"prompt is {len(ids)} tokens with its template, over the budget of {max_tokens}; shorten it "
                f"(the model was trained on captions within {defaults.MAX_PROMPT_TOKENS} tokens) or raise "
                "max_prompt_tokens (CLI: --max-prompt-tokens)."
            )
        return ids

    def prompt_piece(self, ids: list[int]) -> Text:
        """The caption prompt as a droppable piece (:func:`templates.prompt_piece`)."""
        return templates.prompt_piece(ids)
