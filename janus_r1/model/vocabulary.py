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
    """A tokenizer plus its checked special ids and the encoders for every prompt piece the engine builds.

    Prompt ids never depend on the tokenizer's post-processor: DeepSeek's ``LlamaTokenizerFast`` (transformers 4.x)
    inserted BOS itself whatever ``tokenizer.json`` said, so the released ``tokenizer.json`` may lack a BOS
    template, and on transformers 5.x no class adds it then. Every piece is therefore encoded with
    ``add_special_tokens=False`` and BOS is prepended here, once, when ``add_bos`` (``add_bos_token`` of
    ``tokenizer_config.json``, default on as in DeepSeek's processor) says so -- never zero by accident, never two.
    """

    def __init__(self, tokenizer, add_bos: bool = True) -> None:
        self.tokenizer = tokenizer
        self.add_bos = bool(add_bos)
        vocab = tokenizer.get_vocab()
        missing = [t for t in (BOS, EOS, PAD, BOI, EOI, IMAGE_PLACEHOLDER) if t not in vocab]
        if missing:
            raise JanusR1Error(
                f"The tokenizer lacks the Janus special token(s) {missing}. Use the tokenizer.json shipped with "
                "the Janus-Pro / Janus-Pro-R1 checkpoint (or one written by `janus-r1 make-tiny`)."
            )
        self._bos = vocab[BOS]
        yes_ids, no_ids = self.encode_continuation("Yes"), self.encode_continuation("No")
        if not yes_ids or not no_ids:
            raise JanusR1Error("The tokenizer encodes 'Yes' or 'No' to nothing; it cannot judge images.")
        yes, no = yes_ids[-1], no_ids[-1]
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
        """A prompt that starts a sequence: ``[BOS] + ids`` (no BOS only if ``add_bos_token`` is false)."""
        return ([self._bos] if self.add_bos else []) + self.encode_continuation(text)

    def encode_continuation(self, text: str) -> list[int]:
        """Tokenise a continuation string without any special token added (the reference encodes with BOS and
        drops element 0, which is the same ids)."""
        ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        while ids and ids[0] == self._bos and not text.startswith(BOS):  # a tokenizer that ignores the flag
            ids = ids[1:]
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)
