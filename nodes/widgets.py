"""The node schemas' shared parts: categories, the paper's defaults, and input widgets written once.

Schema fields and widget options newer than ComfyUI 0.3.75 (``search_aliases``, ``advanced``) are
feature-detected and dropped where this ComfyUI lacks them.
"""

from __future__ import annotations

import dataclasses
import inspect

from comfy_api.latest import io

from ..janus_r1 import defaults as DEFAULTS  # the paper's defaults, as the API and CLI read them

ROOT = "Janus-R1"
CATEGORY_LOADERS = f"{ROOT}/loaders"
CATEGORY_GENERATE = f"{ROOT}/generate"
CATEGORY_JUDGE = f"{ROOT}/judge"
CATEGORY_EDIT = f"{ROOT}/edit"
CATEGORY_SAVE = f"{ROOT}/save"
CATEGORY_ASK = f"{ROOT}/ask"
MODEL_TYPE = "JANUS_R1_MODEL"  # pack-unique: other Janus packs already use JANUS_MODEL
JanusModel = io.Custom(MODEL_TYPE)
SEED_MAX = 0xFFFFFFFFFFFFFFFF

# widget label -> the engine's final rule (JanusR1.generate/regenerate ``final=``)
FINAL_RULES = {"last": "last", "best score": "best"}

_SCHEMA_FIELDS = (
    {f.name for f in dataclasses.fields(io.Schema)} if dataclasses.is_dataclass(io.Schema) else set()
)
_HAS_ADVANCED = "advanced" in inspect.signature(io.Int.Input.__init__).parameters


def schema(**kwargs) -> io.Schema:
    """``io.Schema`` with fields this ComfyUI lacks dropped."""
    if _SCHEMA_FIELDS:
        kwargs = {k: v for k, v in kwargs.items() if k in _SCHEMA_FIELDS}
    return io.Schema(**kwargs)


def seed_input(tooltip: str = "Random seed; the same seed and inputs give the same result.") -> io.Int.Input:
    return io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True, tooltip=tooltip)


def prompt_input(name: str = "prompt", tooltip: str = "What the image should show.") -> io.String.Input:
    return io.String.Input(name, multiline=True, default="", tooltip=tooltip)


def sampling_inputs(cfg: float = DEFAULTS.CFG) -> list:
    """cfg / temperature / top-k / top-p for image tokens, with the paper's defaults."""
    return [
        io.Float.Input(
            "cfg",
            default=cfg,
            min=1.0,
            max=20.0,
            step=0.1,
            round=0.01,
            tooltip=f"Classifier-free guidance weight for image tokens (paper: {cfg:g}). "
            "1 = no guidance (the text is followed only as much as the model does unguided); higher follows "
            "the text more closely. Values below 1 would push the image away from the text, so 1 is the least.",
        ),
        io.Float.Input(
            "temperature",
            default=DEFAULTS.TEMPERATURE,
            min=0.01,
            max=2.0,
            step=0.01,
            round=0.01,
            tooltip="Sampling temperature for image tokens (paper: 1.0).",
        ),
        io.Int.Input(
            "top_k",
            default=DEFAULTS.TOP_K,
            min=0,
            max=16384,
            tooltip="Keep only the k most likely image tokens (paper: 4096, 0 = no limit).",
        ),
        io.Float.Input(
            "top_p",
            default=DEFAULTS.TOP_P,
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
            default=DEFAULTS.TEXT_TOP_K,
            min=1,
            max=1000,
            tooltip="Top-k for the written reflection (paper: 50).",
        ),
        io.Int.Input(
            "max_reflection",
            default=DEFAULTS.MAX_REFLECTION,
            min=1,
            max=1024,
            tooltip="Most tokens the model may write when judging an image (reflection length).",
        ),
    ]


def final_input() -> io.Combo.Input:
    """Optional and last, so workflows saved before it existed load unchanged (widget values are positional)."""
    return io.Combo.Input(
        "final",
        options=list(FINAL_RULES),
        default="last",
        optional=True,
        tooltip="Which attempt is the output when the model never answers Yes: 'last' is the paper's rule "
        "(the last image drawn); 'best score' takes the attempt with the highest self-evaluation S.",
    )


def max_prompt_tokens_input() -> io.Int.Input:
    """Advanced, optional and last (see :func:`final_input`)."""
    extra = {"advanced": True} if _HAS_ADVANCED else {}
    return io.Int.Input(
        "max_prompt_tokens",
        default=DEFAULTS.MAX_PROMPT_TOKENS,
        min=16,
        max=4096,
        optional=True,
        tooltip="Advanced: the prompt's token budget with its template. The model was trained on captions "
        f"within {DEFAULTS.MAX_PROMPT_TOKENS} tokens; longer prompts are refused unless this is raised.",
        **extra,
    )


def decoding_inputs() -> list:
    """Advanced, optional and last: how image tokens are decoded (issue 26; the engine's ``Sampling.decoding``)."""
    extra = {"advanced": True} if _HAS_ADVANCED else {}
    return [
        io.Combo.Input(
            "decoding",
            options=["ar", "jacobi"],
            default="ar",
            optional=True,
            tooltip="Advanced: 'ar' draws one image token per forward pass (the paper's). 'jacobi' (speculative "
            "Jacobi decoding) verifies a window of draft tokens per pass: the same distribution in fewer passes, "
            "but another image for the same seed; more memory per pass.",
            **extra,
        ),
        io.Int.Input(
            "jacobi_window",
            default=16,
            min=2,
            max=256,
            optional=True,
            tooltip="Advanced: draft tokens per Jacobi window (decoding 'jacobi' only).",
            **extra,
        ),
    ]


MODEL_SIZE, INPUT_SIZE = "model size", "input size"
OUTPUT_SIZES = [MODEL_SIZE, INPUT_SIZE]


def output_size_input(what: str) -> io.Combo.Input:
    """Optional and last (see :func:`final_input`); the default keeps what saved workflows produced before."""
    return io.Combo.Input(
        "output_size",
        options=OUTPUT_SIZES,
        default=MODEL_SIZE,
        optional=True,
        tooltip=f"Size of the {what}: 'model size' is what the model draws (a 384x384 square for Janus-Pro); "
        "'input size' stretches it back to the input image's width and height (the model saw and redrew the "
        "input's centre square).",
    )


def choice(name: str, value: str, options: list[str]) -> str:
    """A combo value checked (ComfyUI 0.3.75 does not check V3 combo values; newer versions do)."""
    if value not in options:
        raise ValueError(f"Janus-R1: {name} must be one of {options}, got {value!r}.")
    return value


def final_rule(value: str) -> str:
    """The engine's ``final=`` for the widget's choice; checked here because ComfyUI 0.3.75 does not check V3
    combo values (newer versions do), and a validator would repeat its message once per input it takes."""
    if value not in FINAL_RULES:
        raise ValueError(f"Janus-R1: final must be one of {list(FINAL_RULES)}, got {value!r}.")
    return FINAL_RULES[value]


def require_text(name: str, value) -> str | None:
    """Validation message for an empty widget text (None = fine or linked)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        return f"{name} is empty; type what you want."
    return None


def prompt_budget_input() -> io.Int.Input:
    """Ask's answer length for prompts: optional and last (see :func:`final_input`)."""
    return io.Int.Input(
        "prompt_budget",
        default=DEFAULTS.MAX_PROMPT_TOKENS,
        min=0,
        max=4096,
        optional=True,
        tooltip=f"Keep each answer a usable prompt: at most this many tokens with the prompt template "
        f"({DEFAULTS.MAX_PROMPT_TOKENS} = what Text to Image, CoT Generate and Judge accept by default; match their "
        "max_prompt_tokens if you raised it). A longer answer stops there and ends at its last whole sentence, "
        "and the node's text says it was shortened. 0 = no budget (answers up to max_new_tokens, e.g. to read).",
    )


def ask_inputs() -> list:
    """Ask's question and answer widgets, with the engine's ask defaults (greedy: DeepSeek's own example).

    The frontend puts a "control after generate" next to any INT named seed; web/js/janus_r1.js starts Ask's at
    "fixed" and idles it while temperature is 0: a greedy answer does not depend on the seed, and a seed
    randomised after every queue would re-run the node -- and every node fed by its text -- each time."""
    return [
        io.String.Input(
            "question",
            multiline=True,
            default=DEFAULTS.ASK_QUESTION,
            tooltip="What to ask about each image. The default writes a description, e.g. as another model's "
            "prompt.",
        ),
        io.Int.Input(
            "seed",
            default=0,
            min=0,
            max=SEED_MAX,
            tooltip="Seed of the sampled answer (temperature > 0). A greedy answer (temperature 0) does not "
            "depend on it, so the seed then stays as it is whatever the control after it says, and Ask stays "
            "cached between runs.",
        ),
        io.Int.Input(
            "max_new_tokens",
            default=DEFAULTS.ASK_MAX_NEW_TOKENS,
            min=1,
            max=4096,
            tooltip="Most tokens of each answer; the model usually stops earlier by itself.",
        ),
        io.Float.Input(
            "temperature",
            default=DEFAULTS.ASK_TEMPERATURE,
            min=0.0,
            max=2.0,
            step=0.01,
            round=0.01,
            tooltip="0 = greedy (the same answer every time, as DeepSeek's example); higher samples more varied "
            "answers.",
        ),
        io.Float.Input(
            "top_p",
            default=DEFAULTS.ASK_TOP_P,
            min=0.01,
            max=1.0,
            step=0.01,
            round=0.01,
            tooltip="Nucleus sampling when temperature > 0 (1.0 = off); no effect at temperature 0.",
        ),
    ]
