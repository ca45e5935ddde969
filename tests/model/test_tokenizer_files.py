"""The released tokenizer must load, whatever its tokenizer.json post-processor says (issue 15 §1).

DeepSeek's checkpoints name ``LlamaTokenizerFast`` with ``add_bos_token: true``; with transformers 4.x that class
added BOS itself, so the released ``tokenizer.json`` may have no BOS template, and on 5.x nothing adds it then.
Every cell of the matrix (post-processor with/without BOS x ``add_bos_token`` true/false/absent x
``tokenizer_class`` LlamaTokenizerFast/LlamaTokenizer/absent) must give the ids DeepSeek's processor builds:
BOS + template (no BOS when ``add_bos_token`` is false), checked against the raw ``tokenizers`` library as the
oracle. Malformed tokenizer files give one error naming the file and the field.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from janus_r1.errors import JanusR1Error
from janus_r1.generation import templates
from janus_r1.model.directory import load_tokenizer
from janus_r1.model.tiny import build_tiny_tokenizer
from janus_r1.model.vocabulary import (
    ADDITIONAL_SPECIAL_TOKENS,
    BOS,
    EDIT_PREFIX,
    EDIT_SUFFIX,
    EOS,
    PAD,
    REGEN_TRIGGER,
    SELF_CHECK,
    t2i_prompt,
)

CAPTIONS = ["a red cat sitting on a blue chair", "  two green apples\n", "Yes No"]
ABSENT = "absent"


def write_tokenizer_dir(out: Path, post_processor: bool, add_bos, tokenizer_class) -> Path:
    """A tokenizer folder shaped like the released one (tokenizer.json, tokenizer_config.json,
    special_tokens_map.json), with or without the BOS post-processor."""
    out.mkdir(parents=True, exist_ok=True)
    build_tiny_tokenizer().save_pretrained(str(out))
    tj = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    if not post_processor:
        tj["post_processor"] = None
    (out / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    tc = {"bos_token": BOS, "eos_token": EOS, "pad_token": None, "model_max_length": 16384,
          "clean_up_tokenization_spaces": False, "legacy": True, "unk_token": None,
          "use_default_system_prompt": False}
    if add_bos != ABSENT:
        tc["add_bos_token"] = add_bos
        tc["add_eos_token"] = False
    if tokenizer_class != ABSENT:
        tc["tokenizer_class"] = tokenizer_class
    (out / "tokenizer_config.json").write_text(json.dumps(tc, ensure_ascii=False), encoding="utf-8")
    stm = {"additional_special_tokens": list(ADDITIONAL_SPECIAL_TOKENS), "bos_token": BOS, "eos_token": EOS,
           "pad_token": PAD}
    (out / "special_tokens_map.json").write_text(json.dumps(stm, ensure_ascii=False), encoding="utf-8")
    return out


def _raw(d: Path):
    """The oracle: the ``tokenizers`` library on tokenizer.json, no special tokens added."""
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    return lambda text: tok.encode(text, add_special_tokens=False).ids, tok.token_to_id(BOS)


MATRIX = list(itertools.product([True, False], [True, False, ABSENT],
                                ["LlamaTokenizerFast", "LlamaTokenizer", ABSENT]))


@pytest.mark.parametrize("post_processor, add_bos, tokenizer_class", MATRIX,
                         ids=[f"pp={p}-bos={b}-cls={c}" for p, b, c in MATRIX])
def test_prompt_ids_are_bos_plus_template_in_every_cell(tmp_path, post_processor, add_bos, tokenizer_class):
    d = write_tokenizer_dir(tmp_path / "tok", post_processor, add_bos, tokenizer_class)
    vocab = load_tokenizer(d)
    raw, bos = _raw(d)
    lead = [] if add_bos is False else [bos]
    assert vocab.add_bos is (add_bos is not False) and vocab.ids.bos == bos

    class J:  # what templates read from the facade
        pass

    j = J()
    j.vocab = vocab
    for caption in CAPTIONS:
        t2i = vocab.encode_with_bos(t2i_prompt(caption))
        assert t2i == lead + raw(t2i_prompt(caption))  # text-to-image prompt
        assert t2i.count(bos) == len(lead)  # never two BOS
        judge = [i for p in templates.judge_context(j, t2i, [], None)[:1] for i in p.ids]
        assert judge == lead + raw(t2i_prompt(caption))  # the judge context opens with the same prompt
        crit = templates.critique_judgement(j, "No, the cat is blue.")
        assert crit.ids == raw("No, the cat is blue.") + [vocab.ids.eos]
    assert vocab.self_check_ids == raw(SELF_CHECK)  # judge continuation
    assert vocab.regen_trigger_ids == raw(REGEN_TRIGGER)  # regeneration trigger
    assert vocab.encode_with_bos(EDIT_PREFIX) == lead + raw(EDIT_PREFIX)  # editing, piece 1
    assert vocab.edit_suffix_ids == raw(EDIT_SUFFIX)  # editing, piece 3
    assert vocab.ids.yes == raw("Yes")[-1] and vocab.ids.no == raw("No")[-1]


def test_released_tokenizer_gives_the_same_ids_as_the_tiny_one(tmp_path):
    """Without the post-processor the ids equal the in-memory tokenizer's (which has one): outputs unchanged."""
    from janus_r1.model.vocabulary import Vocabulary

    ref = Vocabulary(build_tiny_tokenizer())
    got = load_tokenizer(write_tokenizer_dir(tmp_path / "t", False, True, "LlamaTokenizerFast"))
    for caption in CAPTIONS:
        assert got.encode_with_bos(t2i_prompt(caption)) == ref.encode_with_bos(t2i_prompt(caption))
    assert (got.ids, got.self_check_ids, got.regen_trigger_ids, got.edit_suffix_ids) == (
        ref.ids, ref.self_check_ids, ref.regen_trigger_ids, ref.edit_suffix_ids)


def _break(d: Path, name: str, edit) -> None:
    p = d / name
    obj = json.loads(p.read_text(encoding="utf-8"))
    edit(obj)
    p.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")


BAD_FILES = [
    ("tokenizer_config.json", lambda o: o.update(add_bos_token="yes"),
     ["tokenizer_config.json", "'add_bos_token'", "str"]),
    ("tokenizer_config.json", lambda o: o.update(tokenizer_class=7), ["tokenizer_config.json", "'tokenizer_class'"]),
    ("special_tokens_map.json", lambda o: o.update(pad_token=3), ["special_tokens_map.json", "'pad_token'"]),
    ("tokenizer.json", lambda o: o.pop("model"), ["tokenizer.json", "'model'"]),
    ("tokenizer.json", lambda o: o.update(added_tokens="none"), ["tokenizer.json", "'added_tokens'"]),
]


@pytest.mark.parametrize("name, edit, fragments", BAD_FILES, ids=[f"{i}-{c[0]}" for i, c in enumerate(BAD_FILES)])
def test_malformed_tokenizer_files_name_the_file_and_field(tmp_path, name, edit, fragments):
    d = write_tokenizer_dir(tmp_path / "tok", False, True, "LlamaTokenizerFast")
    _break(d, name, edit)
    with pytest.raises(JanusR1Error) as err:
        load_tokenizer(d)
    assert all(f in str(err.value) for f in fragments), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["tokenizer_config.json", "tokenizer.json", "special_tokens_map.json"])
def test_tokenizer_file_that_is_not_json_is_named(tmp_path, name):
    d = write_tokenizer_dir(tmp_path / "tok", False, True, ABSENT)
    (d / name).write_text("{not json", encoding="utf-8")
    with pytest.raises(JanusR1Error, match=name.replace(".", r"\.")):
        load_tokenizer(d)


@pytest.mark.parametrize("add_bos", [True, False])
def test_saved_again_the_tokenizer_keeps_its_bos_setting(tmp_path, add_bos):
    """Training exports save ``vocab.tokenizer``: the re-saved folder must build the same prompt ids."""
    vocab = load_tokenizer(write_tokenizer_dir(tmp_path / "a", False, add_bos, "LlamaTokenizerFast"))
    vocab.tokenizer.save_pretrained(str(tmp_path / "b"))
    again = load_tokenizer(tmp_path / "b")
    assert again.add_bos is add_bos
    assert again.encode_with_bos(t2i_prompt(CAPTIONS[0])) == vocab.encode_with_bos(t2i_prompt(CAPTIONS[0]))
