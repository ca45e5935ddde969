"""Resuming: an ``--out`` that holds another run is refused with a clear error naming what differs (never a raw
"size mismatch" traceback), before any weight is loaded."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("accelerate")

from test_training_distributed import _run  # noqa: E402

ONE = {"max_steps": 1, "warmup_steps": 1, "batch_size": 1, "save_every": 1, "num_workers": 0, "log_with": "none"}


def _other_geometry(path):
    """A micro model whose language model is 48 wide instead of 32, saved as a model directory."""
    from transformers import JanusForConditionalGeneration

    from janus_r1.model.tiny import build_tiny_tokenizer, randomize_, tiny_config

    tok = build_tiny_tokenizer()
    cfg = tiny_config("micro", vocab_size=len(tok), image_token_id=tok.convert_tokens_to_ids("<image_placeholder>"))
    cfg.text_config.hidden_size = 48
    cfg.vision_config.projection_dim = cfg.vq_config.projection_dim = cfg.vq_config.image_token_embed_dim = 48
    model = randomize_(JanusForConditionalGeneration(cfg))
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def test_out_holding_another_run_is_a_clear_error(tmp_path):
    out = tmp_path / "run"
    p = _run("train-sft", tmp_path, ONE, out)
    assert p.returncode == 0, p.stderr[-3000:]
    other = _other_geometry(tmp_path / "wide")
    p = _run("train-sft", tmp_path, ONE, out, model=str(other))
    assert p.returncode == 2, p.stderr[-3000:]
    err = p.stderr.strip().splitlines()[-1]
    assert err.startswith("error: --out holds another run: checkpoint ") and "size mismatch" not in p.stderr
    assert f"model 'tiny-random' in the checkpoint vs '{other}' now" in err
    assert re.search(r"model\.\S+: \[[0-9, ]*32[0-9, ]*\] in the checkpoint vs \[[0-9, ]*48[0-9, ]*\] now", err)
    assert re.search(r"; \d+ tensors differ in shape\)", err)
    assert "use another --out, or --resume none" in err
    grpo = {"max_steps": 1, "warmup_steps": 1, "convert_steps": 1, "group_size": 2, "max_reflection": 4}
    p = _run("train-grpo", tmp_path, grpo, out)
    assert p.returncode == 2 and "it is a sft run, this is grpo" in p.stderr, p.stderr[-3000:]
