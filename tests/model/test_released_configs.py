"""The released config.json files (Janus-Pro-7B, Janus-Pro-1B, Janus-Pro-R1-7B as transformers 4.50 re-saved it)
against the loader, without weights (issue 15 §2).

Each fixture builds the model on the meta device through the loader's own config conversion; every tensor name and
shape of the real checkpoint (derived from the same config.json by ``deepseek_names``, anchored on the real
tensor counts) goes through the loader's key conversion: no unmapped key, no missing key, no shape mismatch, and
exactly the unused tensors (SigLIP ``attn_pool.*``, VQ ``codebook_used``) dropped. Malformed configs give one
error naming the file and the field.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from deepseek_names import EXPECTED_DROPPED_PREFIXES, deepseek_tensors

from janus_r1.errors import JanusR1Error
from janus_r1.model.deepseek_config import janus_config_from_deepseek
from janus_r1.model.deepseek_keys import convert_deepseek_tensor
from janus_r1.model.loading import build_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "configs"
RELEASES = {"janus-pro-7b": 936, "janus-pro-1b": 882, "janus-pro-r1-7b": 936}
IMAGE_TOKEN_ID = 100581


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", list(RELEASES))
def test_every_real_tensor_name_converts_onto_the_model_built_from_the_config(name):
    cfg = _fixture(name)
    config = janus_config_from_deepseek(cfg, IMAGE_TOKEN_ID, source=f"{name}.json")
    with torch.device("meta"):
        model = build_model(config, FIXTURES)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    names = deepseek_tensors(cfg)
    assert len(names) == RELEASES[name]
    unmapped, dropped, converted, mismatched = [], [], {}, []
    for key, shape in names.items():
        items = convert_deepseek_tensor(key, torch.empty(shape, device="meta"))
        if items is None:
            unmapped.append(key)
        elif not items:
            dropped.append(key)
        for new, t in items or []:
            converted[new] = key
            if new not in expected:
                unmapped.append(f"{key} -> {new}")
            elif tuple(t.shape) != expected[new]:
                mismatched.append(f"{key} -> {new}: {tuple(t.shape)} != {expected[new]}")
    assert unmapped == [] and mismatched == []
    assert sorted(set(expected) - set(converted)) == []  # no missing key
    assert sorted(dropped) == sorted(k for k in names if k.startswith(EXPECTED_DROPPED_PREFIXES))
    assert len(dropped) == 14  # 13 attn_pool tensors + codebook_used


def test_r1_config_builds_the_same_network_as_the_7b_one():
    """The 4.50 re-serialisation (full language_config, flash_attention_2 asked for) changes nothing."""
    seven = janus_config_from_deepseek(_fixture("janus-pro-7b"), IMAGE_TOKEN_ID)
    r1 = janus_config_from_deepseek(_fixture("janus-pro-r1-7b"), IMAGE_TOKEN_ID)
    for sub in ("text_config", "vision_config", "vq_config"):
        a, b = getattr(seven, sub).to_dict(), getattr(r1, sub).to_dict()
        assert a == b, sub
    assert getattr(r1.text_config, "_attn_implementation", None) != "flash_attention_2"
    t = r1.text_config
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.head_dim, t.tie_word_embeddings) == (
        4096, 30, 32, 128, False)
    one = janus_config_from_deepseek(_fixture("janus-pro-1b"), IMAGE_TOKEN_ID).text_config
    assert (one.hidden_size, one.intermediate_size, one.num_hidden_layers, one.num_attention_heads) == (
        2048, 5632, 24, 16)


def _broken(edit) -> dict:
    cfg = copy.deepcopy(_fixture("janus-pro-r1-7b"))
    edit(cfg)
    return cfg


BAD_CONFIGS = [
    (lambda c: c.pop("vision_config"), "'vision_config' is missing"),
    (lambda c: c.pop("language_config"), "'language_config'"),
    (lambda c: c.update(gen_head_config=[1, 2]), "'gen_head_config' is a list"),
    (lambda c: c["language_config"].update(hidden_size="4096"), "'language_config.hidden_size' must be an integer"),
    (lambda c: c["language_config"].update(rms_norm_eps="1e-6"), "'language_config.rms_norm_eps' must be a number"),
    (lambda c: c["language_config"].update(num_hidden_layers=True), "'language_config.num_hidden_layers'"),
    (lambda c: c["language_config"].update(model_type="mistral"), "'language_config.model_type' is 'mistral'"),
    (lambda c: c["aligner_config"]["params"].update(input_dim="1024"), "'aligner_config.params.input_dim'"),
    (lambda c: c["gen_vision_config"]["params"].update(n_embed=8.5), "'gen_vision_config.params.n_embed'"),
    (lambda c: c["gen_vision_config"]["params"].pop("image_token_size"),
     "'gen_vision_config.params.image_token_size' is missing"),
    (lambda c: c["vision_config"].update(params="siglip"), "'vision_config.params' must be an object"),
    (lambda c: c["language_config"].update(hidden_act="swish-ish"), "hidden_act"),
]


@pytest.mark.parametrize("edit, fragment", BAD_CONFIGS, ids=[c[1][:30] for c in BAD_CONFIGS])
def test_malformed_config_is_one_error_naming_the_file_and_field(edit, fragment):
    with pytest.raises(JanusR1Error) as err:
        config = janus_config_from_deepseek(_broken(edit), IMAGE_TOKEN_ID, source="/m/config.json")
        with torch.device("meta"):
            build_model(config, Path("/m"))
    msg = str(err.value)
    assert msg.startswith("/m/config.json: ") and fragment in msg and "\n" not in msg, msg
