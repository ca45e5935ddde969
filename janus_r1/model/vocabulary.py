"""Special tokens, the exact prompt strings of Janus-Pro-R1 and the id lookups checked at load time.

Every string here is byte-exact to the spec (`janus-pro-r1.md` §0, §2.0, §2.6): note the full-width bar U+FF5C
and U+2581 in BOS/EOS/PAD, and the ASCII pipes of the role tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import JanusR1Error

BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"
PAD = "<\uff5c\u2581pad\u2581\uff5c>"
BOI = "<begin_of_image>"
EOI = "<end_of_image>"
IMAGE_PLACEHOLDER = "<image_placeholder>"
USER = "<|User|>"
ASSISTANT = "<|Assistant|>"

# Additional special tokens of the Janus-Pro tokenizer (special_tokens_map.json of deepseek-ai/Janus-Pro-7B).
ADDITIONAL_SPECIAL_TOKENS = [
    IMAGE_PLACEHOLDER,
    "<patch_placeholder>",
    "<|ref|>",
    "<|/ref|>",
    "<|det|>",
    "<|/det|>",
    "<|grounding|>",
    USER,
    ASSISTANT,
]

# Continuation strings, tokenised WITHOUT BOS (§2.0). "think Does" and the three dots are intentional.
SELF_CHECK = EOI + "\nLet me think Does this image match the prompt..."
REGEN_TRIGGER = EOS + "\nNext, I will draw a new image" + BOI

# Editing template pieces (§2.6); piece 1 is tokenised with BOS, pieces 2 and 3 without special tokens.
EDIT_PREFIX = USER + ": " + BOI
EDIT_SUFFIX = " Please generate an image.\n\n" + ASSISTANT + ":" + BOI


def t2i_prompt(caption: str) -> str:
    """The text-to-image prompt of sft_format "deepseek" with an empty system prompt, ending in BOI."""
    return USER + ": " + caption.strip() + "\n\n" + ASSISTANT + ":" + BOI


@dataclass(frozen=True)
class SpecialIds:
    """Token ids resolved from the tokenizer's own vocabulary (never hard-coded: the 1B and 7B ids differ)."""

    bos: int
    eos: int
    pad: int
    boi: int
    eoi: int
    image_placeholder: int
    yes: int
    no: int


class Vocabulary:
    """A tokenizer plus its checked special ids and the encoders for every prompt piece the engine builds."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        missing = [t for t in (BOS, EOS, PAD, BOI, EOI, IMAGE_PLACEHOLDER) if t not in vocab]
        if missing:
            raise JanusR1Error(
                f"The tokenizer lacks the Janus special token(s) {missing}. Use the tokenizer.json shipped with "
                "the Janus-Pro / Janus-Pro-R1 checkpoint (or one written by `janus-r1 make-tiny`)."
            )
        with_bos = tokenizer.encode("Yes")
        if not with_bos or with_bos[0] != vocab[BOS]:
            raise JanusR1Error(
                "The tokenizer does not prepend BOS when encoding; Janus prompts need it. Check that "
                "tokenizer.json has the BOS post-processor of the Janus-Pro tokenizer."
            )
        yes, no = with_bos[-1], tokenizer.encode("No")[-1]
        if yes == no:
            raise JanusR1Error("The tokenizer maps 'Yes' and 'No' to the same id; it cannot judge images.")
        for role in (USER, ASSISTANT):
            if role not in vocab:
                raise JanusR1Error(
                    f"The tokenizer has no single token for {role!r}; Janus-Pro's chat template needs it as a "
                    "special token (see special_tokens_map.json of the checkpoint)."
                )
        self.ids = SpecialIds(
            bos=vocab[BOS],
            eos=vocab[EOS],
            pad=vocab[PAD],
            boi=vocab[BOI],
            eoi=vocab[EOI],
            image_placeholder=vocab[IMAGE_PLACEHOLDER],
            yes=yes,
            no=no,
        )
        tokenizer.pad_token = PAD
        tokenizer.padding_side = "left"
        self.self_check_ids = self.encode_continuation(SELF_CHECK)
        self.regen_trigger_ids = self.encode_continuation(REGEN_TRIGGER)
        self.edit_suffix_ids = self.encode_continuation(EDIT_SUFFIX)
        if self.self_check_ids[0] != self.ids.eoi or self.regen_trigger_ids[0] != self.ids.eos:
            raise JanusR1Error("The tokenizer splits the Janus special tokens; it is not a Janus-Pro tokenizer.")

    def encode_with_bos(self, text: str) -> list[int]:
        """Tokenise with special tokens, i.e. ``[BOS] + ids`` as the reference does."""
        return list(self.tokenizer.encode(text))

    def encode_continuation(self, text: str) -> list[int]:
        """Tokenise a continuation string without BOS (the reference encodes with BOS and drops element 0)."""
        ids = self.encode_with_bos(text)
        return ids[1:] if ids and ids[0] == self.ids.bos else ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)
