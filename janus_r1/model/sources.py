"""Where a model comes from: a local directory, the generated ``tiny-random`` model, or a hub id downloaded on request.

This is the one place that downloads and that reads ``HF_HUB_OFFLINE``: the engine's loader and the ComfyUI Loader
node both call :func:`download`, so a download fetches the same files and fails with the same advice everywhere.
Nothing downloads at import time, and never without being asked (a hub id not on disk, or the node's
``download_if_missing``).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path

from ..errors import JanusR1Error

logger = logging.getLogger(__name__)

TINY_RANDOM = "tiny-random"
HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "pytorch_model*.bin"]  # config, tokenizer, weights; no extras
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TRUE = {"1", "ON", "YES", "TRUE"}


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


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set now (1/on/yes/true) or was when huggingface_hub was imported."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return env in _TRUE or bool(constants.HF_HUB_OFFLINE)


def download(repo_id: str, progress: bool = True, local_dir: str | Path | None = None) -> Path:
    """Snapshot the files a model needs (config, tokenizer, weights), or explain why that is not possible.

    Into the hub cache by default (offline, a cached snapshot is still found), or into ``local_dir`` (the Loader
    node's ``models/janus/<name>``; offline, nothing is tried: the caller has already looked there).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    is_offline = offline()
    where = f" --local-dir {local_dir}" if local_dir is not None else ""
    instead = f"put the model files into {local_dir}" if local_dir is not None else "pass a local model directory"
    hint = (
        f"download it with `hf download {repo_id}{where}` (or `huggingface-cli download {repo_id}{where}`) while "
        f"online, or {instead}"
    )
    if is_offline and local_dir is not None:
        raise JanusR1Error(f"Model {repo_id!r} was not found locally and HF_HUB_OFFLINE=1; {hint}.")
    was_disabled = are_progress_bars_disabled()
    if not progress:
        disable_progress_bars()
    try:
        path = snapshot_download(
            repo_id,
            allow_patterns=HUB_ALLOW_PATTERNS,
            cache_dir=_hub_cache_dir(),
            local_dir=None if local_dir is None else str(local_dir),
            local_files_only=is_offline,
        )
    except Exception as e:  # hub, network and filesystem errors share no base class worth naming
        if is_offline:
            raise JanusR1Error(f"Model {repo_id!r} was not found locally and HF_HUB_OFFLINE=1; {hint}.") from e
        into = f"into {local_dir}" if local_dir is not None else "from the Hugging Face hub"
        raise JanusR1Error(
            f"{repo_id!r} is not a local directory and could not be downloaded {into} ({type(e).__name__}: {e}). "
            f"Check the path or repo id, your network and HF_TOKEN for gated repos, then re-run to resume; or "
            f"{hint}."
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
        return download(raw, progress)
    raise JanusR1Error(
        f"Model directory {raw!r} does not exist. Pass a local directory with config.json and weights, a hub id "
        f"like 'midbee/Janus-Pro-R1-7B', or '{TINY_RANDOM}'."
    )
