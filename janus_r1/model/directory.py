"""What a model directory holds: its ``config.json``, which checkpoint layout that is, and its tokenizer.

Read before any weight is touched, so a wrong folder fails in a second with a message that says what was found.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import JanusR1Error
from .vocabulary import PAD, Vocabulary


def read_config(model_dir: Path) -> dict:
    """``config.json`` as a dict, or an error naming what the directory holds instead."""
    cfg_path = Path(model_dir) / "config.json"
    if not cfg_path.is_file():
        found = sorted(p.name for p in Path(model_dir).iterdir())[:20] if Path(model_dir).is_dir() else []
        raise JanusR1Error(
            f"No config.json in {model_dir} (found: {found}). Expected a Janus-Pro model directory: DeepSeek "
            "layout (model_type 'multi_modality') or transformers layout (model_type 'janus')."
        )
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise JanusR1Error(f"Cannot read {cfg_path} as JSON: {e}.") from e
    if not isinstance(cfg, dict):
        raise JanusR1Error(f"{cfg_path} must hold a JSON object, found {type(cfg).__name__}.")
    return cfg


def detect_layout(model_dir: str | Path) -> str:
    """``"deepseek"`` for DeepSeek's multi_modality config.json, ``"transformers"`` for model_type ``janus``."""
    cfg = read_config(Path(model_dir))
    model_type = cfg.get("model_type")
    if model_type == "multi_modality" or "language_config" in cfg:
        return "deepseek"
    if model_type == "janus":
        return "transformers"
    raise JanusR1Error(
        f"{Path(model_dir) / 'config.json'} has model_type {model_type!r}; expected 'multi_modality' (DeepSeek "
        "Janus-Pro / Janus-Pro-R1 checkpoints) or 'janus' (transformers' Janus). This is not a Janus model."
    )


def load_tokenizer(model_dir: str | Path) -> Vocabulary:
    """The shipped ``tokenizer.json`` as a fast tokenizer, wrapped in a checked :class:`Vocabulary`.

    Janus-Pro's tokenizer_config.json has ``pad_token: null`` while special_tokens_map.json names PAD, so the pad
    token is set explicitly from the map (Vocabulary then checks every special id against the vocabulary).
    """
    d = Path(model_dir)
    if not (d / "tokenizer.json").is_file():
        raise JanusR1Error(
            f"No tokenizer.json in {d}. Janus-Pro checkpoints ship one; copy it from the original model repo "
            "(e.g. deepseek-ai/Janus-Pro-7B) into this directory."
        )
    from transformers import PreTrainedTokenizerFast

    try:
        tok = PreTrainedTokenizerFast.from_pretrained(str(d))
    except Exception as e:  # tokenizers' and transformers' errors share no useful base class
        raise JanusR1Error(f"Cannot load the tokenizer in {d}: {type(e).__name__}: {e}.") from e
    pad = PAD
    stm = d / "special_tokens_map.json"
    if stm.is_file():
        try:
            entry = json.loads(stm.read_text(encoding="utf-8")).get("pad_token")
        except (OSError, ValueError, AttributeError) as e:
            raise JanusR1Error(f"Cannot read {stm}: {e}.") from e
        if isinstance(entry, dict):
            entry = entry.get("content")
        if isinstance(entry, str) and entry:
            pad = entry
    if pad in tok.get_vocab():
        tok.pad_token = pad
    return Vocabulary(tok)
