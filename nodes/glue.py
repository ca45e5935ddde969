"""Everything ComfyUI-specific that more than one node needs; no algorithm lives here.

* the engine import (the copy shipped next to this folder, else a pip-installed ``janus_r1``) with a clear error
  when a runtime dependency is missing;
* the pack's model socket type and the handle it carries (engine object + ComfyUI model patcher);
* IMAGE tensor <-> PIL conversion ([B, H, W, C] float 0..1 on the intermediate device);
* the engine hooks bridged to ComfyUI: per-token progress bar, partial-image preview, reasoning text streamed
  with ``send_progress_text`` where the server has it, and interrupt -> engine cancel;
* a KV-cache memory estimate handed to ``load_models_gpu`` before each use;
* schema helpers that feature-detect APIs newer than ComfyUI 0.3.75.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable

import numpy as np
import torch
from comfy_api.latest import io
from PIL import Image

log = logging.getLogger("janus_r1.comfy")

CATEGORY = "Janus-R1"
MODEL_TYPE = "JANUS_R1_MODEL"  # pack-unique: other Janus packs already use JANUS_MODEL
JanusModel = io.Custom(MODEL_TYPE)
SEED_MAX = 0xFFFFFFFFFFFFFFFF

# paper defaults (Janus-Pro-R1, App. B.4/B.5), mirrored here for the widgets
DEFAULT_CFG = 5.0
DEFAULT_EDIT_CFG = 4.0
DEFAULT_TOP_K = 4096
DEFAULT_TEXT_TOP_K = 50
DEFAULT_MAX_ROUNDS = 3
DEFAULT_MAX_REFLECTION = 256


# --- engine ---------------------------------------------------------------------------------------------------


def engine():
    """The ``janus_r1`` package: the copy inside this pack, else a pip-installed one; a clear error otherwise."""
    try:
        from .. import janus_r1 as jr  # cloned into custom_nodes/: the engine sits next to nodes/

        return jr
    except ImportError:
        try:
            import janus_r1 as jr

            return jr
        except ImportError as e:
            raise RuntimeError(
                f"Janus-R1 cannot import its engine ({type(e).__name__}: {e}). Install the pack's dependencies "
                "into ComfyUI's Python: `python -m pip install -r custom_nodes/<this pack>/requirements.txt`."
            ) from e


# --- schema helpers -------------------------------------------------------------------------------------------

_SCHEMA_FIELDS = (
    {f.name for f in dataclasses.fields(io.Schema)} if dataclasses.is_dataclass(io.Schema) else set()
)


def schema(**kwargs) -> io.Schema:
    """``io.Schema`` with newer-only fields (``search_aliases``, ...) dropped where this ComfyUI lacks them."""
    if _SCHEMA_FIELDS:
        kwargs = {k: v for k, v in kwargs.items() if k in _SCHEMA_FIELDS}
    kwargs.setdefault("category", CATEGORY)
    return io.Schema(**kwargs)


def seed_input(tooltip: str = "Random seed; the same seed and inputs give the same result.") -> io.Int.Input:
    return io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True, tooltip=tooltip)


def sampling_inputs(cfg: float = DEFAULT_CFG) -> list:
    """cfg / temperature / top-k / top-p for image tokens, with the paper's defaults."""
    return [
        io.Float.Input(
            "cfg",
            default=cfg,
            min=0.0,
            max=20.0,
            step=0.1,
            round=0.01,
            tooltip=f"Classifier-free guidance weight for image tokens (paper: {cfg:g}). "
            "1 disables guidance; higher follows the text more closely.",
        ),
        io.Float.Input(
            "temperature",
            default=1.0,
            min=0.01,
            max=2.0,
            step=0.01,
            round=0.01,
            tooltip="Sampling temperature for image tokens (paper: 1.0).",
        ),
        io.Int.Input(
            "top_k",
            default=DEFAULT_TOP_K,
            min=0,
            max=16384,
            tooltip="Keep only the k most likely image tokens (paper: 4096, 0 = no limit).",
        ),
        io.Float.Input(
            "top_p",
            default=1.0,
            min=0.01,
            max=1.0,
            step=0.01,
            round=0.01,
            tooltip="Nucleus sampling for image tokens (1.0 = off, the paper's setting).",
        ),
    ]


def reflection_inputs() -> list:
    return [
        io.Int.Input(
            "text_top_k",
            default=DEFAULT_TEXT_TOP_K,
            min=1,
            max=1000,
            tooltip="Top-k for the written reflection (paper: 50).",
        ),
        io.Int.Input(
            "max_reflection",
            default=DEFAULT_MAX_REFLECTION,
            min=1,
            max=1024,
            tooltip="Most tokens the model may write when judging an image (reflection length).",
        ),
    ]


def prompt_input(name: str = "prompt", tooltip: str = "What the image should show.") -> io.String.Input:
    return io.String.Input(name, multiline=True, default="", tooltip=tooltip)


def require_text(name: str, value) -> str | None:
    """Validation message for an empty widget text (None = fine or linked)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        return f"{name} is empty; type what you want."
    return None


# --- images ---------------------------------------------------------------------------------------------------


def to_pils(image: torch.Tensor) -> list[Image.Image]:
    """ComfyUI IMAGE [B, H, W, C] (or [H, W, C]) float 0..1 -> RGB PIL images (alpha is dropped)."""
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"expected an IMAGE tensor, got {type(image).__name__}")
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[0] < 1 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"expected an IMAGE tensor [B, H, W, C] with C in (1, 3, 4), got {list(image.shape)}"
        )
    x = image.detach().float().cpu()
    if x.shape[-1] == 1:
        x = x.repeat(1, 1, 1, 3)
    x = x[..., :3].nan_to_num(0.0).clamp(0, 1)
    arr = (x * 255.0).round().to(torch.uint8).numpy()
    return [Image.fromarray(a, "RGB") for a in arr]


def to_image(pils: Iterable[Image.Image]) -> torch.Tensor:
    """PIL images (same size) -> IMAGE [B, H, W, 3] float32 0..1 on the intermediate device."""
    import comfy.model_management as mm

    arrs = [np.asarray(p.convert("RGB"), dtype=np.float32) / 255.0 for p in pils]
    if not arrs:
        raise ValueError("no image to return")
    size = arrs[0].shape
    arrs = [
        a
        if a.shape == size
        else np.asarray(
            Image.fromarray((a * 255).astype(np.uint8)).resize((size[1], size[0]), Image.BICUBIC), np.float32
        )
        / 255.0
        for a in arrs
    ]
    return torch.from_numpy(np.stack(arrs)).to(mm.intermediate_device())


def to_intermediate(image: torch.Tensor) -> torch.Tensor:
    import comfy.model_management as mm

    return image.to(mm.intermediate_device())


# --- model handle and memory ----------------------------------------------------------------------------------


class _Holder(torch.nn.Module):
    """A plain module around the transformers model: ModelPatcher assigns ``.device`` on what it wraps, which a
    transformers ``PreTrainedModel`` (read-only ``device`` property) does not allow."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net
        self.device = next(net.parameters()).device


@dataclasses.dataclass
class JanusModelHandle:
    """What travels on a JANUS_R1_MODEL socket: the engine object and the patcher ComfyUI loads/offloads."""

    jr: object  # janus_r1.JanusR1
    patcher: object  # comfy.model_patcher.ModelPatcher (CoreModelPatcher where present)
    name: str
    dtype: torch.dtype

    def ready(self, rows: int, context_tokens: int, new_tokens: int, images_out: int = 0):
        """Ask ComfyUI to load the weights onto the compute device with room for this run; returns the engine."""
        import comfy.model_management as mm

        need = estimate_run_memory(self.jr, rows, context_tokens, new_tokens, images_out)
        mm.load_models_gpu([self.patcher], memory_required=need, force_full_load=True)
        return self.jr

    def __repr__(self) -> str:  # shown by Preview Any and in errors
        return f"JanusR1Model({self.name}, {str(self.dtype).removeprefix('torch.')})"


def make_patcher(model: torch.nn.Module):
    import comfy.model_management as mm
    import comfy.model_patcher as mp

    patcher_cls = getattr(mp, "CoreModelPatcher", None) or mp.ModelPatcher
    return patcher_cls(
        _Holder(model), load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
    )


def estimate_run_memory(jr, rows: int, context_tokens: int, new_tokens: int, images_out: int = 0) -> int:
    """Bytes a run needs beyond the weights -- the engine's own estimate (``janus_r1.model.memory``)."""
    return engine_module("model.memory").run_bytes(jr.model, rows, context_tokens, new_tokens, images_out)


def engine_module(name: str):
    """A submodule of whichever ``janus_r1`` :func:`engine` found (the pack's own copy or a pip-installed one)."""
    import importlib

    return importlib.import_module(f"{engine().__name__}.{name}")


def context_budget(jr, rounds: int, max_reflection: int) -> int:
    """Positions of the longest row an introspective run of ``rounds`` images builds, new tokens included
    (the engine's own bound: ``janus_r1.model.memory.context_tokens``)."""
    return engine_module("model.memory").context_tokens(jr.num_image_tokens, rounds, max_reflection)


# --- progress, preview, interrupt, text -----------------------------------------------------------------------


class RunHooks:
    """Engine hooks bridged to ComfyUI for one node execution.

    * ``comfy.utils.ProgressBar`` per token (the bar restarts for each phase: image 1/3, judge 1/3, ...);
    * every ``preview_every`` image tokens, the partial image (missing codes padded) as the preview;
    * the reasoning so far, streamed with ``PromptServer.send_progress_text`` where the server offers it;
    * ``should_cancel`` polls ComfyUI's interrupt flag between tokens; :meth:`run` turns the engine's
      ``Cancelled`` into ComfyUI's own interrupt exception so the prompt ends as interrupted.
    """

    def __init__(self, jr, node_id: str | None, preview_every: int = 64, text_every: int = 8):
        import comfy.model_management as mm
        import comfy.utils

        self.jr = jr
        self.node_id = node_id
        self.mm = mm
        self.bar = comfy.utils.ProgressBar(1, node_id=node_id)
        self.preview_every = max(1, preview_every)
        self.text_every = max(1, text_every)
        self.phase = ""
        self.transcript: list[str] = []
        self._server = _prompt_server()
        eng = engine()
        self.hooks = eng.Hooks(
            on_step=self.on_step, should_cancel=mm.processing_interrupted, on_phase=self.on_phase
        )

    # engine callbacks
    def on_phase(self, label: str) -> None:
        self.phase = label
        self.transcript.append(f"[{label}]")
        self.stream("\n".join(self.transcript))

    def on_step(self, ev) -> None:
        total = max(int(ev.total), 1)
        step = int(ev.step)
        preview = None
        if ev.phase == "image":
            if step % self.preview_every == 0 and step < total:
                preview = self._preview(ev.tokens)
            if step % max(1, total // 64) == 0 or step == total or preview is not None:
                self.bar.update_absolute(step, total, preview)
        else:
            if step % self.text_every == 0 or step == 1:
                self.bar.update_absolute(step, total)
                text = self._decode_text(ev.tokens)
                if text is not None:
                    self.stream("\n".join([*self.transcript, text]))

    def _preview(self, tokens: torch.Tensor):
        """The first row's partial image: codes sampled so far, the rest padded with the last one."""
        try:
            n = self.jr.num_image_tokens
            row = tokens[:1].detach()
            pad = row[:, -1:].expand(1, n - row.shape[1])
            img = self.jr.janus.decode_codes(torch.cat([row, pad], dim=1))[0]
        except Exception as e:  # a preview must never break the run
            log.debug("Janus-R1 preview failed: %s", e)
            return None
        return ("JPEG", img, 512)

    def _decode_text(self, tokens: torch.Tensor) -> str | None:
        try:
            return self.jr.vocab.decode(tokens[0].tolist())
        except Exception:  # streaming is best effort
            return None

    def stream(self, text: str) -> None:
        if (
            self._server is not None
            and self.node_id is not None
            and hasattr(self._server, "send_progress_text")
        ):
            try:
                self._server.send_progress_text(text, self.node_id)
            except Exception as e:  # no client connected, older server: the final ui text still shows it
                log.debug("Janus-R1 send_progress_text failed: %s", e)

    def run(self, fn, *args, **kwargs):
        """Call an engine method with these hooks; interrupt -> ComfyUI's InterruptProcessingException."""
        eng = engine()
        try:
            return fn(*args, hooks=self.hooks, **kwargs)
        except eng.Cancelled:
            self.mm.throw_exception_if_processing_interrupted()
            raise self.mm.InterruptProcessingException() from None
        except eng.JanusR1Error as e:
            raise ValueError(f"Janus-R1: {e}") from None


def _prompt_server():
    try:
        from server import PromptServer
    except Exception:  # unit tests, embedded executors
        return None
    return getattr(PromptServer, "instance", None)


def node_id(cls) -> str | None:
    hidden = getattr(cls, "hidden", None)
    return getattr(hidden, "unique_id", None) if hidden is not None else None


def format_scores(rows: list[tuple[int, float | None, str, str]]) -> str:
    """'#1  S=0.912  Yes  reflection' lines, one per image, for the node's text display."""
    lines = []
    for idx, score, verdict, text in rows:
        s = "  n/a" if score is None else f"{score:.3f}"
        lines.append(f"image {idx}: S={s}  {verdict}  {text.strip()}".rstrip())
    return "\n".join(lines)
