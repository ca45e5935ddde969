"""A model folder laid out exactly like the released Janus-Pro-R1-7B one, with tiny weights (issue 15 §4).

config.json as transformers 4.50 re-saved it (full language_config, flash_attention_2 asked for, bookkeeping keys),
tokenizer.json without the BOS post-processor, tokenizer_config.json naming LlamaTokenizerFast with
add_bos_token. ``janus-r1 generate ... --model <folder>`` must work as a new user runs it, and draw exactly what
the plain tiny folder with the same weights draws.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from janus_r1 import JanusR1, cli
from janus_r1.errors import JanusR1Error
from janus_r1.model.tiny_files import write_tiny
from janus_r1.model.vocabulary import BOS


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"released": write_tiny(root / "Janus-Pro-R1-7B", geometry="micro", seed=0, released_style=True),
            "plain": write_tiny(root / "plain", geometry="micro", seed=0)}


def test_the_folder_looks_like_the_release(folders):
    d = folders["released"]
    cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
    lang = cfg["language_config"]
    assert cfg["transformers_version"] == "4.50.0" and lang["_attn_implementation"] == "flash_attention_2"
    assert {"head_dim", "rope_scaling", "pretraining_tp", "max_length", "id2label"} <= set(lang)
    assert cfg["vision_config"]["tie_word_embeddings"] is True and "params" in cfg["vision_config"]
    assert json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))["post_processor"] is None
    tc = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert tc["tokenizer_class"] == "LlamaTokenizerFast" and tc["add_bos_token"] is True


def test_api_loads_it_with_exactly_one_bos(folders):
    jr = JanusR1.from_pretrained(str(folders["released"]), device="cpu", progress=False)
    ids = jr.janus.prompt_ids("a red cat")
    bos = jr.vocab.tokenizer.convert_tokens_to_ids(BOS)
    assert ids[0] == bos and ids.count(bos) == 1
    assert jr.model.config.text_config._attn_implementation != "flash_attention_2"


def test_released_style_needs_the_deepseek_layout(tmp_path):
    with pytest.raises(JanusR1Error, match="DeepSeek layout"):
        write_tiny(tmp_path / "x", layout="transformers", released_style=True)


def test_cli_generate_on_the_released_folder_draws_what_the_plain_one_draws(folders, tmp_path, capsys):
    traces = {}
    for name, d in folders.items():
        out = tmp_path / name
        code = cli.main(["generate", "a red cat", "--model", str(d), "--out", str(out), "--seed", "3",
                         "--max-rounds", "2", "--max-reflection", "6", "--quiet"])
        err = capsys.readouterr().err
        assert code == 0, err
        trace = json.loads((out / "trace.json").read_text(encoding="utf-8"))
        traces[name] = (trace["samples"], {p.name: p.read_bytes() for p in out.glob("*.png")})
    samples, pngs = traces["released"]
    assert samples and all(len(a["codes"]) == 16 for s in samples for a in s["attempts"])
    assert samples == traces["plain"][0] and pngs == traces["plain"][1]


@pytest.mark.parametrize("stored, where", [("int8", "torch_dtype"), (16, "torch_dtype"),
                                           ("float8", "language_config.torch_dtype")])
def test_a_bad_stored_dtype_names_the_file_and_field_and_an_explicit_dtype_loads(folders, tmp_path, stored, where):
    import shutil

    d = shutil.copytree(folders["released"], tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
    if where == "torch_dtype":
        cfg["torch_dtype"] = stored
    else:
        cfg.pop("torch_dtype", None)
        cfg["language_config"]["torch_dtype"] = stored
    (d / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    with pytest.raises(JanusR1Error) as err:
        JanusR1.from_pretrained(str(d), device="cpu", progress=False)
    msg = str(err.value)
    assert msg.startswith(f"{d / 'config.json'}: field '{where}' must name a floating-point dtype"), msg
    assert f"found {type(stored).__name__} {stored!r}" in msg and "dtype='bf16'" in msg
    assert JanusR1.from_pretrained(str(d), device="cpu", dtype="fp32", progress=False).model.dtype == torch.float32
