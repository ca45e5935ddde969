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
    return _json_object(cfg_path)


def detect_layout(model_dir: str | Path) -> str:
    """``"deepseek"`` for DeepSeek's multi_modality config.json, ``"transformers"`` for model_type ``janus``."""
    cfg = read_config(Path(model_dir))
    model_type = cfg.get("model_type")
    if model_type == "multi_modality" or (model_type is None and "language_config" in cfg):
        return "deepseek"
    if model_type == "janus":
        return "transformers"
    raise JanusR1Error(
        f"{Path(model_dir) / 'config.json'}: field 'model_type' is {model_type!r}; expected 'multi_modality' (DeepSeek "
        "Janus-Pro / Janus-Pro-R1 checkpoints) or 'janus' (transformers' Janus). This is not a Janus model."
    )


def _json_object(path: Path) -> dict:
    """A small JSON file that must hold an object, or one error naming the file."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise JanusR1Error(f"Cannot read {path} as JSON: {e}.") from e
    if not isinstance(obj, dict):
        raise JanusR1Error(f"{path} must hold a JSON object, found {type(obj).__name__}.")
    return obj


def _tokenizer_settings(d: Path) -> tuple[bool, dict]:
    """``(add_bos_token, tokenizer_config)`` from ``tokenizer_config.json``, each field checked for its type.

    ``add_bos_token`` defaults to true (DeepSeek's LlamaTokenizerFast); ``tokenizer_class`` may name
    LlamaTokenizerFast, LlamaTokenizer or anything else, or be absent: the generic fast tokenizer over
    ``tokenizer.json`` is used whatever it says (never a class that would need ``trust_remote_code``).
    """
    path = d / "tokenizer_config.json"
    if not path.is_file():
        return True, {}
    tc = _json_object(path)
    add_bos = tc.get("add_bos_token", True)
    if add_bos is None:
        add_bos = True
    if not isinstance(add_bos, bool):
        raise JanusR1Error(
            f"{path}: field 'add_bos_token' must be true or false, found {type(add_bos).__name__} {add_bos!r}."
        )
    for key in ("tokenizer_class", "bos_token", "eos_token", "pad_token"):
        value = tc.get(key)
        if value is not None and not isinstance(value, (str, dict)):
            raise JanusR1Error(
                f"{path}: field {key!r} must be a string, found {type(value).__name__} {value!r}."
            )
    return add_bos, tc


def _tokenizer_json_problem(path: Path) -> str | None:
    """Why ``tokenizer.json`` cannot be a tokenizer (called only after loading failed, to name the field)."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return f"{path} is not valid JSON: {e}"
    if not isinstance(obj, dict):
        return f"{path} must hold a JSON object, found {type(obj).__name__}"
    if not isinstance(obj.get("model"), dict):
        return f"{path}: section 'model' (the vocabulary and merges) is missing or not an object"
    if not isinstance(obj.get("added_tokens", []), list):
        return f"{path}: field 'added_tokens' must be a list, found {type(obj['added_tokens']).__name__}"
    return None


def _keep_add_bos_on_save(tok, add_bos: bool) -> None:
    """Training exports save ``vocab.tokenizer`` again; transformers 5.x leaves ``add_bos_token`` out of the
    tokenizer_config.json it writes, and a missing key means "on" here, so it is written back explicitly."""
    save = tok.save_pretrained

    def save_pretrained(save_directory, *args, **kwargs):
        out = save(save_directory, *args, **kwargs)
        path = Path(save_directory) / "tokenizer_config.json"
        if path.is_file():
            tc = json.loads(path.read_text(encoding="utf-8"))
            tc["add_bos_token"] = add_bos
            path.write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return out

    tok.save_pretrained = save_pretrained


def load_tokenizer(model_dir: str | Path) -> Vocabulary:
    """The shipped ``tokenizer.json`` as a fast tokenizer, wrapped in a checked :class:`Vocabulary`.

    Janus-Pro's tokenizer_config.json has ``pad_token: null`` while special_tokens_map.json names PAD, so the pad
    token is set explicitly from the map (Vocabulary then checks every special id against the vocabulary).
    ``add_bos_token`` is read here and handed to the Vocabulary, which adds BOS itself: the ids do not depend on
    whether ``tokenizer.json`` carries a BOS post-processor (see :class:`Vocabulary`).
    """
    d = Path(model_dir)
    if not (d / "tokenizer.json").is_file():
        raise JanusR1Error(
            f"No tokenizer.json in {d}. Janus-Pro checkpoints ship one; copy it from the original model repo "
            "(e.g. deepseek-ai/Janus-Pro-7B) into this directory."
        )
    add_bos, _ = _tokenizer_settings(d)
    pad = PAD
    stm = d / "special_tokens_map.json"
    if stm.is_file():
        entry = _json_object(stm).get("pad_token")
        if isinstance(entry, dict):
            entry = entry.get("content")
        if entry is not None and not isinstance(entry, str):
            raise JanusR1Error(f"{stm}: field 'pad_token' must be a string, found {type(entry).__name__}.")
        if isinstance(entry, str) and entry:
            pad = entry
    from transformers import PreTrainedTokenizerFast

    try:
        tok = PreTrainedTokenizerFast.from_pretrained(str(d))
    except Exception as e:  # tokenizers' and transformers' errors share no useful base class
        problem = _tokenizer_json_problem(d / "tokenizer.json")
        if problem:
            raise JanusR1Error(f"{problem}.") from e
        raise JanusR1Error(f"Cannot load the tokenizer in {d}: {type(e).__name__}: {e}.") from e
    _keep_add_bos_on_save(tok, add_bos)
    if pad in tok.get_vocab():
        tok.pad_token = pad
    return Vocabulary(tok, add_bos=add_bos)
