"""The context recipes (spec §2.2-§2.6), shared by inference (`tasks`, `introspect`) and training (SFT, GRPO).

Each returns one row of :class:`~janus_r1.generation.context.Piece` s; ``context.build`` turns rows into
embeddings and ``context.cfg_rows`` adds the unconditional twins. Training teacher-forces exactly these rows, so a
recipe changed here changes inference and training together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..errors import JanusR1Error
from ..model.vocabulary import ASSISTANT, BOI, EDIT_PREFIX, EOI, IMAGE_PLACEHOLDER, USER
from .context import Embeds, Piece, Text
from .trace import Judgement

if TYPE_CHECKING:  # annotations only: facade imports this module
    from .facade import Janus

History = list[tuple[torch.Tensor, Judgement]]  # (embeddings of an earlier image, its judgement), oldest first


def prompt_piece(ids: list[int]) -> Text:
    """The caption prompt; its uncond twin keeps BOS and the final <begin_of_image>, PAD in between."""
    return Text(ids, drop=(1, len(ids) - 1))


def _rounds(j: Janus, history: History) -> list[Piece]:
    """(IMG_k SELF_CHECK R_k REGEN_TRIGGER)* -- every earlier attempt with its critique."""
    v, row = j.vocab, []
    for emb, jd in history:
        row += [Embeds(emb), Text(v.self_check_ids), Text(jd.ids, jd.mask), Text(v.regen_trigger_ids)]
    return row


def judge_context(j: Janus, prompt_ids: list[int], history: History, current: torch.Tensor) -> list[Piece]:
    """[prompt] (IMG_k(und) SELF_CHECK R_k REGEN_TRIGGER)* IMG(und) SELF_CHECK."""
    return [Text(prompt_ids), *_rounds(j, history), Embeds(current), Text(j.vocab.self_check_ids)]


def regen_context(j: Janus, prompt_ids: list[int], history: History) -> list[Piece]:
    """[prompt (droppable)] (IMG_k(gen) SELF_CHECK R_k REGEN_TRIGGER)+ -- then image tokens follow."""
    return [prompt_piece(prompt_ids), *_rounds(j, history)]


def edit_row(j: Janus, gen_in: torch.Tensor, instruction_ids: list[int]) -> list[Piece]:
    """The editing context (§2.6): [BOS] <|User|>: <begin_of_image> IMG(gen) <end_of_image> instruction
    " Please generate an image.\n\n<|Assistant|>:<begin_of_image>"; CFG drops only the instruction."""
    v = j.vocab
    return [Text(v.encode_with_bos(EDIT_PREFIX)), Embeds(gen_in), Text([v.ids.eoi]),
            Text(instruction_ids, drop=(0, len(instruction_ids))), Text(v.edit_suffix_ids)]


def critique_judgement(j: Janus, critique: str) -> Judgement:
    """A caller's critique as the reflection of a "No" verdict (the model's own reflections start that way)."""
    text = critique.strip()
    if not text:
        raise JanusR1Error("critique is empty; pass None to let the model write its own.")
    if not text.lower().startswith("no"):
        text = "No, " + text
    ids = j.vocab.encode_continuation(text) + [j.vocab.ids.eos]
    return Judgement("No", None, text, ids, [1] * (len(ids) - 1) + [0])


# --- asking about images (Janus's understanding side, sft_format "deepseek" as DeepSeek's VLChatProcessor) ------

# The processor's default system prompt: used for understanding (never for generation or self-evaluation, spec §6).
ASK_SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the "
    "user provides, and assist the user with a variety of tasks using natural language."
)
RESERVED = (IMAGE_PLACEHOLDER, BOI, EOI)  # tag strings the tokenizer would read as image tokens


def ask_prompt(question: str, n_images: int) -> str:
    """The chat string of one question about ``n_images`` images: system prompt, the user turn
    ``"<image_placeholder>\n" * n + question`` (DeepSeek's understanding example, one placeholder per image) and the
    empty assistant turn, joined as sft_format "deepseek" renders them and stripped."""
    user = IMAGE_PLACEHOLDER + "\n"
    return (ASK_SYSTEM_PROMPT + "\n\n" + USER + ": " + user * n_images + question.strip() + "\n\n" + ASSISTANT
            + ":").strip()


def ask_ids(j: Janus, question: str, n_images: int, image_tokens: int) -> list[int]:
    """The prompt ids as DeepSeek's VLChatProcessor builds them: ``[BOS] + ids`` of :func:`ask_prompt`, each
    ``<image_placeholder>`` expanded to ``<begin_of_image>`` + ``image_tokens`` placeholders + ``<end_of_image>``."""
    ids, v = [], j.vocab.ids
    for t in j.vocab.encode_with_bos(ask_prompt(question, n_images)):
        ids += [v.boi, *[v.image_placeholder] * image_tokens, v.eoi] if t == v.image_placeholder else [t]
    return ids


def ask_context(j: Janus, question: str, images: list[torch.Tensor]) -> list[Piece]:
    """:func:`ask_ids` with every run of placeholders replaced by that image's SigLIP embeddings (n, D)."""
    ids = ask_ids(j, question, len(images), j.num_image_tokens)
    row: list[Piece] = []
    start, k, ph = 0, 0, j.vocab.ids.image_placeholder
    while ph in ids[start:]:
        at = ids.index(ph, start)
        row += [Text(ids[start:at]), Embeds(images[k])]
        start, k = at + j.num_image_tokens, k + 1
    return [*row, Text(ids[start:])]
