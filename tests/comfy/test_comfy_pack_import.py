"""The pack's entry point is cheap and self-contained (no ComfyUI needed for these checks)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NODE_IDS = [
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


def test_entry_point_import_is_cheap():
    code = f"""
import importlib.util, inspect, json, sys
spec = importlib.util.spec_from_file_location("janus_r1_pack", {str(REPO / "__init__.py")!r},
                                              submodule_search_locations=[{str(REPO)!r}])
mod = importlib.util.module_from_spec(spec)
sys.modules["janus_r1_pack"] = mod
spec.loader.exec_module(mod)
heavy = [m for m in ("torch", "transformers", "comfy", "comfy_api", "nodes", "janus_r1") if m in sys.modules]
print(json.dumps({{"heavy": heavy, "web": mod.WEB_DIRECTORY,
                  "coro": inspect.iscoroutinefunction(mod.comfy_entrypoint),
                  "v1": hasattr(mod, "NODE_CLASS_MAPPINGS")}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res == {"heavy": [], "web": "./web", "coro": True, "v1": False}


def test_every_node_has_a_doc_page():
    for node in NODE_IDS:
        page = REPO / "web" / "docs" / f"{node}.md"
        assert page.is_file(), node
        text = page.read_text()
        assert text.startswith("# Janus-R1 ") and "## " in text


def test_requirements_match_engine_runtime_dependencies():
    reqs = {
        line.split(">")[0].split("=")[0].split("<")[0].strip().lower().replace("_", "-")
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    text = (REPO / "pyproject.toml").read_text()
    deps_block = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    deps = {
        d.strip().strip('",').split(">")[0].split("=")[0].split("<")[0].strip().lower().replace("_", "-")
        for d in deps_block.splitlines()
        if d.strip().strip('",')
    }
    assert deps - {"torch"} == reqs, (deps, reqs)


def test_node_docs_fit_the_help_sidebar():
    """The help sidebar is narrow and clipped wide Markdown tables (issue 17, finding 11): inputs are bullet
    lists; and no doc names a CLI flag (inside ComfyUI only widgets mean anything)."""
    for doc in sorted((REPO / "web" / "docs").glob("*.md")):
        text = doc.read_text()
        assert not [ln for ln in text.splitlines() if ln.lstrip().startswith("|")], f"{doc.name} has a table"
        assert not re.search(r"(?<![\w-])--[a-z]", text), f"{doc.name} mentions a CLI flag"
        # code does not wrap in the sidebar: a long line of it was cut off (issue 25, Save Reasoning's)
        long = [c for c in re.findall(r"`([^`\n]+)`", text) if len(c) > 36]
        blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S)
        long += [ln for b in blocks for ln in b.splitlines() if len(ln) > 40]
        assert long == [], f"{doc.name}: code too wide for the help sidebar: {long}"
