"""What the released Janus-Pro-R1-7B folder looks like, for tiny directories that look the same (issue 15).

The R1 model was trained with transformers 4.50 and saved with ``trainer.save_model``, so its ``config.json`` is
the 7B one re-serialised: every LLaMA field spelled out in ``language_config`` plus the bookkeeping of every
``PretrainedConfig`` (generation defaults, ``tie_word_embeddings: true`` on the sub-configs,
``_attn_implementation: "flash_attention_2"``...). Its ``tokenizer_config.json`` names ``LlamaTokenizerFast``
with ``add_bos_token: true``, a class that added BOS itself under transformers 4.x, so its ``tokenizer.json`` may
have no BOS post-processor. A tiny folder written in this style proves the engine loads what a user downloads.
"""

from __future__ import annotations

import json
from pathlib import Path

from .vocabulary import BOS, EOS

# PretrainedConfig.to_dict() of transformers 4.5x: what every (sub-)config carries when 4.50 re-saves it
PRETRAINED_BOOKKEEPING: dict = {
    "_attn_implementation_autoset": True, "_name_or_path": "", "add_cross_attention": False, "architectures": None,
    "bad_words_ids": None, "begin_suppress_tokens": None, "bos_token_id": None, "chunk_size_feed_forward": 0,
    "cross_attention_hidden_size": None, "decoder_start_token_id": None, "diversity_penalty": 0.0,
    "do_sample": False, "early_stopping": False, "encoder_no_repeat_ngram_size": 0, "eos_token_id": None,
    "exponential_decay_length_penalty": None, "finetuning_task": None, "forced_bos_token_id": None,
    "forced_eos_token_id": None, "id2label": {"0": "LABEL_0", "1": "LABEL_1"}, "is_decoder": False,
    "is_encoder_decoder": False, "label2id": {"LABEL_0": 0, "LABEL_1": 1}, "length_penalty": 1.0, "max_length": 20,
    "min_length": 0, "no_repeat_ngram_size": 0, "num_beam_groups": 1, "num_beams": 1, "num_return_sequences": 1,
    "output_attentions": False, "output_hidden_states": False, "output_scores": False, "pad_token_id": None,
    "prefix": None, "problem_type": None, "pruned_heads": {}, "remove_invalid_values": False,
    "repetition_penalty": 1.0, "return_dict": True, "return_dict_in_generate": False, "sep_token_id": None,
    "suppress_tokens": None, "task_specific_params": None, "temperature": 1.0, "tf_legacy_loss": False,
    "tie_encoder_decoder": False, "tie_word_embeddings": True, "tokenizer_class": None, "top_k": 50, "top_p": 1.0,
    "torch_dtype": None, "torchscript": False, "typical_p": 1.0, "use_bfloat16": False,
}

# LlamaConfig's own fields of 4.50 beyond the geometry the DeepSeek writer already states
LLAMA_450: dict = {
    "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2, "initializer_range": 0.02, "pretraining_tp": 1,
    "rope_scaling": None, "tie_word_embeddings": False, "use_cache": True, "transformers_version": "4.50.0",
    "_attn_implementation": "flash_attention_2",
}

TOKENIZER_CONFIG: dict = {
    "add_bos_token": True, "add_eos_token": False, "bos_token": BOS, "clean_up_tokenization_spaces": False,
    "eos_token": EOS, "legacy": True, "model_max_length": 16384, "pad_token": None, "sp_model_kwargs": {},
    "tokenizer_class": "LlamaTokenizerFast", "unk_token": None, "use_default_system_prompt": False,
}


def released_config(cfg: dict) -> dict:
    """A DeepSeek config.json dict as transformers 4.50 re-saves it (same network, every bookkeeping key)."""
    out = {**PRETRAINED_BOOKKEEPING, **cfg, "transformers_version": "4.50.0",
           "_attn_implementation": "flash_attention_2"}
    for key, section in cfg.items():
        if key.endswith("_config") and isinstance(section, dict):
            out[key] = {**PRETRAINED_BOOKKEEPING, **section}
    lang = dict(cfg["language_config"])
    lang.setdefault("head_dim", lang["hidden_size"] // lang["num_attention_heads"])
    lang.setdefault("num_key_value_heads", lang["num_attention_heads"])
    out["language_config"] = {**PRETRAINED_BOOKKEEPING, **LLAMA_450, **lang}
    return out


def write_released_tokenizer_files(out: Path) -> None:
    """Drop the BOS post-processor from ``tokenizer.json``; name LlamaTokenizerFast with add_bos_token."""
    path = out / "tokenizer.json"
    tj = json.loads(path.read_text(encoding="utf-8"))
    tj["post_processor"] = None
    path.write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    (out / "tokenizer_config.json").write_text(
        json.dumps(TOKENIZER_CONFIG, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
