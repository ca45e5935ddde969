"""The plan of the house (docs/architecture.md), checked on the source: which part may import which, no import
cycles (function-level imports counted), no module over 350 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "janus_r1"
MAX_LINES = 350
COMFY = ("comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "nodes", "execution", "latent_preview")
KNOWN_TRAINING_CYCLES: list[set[str]] = []  # none left: judges.py and seeds.py broke the last two


def _name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_name(p): p for p in PKG.rglob("*.py")}


def _nodes(node: ast.AST):
    """Every node under ``node`` except the bodies of ``if TYPE_CHECKING:`` (annotations, never run)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
            continue
        yield child
        yield from _nodes(child)


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Every module ``name`` imports, at module level or inside functions. ``from pkg import sub`` counts as
    importing ``pkg.sub`` (not ``pkg/__init__``) when ``sub`` is a module."""
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out: set[str] = set()
    for node in _nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            up = base[: len(base) - node.level + 1] if node.level else []
            mod = ".".join(up + ([node.module] if node.module else []))
            for a in node.names:
                out.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {n: {m for m in _imports(p, n, mods) if m in mods and m != n} for n, p in mods.items()}


def _all_imports() -> dict[str, set[str]]:
    mods = _modules()
    return {n: _imports(p, n, mods) for n, p in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _in(mod: str, part: str) -> bool:
    return mod == part or mod.startswith(part + ".")


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert [c for c in cycles if c not in KNOWN_TRAINING_CYCLES] == []
    assert all(_in(m, "janus_r1.training") for c in KNOWN_TRAINING_CYCLES for m in c)


def test_the_cycle_finder_counts_function_level_imports(tmp_path):
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    f = tmp_path / "m.py"
    f.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .x import A\n"
                 "def g():\n    from . import y\n    from .z import B\n")
    assert _imports(f, "p.m", {"p.y": f}) == {"typing", "p.y", "p.z"}


def test_the_engine_never_imports_comfyui_or_the_nodes():
    bad = {n: sorted(m for m in imps if m.split(".")[0] in COMFY) for n, imps in _all_imports().items()}
    assert {n: b for n, b in bad.items() if b} == {}


def test_layers_point_one_way():
    graph = _graph()
    bad = [
        (n, m) for n, imps in graph.items() for m in imps
        if (_in(n, "janus_r1.model") and (_in(m, "janus_r1.generation") or _in(m, "janus_r1.training")
                                          or m in ("janus_r1", "janus_r1.api")))
        or (_in(n, "janus_r1.generation") and (_in(m, "janus_r1.training") or m in ("janus_r1", "janus_r1.api")))
    ]
    assert bad == []


def test_no_module_over_350_lines():
    files = [*PKG.rglob("*.py"), *(ROOT / "nodes").rglob("*.py")]
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


NODES = ROOT / "nodes"


def test_nodes_import_the_engine_plainly():
    """The nodes reach the engine by ordinary imports of the copy shipped next to them (``from ..janus_r1 import
    ...``) and call its methods by name, so go-to-definition and call graphs follow a widget into the engine:
    no importlib, no module loaded by file path, no method looked up by a task string."""
    bad = []
    for path in sorted(NODES.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] in ("importlib", "janus_r1") for a in
                                                     node.names):
                bad.append((path.name, "import " + ", ".join(a.name for a in node.names)))
            elif isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if mod.split(".")[0] == "importlib" or (node.level == 0 and mod.split(".")[0] == "janus_r1"):
                    bad.append((path.name, f"from {mod}"))
                if node.level == 2 and not (mod == "janus_r1" or mod.startswith("janus_r1.")
                                            or (not mod and [a.name for a in node.names] == ["janus_r1"])):
                    bad.append((path.name, f"from ..{mod}"))
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                    "getattr", "spec_from_file_location") and len(node.args) >= 2 and not isinstance(
                    node.args[1], ast.Constant):
                bad.append((path.name, f"{node.func.id}(..., <computed name>) line {node.lineno}"))
    assert bad == []
    engine_users = [p.name for p in NODES.glob("*.py") if "..janus_r1" in p.read_text()
                    or "from .. import janus_r1" in p.read_text()]
    assert {"widgets.py", "run.py", "handle.py", "loader.py"} <= set(engine_users), engine_users


def test_progress_interrupt_and_errors_are_wrapped_in_one_place():
    """Every task node calls the engine inside ``run.running`` (progress bar, preview, streamed text, interrupt,
    errors); only ``run.py`` and ``progress.py`` touch ComfyUI's progress bar and interrupt."""
    names = ("InterruptProcessingException", "ProgressBar", "Cancelled", "processing_interrupted")
    where = {p.name for p in NODES.glob("*.py") if any(n in p.read_text() for n in names)}
    assert where <= {"run.py", "progress.py"}, where
    for name in ("generate.py", "judge.py", "edit.py", "ask.py"):
        text = (NODES / name).read_text()
        assert "with running(cls, jr, " in text and "hooks=hooks" in text, name
