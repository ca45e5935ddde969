"""Load a Janus-Pro / Janus-Pro-R1 model: local directory or hub id, either checkpoint layout, any dtype/device.

Two layouts exist in the wild:
  * DeepSeek ``multi_modality`` (Janus-Pro-1B/7B, Janus-Pro-R1-7B): converted on load, shard by shard, into a
    ``JanusForConditionalGeneration`` whose parameters start on the meta device, so the only copy of the weights
    in memory is the checkpoint's own (mmap-backed) tensors;
  * transformers ``janus``: plain ``from_pretrained``, but with missing/unexpected keys made fatal.

Loading is strict on purpose: a silently random-initialised tensor makes a model that runs and produces plausible
garbage, which is the worst failure a user can get. Every problem surfaces as one ``JanusR1Error`` that says what
was found and what to do.

The steps before the weights live beside this module: :mod:`.sources` (directory or hub id, download),
:mod:`.directory` (config.json, layout, tokenizer), :mod:`.devices` (device/dtype), :mod:`.shards` (weight files),
:mod:`.deepseek_config` and :mod:`.deepseek_keys` (the DeepSeek layout's conversion).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import JanusR1Error
from .compat import dtype_kwargs
from .config_fields import JANUS_FIELDS, check_fields
from .deepseek_config import janus_config_from_deepseek
from .deepseek_keys import convert_deepseek_tensor, janus_key_to_deepseek
from .devices import is_auto, parse_dtype, resolve_device, resolve_dtype
from .directory import detect_layout, load_tokenizer, read_config
from .shards import check_readable, file_shapes, read_shard, weight_files
from .sources import resolve_model_dir
from .vocabulary import Vocabulary

if TYPE_CHECKING:  # transformers is imported lazily: importing janus_r1 must stay cheap
    from transformers import JanusForConditionalGeneration

logger = logging.getLogger(__name__)


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


# --------------------------------------------------------------------------------------------------------------
# The two loaders and the entry point
# --------------------------------------------------------------------------------------------------------------


def build_model(config, model_dir: Path) -> JanusForConditionalGeneration:
    """``JanusForConditionalGeneration(config)``, a value transformers rejects named as config.json's fault."""
    from transformers import JanusForConditionalGeneration

    try:
        return JanusForConditionalGeneration(config)
    except (ValueError, TypeError, KeyError, ImportError, RuntimeError) as e:
        raise JanusR1Error(
            f"{model_dir / 'config.json'}: the model it describes cannot be built: {type(e).__name__}: {e}"
        ) from None


def check_janus_config(cfg: dict, path: Path) -> None:
    """A transformers-layout config.json: each sub-config an object, its geometry fields of the right type."""
    for section, fields in JANUS_FIELDS.items():
        sub = cfg.get(section, {})
        if not isinstance(sub, dict):
            raise JanusR1Error(f"{path}: section {section!r} must be an object, found {type(sub).__name__}.")
        try:
            check_fields(sub, section, fields)
        except JanusR1Error as e:
            raise JanusR1Error(f"{path}: {e}") from None


def _few(keys, n: int = 8) -> str:
    """The first ``n`` names, sorted, and how many more (error messages stay one readable line)."""
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


def _convert_shard(
    path: Path, expected: dict[str, tuple[int, ...]], dtype: torch.dtype, device: torch.device,
    unexpected: list[str],
) -> dict[str, torch.Tensor]:
    """One DeepSeek weight file as transformers-named tensors on ``device``; unknown names go to ``unexpected``."""
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
    return part


def _check_matches(model: JanusForConditionalGeneration, vocab: Vocabulary) -> None:
    """The tokenizer belongs to these weights (every special id inside the vocabulary), the image placeholder id
    is the tokenizer's, and lm_head is untied."""
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


def _load_deepseek(
    model_dir: Path, cfg: dict, vocab: Vocabulary, dtype: torch.dtype, device: torch.device, progress: bool
):
    """Build the model on the meta device, then assign the converted tensors shard by shard (strictly)."""

    config = janus_config_from_deepseek(cfg, vocab.ids.image_placeholder, source=str(model_dir / "config.json"))
    for c in (config, config.text_config, config.vision_config, config.vq_config):
        # what from_pretrained records, so both layouts report the same config; the attribute is ``torch_dtype``
        # before transformers 4.56 (a plain ``dtype`` there is not serialisable: config.save_pretrained fails)
        setattr(c, next(iter(dtype_kwargs(dtype))), dtype)
    with params_on_meta():
        model = build_model(config, model_dir)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    loaded: set[str] = set()
    unexpected: list[str] = []
    files = weight_files(model_dir)
    for i, path in enumerate(files):
        if progress:
            logger.info("loading shard %d/%d: %s", i + 1, len(files), path.name)
        part = _convert_shard(path, expected, dtype, device, unexpected)
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

    for path in weight_files(model_dir):
        check_readable(path)
    check_janus_config(read_config(model_dir), model_dir / "config.json")
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


def _check_shapes(model_dir: Path, config) -> None:
    """Name the first tensor whose shape differs from the model config.json describes (transformers would only
    point at its own load report)."""
    with params_on_meta():
        expected = {k: tuple(v.shape) for k, v in build_model(config, model_dir).state_dict().items()}
    for path in weight_files(model_dir):
        for key, shape in file_shapes(path).items():
            if key in expected and shape != expected[key]:
                raise JanusR1Error(
                    f"{path.name}: {key} has shape {list(shape)} but the model built from config.json expects "
                    f"{list(expected[key])}; config.json does not match the weights (another model's checkpoint?)."
                )


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
    dev = resolve_device(device)
    offloading = max_memory_gib is not None or offload_dir is not None
    if offloading and quantize != "none":
        raise JanusR1Error("use either quantize or max_memory_gib/offload_dir, not both (4-bit usually fits).")
    if not is_auto(dtype):
        parse_dtype(dtype, "dtype")  # fail on a typo before any download
    model_dir = resolve_model_dir(path_or_repo, progress=progress)
    layout = detect_layout(model_dir)
    cfg = read_config(model_dir)
    target_dtype = resolve_dtype(dtype, cfg, str(Path(model_dir) / "config.json"))
    vocab = load_tokenizer(model_dir)
    if layout == "deepseek":
        # quantised layers are built from host tensors and quantised one by one on their way to the device
        host = torch.device("cpu") if quantize != "none" or offloading else dev
        model = _load_deepseek(model_dir, cfg, vocab, target_dtype, host, progress)
    else:
        model = _load_transformers(model_dir, vocab, target_dtype, progress)
    _check_matches(model, vocab)
    if offloading:
        from .offload import offload

        model = offload(model.to("cpu"), dev, max_memory_gib if max_memory_gib is not None else 0.0, offload_dir)
    else:
        # buffers (and, for the transformers layout, everything) to the device; the decoder quantised on the way
        model = quantize_language_model(model, quantize, dev)
    model.eval()
    return model, vocab
