"""Byte-exact prompt strings and the token-level template checks of spec Appendix C.1."""

from __future__ import annotations

import torch

from janus_r1.generation.context import Text
from janus_r1.generation.tasks import edit_row
from janus_r1.model import vocabulary as V


def test_special_strings_are_byte_exact():
    assert V.EOS.encode("utf-8").hex(" ") == (
        "3c ef bd 9c 65 6e 64 e2 96 81 6f 66 e2 96 81 73 65 6e 74 65 6e 63 65 ef bd 9c 3e"
    )
    assert V.BOS == "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
    assert V.PAD == "<\uff5c\u2581pad\u2581\uff5c>"
    assert V.USER == "<|User|>" and V.ASSISTANT == "<|Assistant|>"
    assert V.SELF_CHECK == "<end_of_image>\nLet me think Does this image match the prompt..."
    assert V.REGEN_TRIGGER == V.EOS + "\nNext, I will draw a new image<begin_of_image>"
    assert V.t2i_prompt("  a red cat \n") == "<|User|>: a red cat\n\n<|Assistant|>:<begin_of_image>"
    assert V.EDIT_SUFFIX == " Please generate an image.\n\n<|Assistant|>:<begin_of_image>"


def test_token_level_templates(micro):
    v = micro.vocab
    ids = v.encode_with_bos(V.t2i_prompt("a red cat"))
    assert ids[0] == v.ids.bos and ids[-1] == v.ids.boi
    assert ids[1] == v.tokenizer.convert_tokens_to_ids(V.USER)
    assert v.tokenizer.convert_tokens_to_ids(V.ASSISTANT) in ids
    assert v.self_check_ids[0] == v.ids.eoi and v.ids.bos not in v.self_check_ids
    assert v.regen_trigger_ids[0] == v.ids.eos and v.regen_trigger_ids[-1] == v.ids.boi
    assert v.ids.yes == v.encode_with_bos("Yes")[-1] and v.ids.no == v.encode_with_bos("No")[-1]


def test_edit_context_is_the_spec_template_token_for_token(micro):
    """The editing row the engine builds, with its image block shown as placeholders, equals tokenising the
    spec's three template pieces (§2.6)."""
    v, n = micro.vocab, micro.num_image_tokens
    ins = v.encode_continuation("make the sky purple")
    row = edit_row(micro.janus, torch.zeros(n, micro.model.config.text_config.hidden_size), ins)
    ids = [i for p in row for i in (p.ids if isinstance(p, Text) else [v.ids.image_placeholder] * len(p))]
    spec = (v.encode_with_bos(V.EDIT_PREFIX + V.IMAGE_PLACEHOLDER * n + V.EOI)
            + v.encode_continuation("make the sky purple") + v.encode_continuation(V.EDIT_SUFFIX))
    assert ids == spec
    b, e = ids.index(v.ids.boi), ids.index(v.ids.eoi)
    assert ids[0] == v.ids.bos and ids[b + 1 : e] == [v.ids.image_placeholder] * n and ids[-1] == v.ids.boi
    # CFG drops only the instruction
    assert [p.drop for p in row if isinstance(p, Text)] == [None, None, (0, len(ins)), None]
