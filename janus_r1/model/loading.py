"""Load a Janus-Pro / Janus-Pro-R1 model: local directory or hub id, either checkpoint layout, any dtype/device.

Two layouts exist in the wild:
  * DeepSeek ``multi_modality`` (Janus-Pro-1B/7B, Janus-Pro-R1-7B): converted on load, shard by shard, into a
    ``JanusForConditionalGeneration`` whose parameters start on the meta device, so the only copy of the weights
    in memory is the checkpoint's own (mmap-backed) tensors;
  * transformers ``janus``: plain ``from_pretrained``, but with missing/unexpected keys made fatal.

Loading is strict on purpose: a silently random-initialised tensor makes a model that runs and produces plausible
garbage, which is the worst failure a user can get. Every problem surfaces as one ``JanusR1Error`` that says what
was found and what to do.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import JanusR1Error
from .compat import dtype_kwargs
from .deepseek_layout import (
    convert_deepseek_tensor,
    janus_config_from_deepseek,
    janus_key_to_deepseek,
    read_shard,
    weight_files,
)
from .vocabulary import PAD, Vocabulary

if TYPE_CHECKING:  # transformers is imported lazily: importing janus_r1 must stay cheap
    from transformers import JanusForConditionalGeneration

logger = logging.getLogger(__name__)

TINY_RANDOM = "tiny-random"
HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "pytorch_model*.bin"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")

_DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
}


# --------------------------------------------------------------------------------------------------------------
# Where the model is
# --------------------------------------------------------------------------------------------------------------


def cache_root() -> Path:
    """``$JANUS_R1_CACHE`` or ``~/.cache/janus_r1``: where generated artefacts (the tiny-random model) live."""
    env = os.environ.get("JANUS_R1_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "janus_r1"


def _tiny_random_dir(progress: bool) -> Path:
    """The micro-geometry DeepSeek-layout model, written once into the cache (atomically, so it is never half)."""
    target = cache_root() / TINY_RANDOM
    msg = (
        f"Using the '{TINY_RANDOM}' model ({target}): random weights for tests and demos. It draws NOISE, "
        "not pictures, and its judgements mean nothing; pass a real checkpoint such as midbee/Janus-Pro-R1-7B."
    )
    warnings.warn(msg, UserWarning, stacklevel=3)
    if (target / "config.json").is_file():
        return target
    from .tiny_files import write_tiny

    if progress:
        logger.info("writing the tiny random model to %s", target)
    try:
        return write_tiny(target, layout="deepseek", geometry="micro", seed=0)
    except JanusR1Error as e:
        if (target / "config.json").is_file():  # another process won the race; its copy is identical
            return target
        raise JanusR1Error(
            f"Could not write the tiny random model to {target} ({e}); delete that directory or set "
            "JANUS_R1_CACHE to a writable location."
        ) from e


def _hub_cache_dir() -> str | None:
    """The hub cache as the environment says *now* (huggingface_hub reads HF_HOME only at import time)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return env in {"1", "ON", "YES", "TRUE"} or bool(constants.HF_HUB_OFFLINE)


def _download(repo_id: str, progress: bool) -> Path:
    """Snapshot the files a model needs (config, tokenizer, weights), or explain why that is not possible."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    offline = _offline()
    hint = (
        f"download it with `hf download {repo_id}` (or `huggingface-cli download {repo_id}`) while online, "
        "or pass a local model directory"
    )
    was_disabled = are_progress_bars_disabled()
    if not progress:
        disable_progress_bars()
    try:
        path = snapshot_download(
            repo_id,
            allow_patterns=HUB_ALLOW_PATTERNS,
            cache_dir=_hub_cache_dir(),
            local_files_only=offline,
        )
    except Exception as e:  # hub, network and filesystem errors share no base class worth naming
        if offline:
            raise JanusR1Error(
                f"Model {repo_id!r} was not found locally and HF_HUB_OFFLINE=1; {hint}."
            ) from e
        raise JanusR1Error(
            f"{repo_id!r} is not a local directory and could not be downloaded from the Hugging Face hub "
            f"({type(e).__name__}: {e}). Check the path or repo id, your network and HF_TOKEN for gated repos; "
            f"or {hint}."
        ) from e
    finally:
        if not progress and not was_disabled:
            enable_progress_bars()
    return Path(path)


def resolve_model_dir(path_or_repo: str, progress: bool = True) -> Path:
    """Turn what the user typed into a local model directory.

    An existing directory wins; ``"tiny-random"`` is the generated noise model; an ``owner/name`` string that is
    not on disk is fetched from the hub (only then: nothing downloads at import time, and ``HF_HUB_OFFLINE`` is
    honoured). Anything else is an error that says which of these was expected.
    """
    raw = os.fspath(path_or_repo) if isinstance(path_or_repo, os.PathLike) else path_or_repo
    if not isinstance(raw, str) or not raw.strip():
        raise JanusR1Error(f"Model path must be a non-empty string, got {path_or_repo!r}.")
    raw = raw.strip()
    path = Path(raw).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise JanusR1Error(f"{path} is a file; pass the model *directory* (the one holding config.json).")
    if raw == TINY_RANDOM:
        return _tiny_random_dir(progress)
    if _REPO_ID.match(raw) and not raw.startswith((".", "~")):
        return _download(raw, progress)
    raise JanusR1Error(
        f"Model directory {raw!r} does not exist. Pass a local directory with config.json and weights, a hub id "
        f"like 'midbee/Janus-Pro-R1-7B', or '{TINY_RANDOM}'."
    )


# --------------------------------------------------------------------------------------------------------------
# Layout, tokenizer
# --------------------------------------------------------------------------------------------------------------


def _read_config(model_dir: Path) -> dict:
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
    cfg = _read_config(Path(model_dir))
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


# --------------------------------------------------------------------------------------------------------------
# dtype / device
# --------------------------------------------------------------------------------------------------------------


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise JanusR1Error(f"Unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise JanusR1Error(f"Device {device!r} requested but CUDA is not available; use 'auto' or 'cpu'.")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise JanusR1Error(f"Device {device!r} requested but MPS is not available; use 'auto' or 'cpu'.")
    if dev.type == "meta":
        raise JanusR1Error("Device 'meta' cannot hold weights; use 'auto', 'cpu', 'cuda' or 'mps'.")
    return dev


def _parse_dtype(dtype: str | torch.dtype, what: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise JanusR1Error(f"{what} {dtype} is not a floating-point dtype; use bf16, fp16 or fp32.")
        return dtype
    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key in _DTYPES:
            return _DTYPES[key]
    raise JanusR1Error(
        f"Unknown {what} {dtype!r}; use 'auto' (the checkpoint's own), 'bf16'/'bfloat16', 'fp16'/'float16', "
        "'fp32'/'float32' or a torch.dtype."
    )


def _resolve_dtype(dtype: str | torch.dtype, cfg: dict) -> torch.dtype:
    """``"auto"`` means the checkpoint's ``torch_dtype`` (bfloat16 for the real ones); fp32 when it says nothing."""
    if isinstance(dtype, str) and dtype.strip().lower() == "auto":
        stored = cfg.get("torch_dtype") or cfg.get("dtype")
        if stored is None and isinstance(cfg.get("text_config"), dict):
            stored = cfg["text_config"].get("torch_dtype") or cfg["text_config"].get("dtype")
        if stored is None and isinstance(cfg.get("language_config"), dict):
            stored = cfg["language_config"].get("torch_dtype")
        if stored is None or stored == "auto":
            return torch.float32
        return _parse_dtype(stored, "checkpoint torch_dtype")
    return _parse_dtype(dtype, "dtype")


# --------------------------------------------------------------------------------------------------------------
# Building without allocating
# --------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def params_on_meta() -> Iterator[None]:
    """Create modules with parameters on the meta device but real buffers.

    (It patches ``nn.Module.register_parameter`` for the duration, so modules built by other threads meanwhile
    would get meta parameters too; loading is not meant to run concurrently with model construction.)

    Like accelerate's ``init_empty_weights(include_buffers=False)`` (accelerate is not a runtime dependency): the
    model skeleton costs no memory and no init time, the checkpoint tensors are then *assigned* in, and
    non-persistent buffers computed in ``__init__`` (rotary ``inv_freq``, SigLIP ``position_ids``) stay valid.
    """
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None:
            p = module._parameters[name]
            kwargs = dict(p.__dict__)
            kwargs["requires_grad"] = p.requires_grad
            module._parameters[name] = type(p)(p.to("meta"), **kwargs)

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def _few(keys, n: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _check_untied(model: JanusForConditionalGeneration) -> None:
    """Janus-Pro's lm_head is its own matrix; a tie would make text logits use the embedding table."""
    emb = model.model.language_model.embed_tokens.weight
    head = model.lm_head.weight
    if head.data_ptr() == emb.data_ptr() and head.numel() > 0:
        raise JanusR1Error(
            "lm_head is tied to embed_tokens after loading, but Janus-Pro's lm_head is a separate matrix; the "
            "checkpoint lacks language_model.lm_head.weight or the config forces tie_word_embeddings."
        )


def _load_deepseek(
    model_dir: Path, cfg: dict, vocab: Vocabulary, dtype: torch.dtype, device: torch.device, progress: bool
):
    from transformers import JanusForConditionalGeneration

    config = janus_config_from_deepseek(cfg, vocab.ids.image_placeholder)
    for c in (config, config.text_config, config.vision_config, config.vq_config):
        c.dtype = dtype  # what from_pretrained records, so both layouts report the same config
    with params_on_meta():
        model = JanusForConditionalGeneration(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    loaded: set[str] = set()
    unexpected: list[str] = []
    files = weight_files(model_dir)
    for i, path in enumerate(files):
        if progress:
            logger.info("loading shard %d/%d: %s", i + 1, len(files), path.name)
        part: dict[str, torch.Tensor] = {}
        for key, tensor in read_shard(path).items():
            items = convert_deepseek_tensor(key, tensor)
            if items is None:
                unexpected.append(f"{key} ({path.name})")
                continue
            for new, t in items:
                if new not in expected:
                    unexpected.append(f"{key} -> {new} ({path.name})")
                    continue
                if tuple(t.shape) != expected[new]:
                    raise JanusR1Error(
                        f"{path.name}: {key} has shape {list(t.shape)} but the model built from config.json "
                        f"expects {list(expected[new])} for {new}; config.json does not match the weights."
                    )
                # straight to the target device and dtype, tensor by tensor: a cast (bf16 checkpoint -> fp32)
                # or a GPU load never holds a second full copy of the model in host memory
                part[new] = t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)
        if unexpected:
            break
        try:
            model.load_state_dict(part, strict=False, assign=True)
        except RuntimeError as e:
            raise JanusR1Error(f"Cannot load the tensors of {path}: {e}") from e
        loaded.update(part)
        del part
    if unexpected:
        raise JanusR1Error(
            f"The checkpoint in {model_dir} has {len(unexpected)} tensor(s) this Janus model does not know: "
            f"{_few(unexpected)}. It is not a Janus-Pro checkpoint, or its config.json describes another geometry."
        )
    missing = set(expected) - loaded
    missing |= {n for n, p in model.named_parameters() if p.is_meta}
    missing |= {n for n, b in model.named_buffers() if b.is_meta}
    if missing:
        named = [f"{janus_key_to_deepseek(k)} (= {k})" for k in missing]
        raise JanusR1Error(
            f"The checkpoint in {model_dir} lacks {len(missing)} tensor(s): {_few(named)}. The download is "
            "incomplete or the files belong to another model."
        )
    return model


def _load_transformers(model_dir: Path, vocab: Vocabulary, dtype: torch.dtype, progress: bool):
    from transformers import JanusConfig, JanusForConditionalGeneration

    for path in weight_files(model_dir):  # name a corrupt file before transformers hides it in a traceback
        if path.suffix == ".safetensors":
            _check_safetensors(path)
        else:
            read_shard(path)  # weights_only + mmap: reads the pickle's index, not the tensor data
    try:
        config = JanusConfig.from_pretrained(str(model_dir))
    except Exception as e:
        raise JanusR1Error(f"Cannot read {model_dir / 'config.json'} as a JanusConfig: {e}.") from e
    config.tie_word_embeddings = False
    config.text_config.tie_word_embeddings = False
    config.image_token_id = vocab.ids.image_placeholder
    _check_shapes(model_dir, config)
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        model, info = JanusForConditionalGeneration.from_pretrained(
            str(model_dir), config=config, output_loading_info=True, local_files_only=True,
            **dtype_kwargs(dtype),
        )
    except Exception as e:
        raise JanusR1Error(f"Cannot load the weights in {model_dir}: {type(e).__name__}: {e}.") from e
    finally:
        if bars_were_on and not progress:
            hf_logging.enable_progress_bar()
    problems = []
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = info.get(kind) or []
        keys = [k if isinstance(k, str) else str(k[0]) for k in keys]
        if keys:
            problems.append(f"{kind.replace('_', ' ')}: {_few(keys)}")
    if problems:
        raise JanusR1Error(
            f"The transformers-layout checkpoint in {model_dir} does not match its config: {'; '.join(problems)}."
        )
    return model


def _file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    return {k: tuple(t.shape) for k, t in read_shard(path).items()}  # mmap: no tensor data is read


def _check_shapes(model_dir: Path, config) -> None:
    """Name the first tensor whose shape differs from the model config.json describes (transformers would only
    point at its own load report)."""
    from transformers import JanusForConditionalGeneration

    with params_on_meta():
        expected = {k: tuple(v.shape) for k, v in JanusForConditionalGeneration(config).state_dict().items()}
    for path in weight_files(model_dir):
        for key, shape in _file_shapes(path).items():
            if key in expected and shape != expected[key]:
                raise JanusR1Error(
                    f"{path.name}: {key} has shape {list(shape)} but the model built from config.json expects "
                    f"{list(expected[key])}; config.json does not match the weights (another model's checkpoint?)."
                )


def _check_safetensors(path: Path) -> None:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as e:
        raise JanusR1Error(
            f"Cannot read weight file {path}: {type(e).__name__}: {e}. The file is corrupt or truncated; "
            "download it again."
        ) from e


def load_model(
    path_or_repo: str,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    progress: bool = True,
    quantize: str | None = None,
    max_memory_gib: float | None = None,
    offload_dir: str | None = None,
) -> tuple[JanusForConditionalGeneration, Vocabulary]:
    """Load a Janus-Pro / Janus-Pro-R1 model and its checked vocabulary: ``(model, vocab)``.

    ``device``: ``"auto"`` (cuda, else mps, else cpu) or a device string. ``dtype``: ``"auto"`` (the checkpoint's
    torch_dtype, bfloat16 for the released models), ``"bf16"``, ``"fp16"``, ``"fp32"`` or a torch.dtype. The
    model comes back in eval mode with every tensor loaded from the checkpoint and ``lm_head`` untied.
    ``quantize``: the language model only, layer by layer as it reaches the device (never its bf16 copy on a GPU):
    ``"4bit"`` (int4 on torch's fused kernels where the device has one, else NF4), ``"int4"``, ``"nf4"`` or
    ``"8bit"`` (the last two through bitsandbytes); see ``model/quantize.py``.
    ``max_memory_gib``: keep at most this much weight on the device and stream the other decoder layers from CPU
    RAM (or from ``offload_dir`` on disk) at every step.
    """
    from .quantize import check_mode, quantize_language_model

    quantize = check_mode(quantize)
    dev = _resolve_device(device)
    offloading = max_memory_gib is not None or offload_dir is not None
    if offloading and quantize != "none":
        raise JanusR1Error("use either quantize or max_memory_gib/offload_dir, not both (4-bit usually fits).")
    if not (isinstance(dtype, str) and dtype.strip().lower() == "auto"):
        _parse_dtype(dtype, "dtype")  # fail on a typo before any download
    model_dir = resolve_model_dir(path_or_repo, progress=progress)
    layout = detect_layout(model_dir)
    cfg = _read_config(model_dir)
    target_dtype = _resolve_dtype(dtype, cfg)
    vocab = load_tokenizer(model_dir)
    if layout == "deepseek":
        # quantised layers are built from host tensors and quantised one by one on their way to the device
        host = torch.device("cpu") if quantize != "none" or offloading else dev
        model = _load_deepseek(model_dir, cfg, vocab, target_dtype, host, progress)
    else:
        model = _load_transformers(model_dir, vocab, target_dtype, progress)

    vocab_size = model.config.text_config.vocab_size
    too_big = {k: v for k, v in vars(vocab.ids).items() if v >= vocab_size}
    if too_big:
        raise JanusR1Error(
            f"Tokenizer ids {too_big} are outside the model's vocabulary of {vocab_size}; the tokenizer.json does "
            "not belong to these weights."
        )
    if model.config.image_token_id != vocab.ids.image_placeholder:
        model.config.image_token_id = vocab.ids.image_placeholder
    _check_untied(model)
    if offloading:
        from .offload import offload

        model = offload(model.to("cpu"), dev, max_memory_gib if max_memory_gib is not None else 0.0, offload_dir)
    else:
        # buffers (and, for the transformers layout, everything) to the device; the decoder quantised on the way
        model = quantize_language_model(model, quantize, dev)
    model.eval()
    return model, vocab
