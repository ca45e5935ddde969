"""ComfyUI's real web frontend (served by the real server) in headless Chromium: every shared workflow loads with
no missing node types, the pack's JS extension loads, and a queued CoT workflow shows its reasoning on the node.

Browser: Debian's ``chromium`` (``apt-get install chromium``; ``$JANUS_R1_CHROMIUM`` overrides the path) driven
by the Python ``playwright`` package with that executable (installed with ``PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1``;
``playwright install`` is never run). Without them the tests skip; under CI (``CI`` set) they fail.
``tools/comfy/make_screenshots.py`` uses the same helpers to draw the workflow thumbnails and the README screenshot.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
OLD_WORKFLOWS = sorted((Path(__file__).parent / "old_workflows").glob("*.json"))  # saved before newer widgets
COT_WORKFLOW = REPO / "workflows" / "Janus-R1 CoT Text to Image.json"
TEXT_WIDGET = "janus_r1_text"  # web/js/janus_r1.js
EXTENSION = "JanusR1.ReasoningText"

# root in a container, no network beyond the package registries: no sandbox, nothing that calls home
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
# a returning user: no template browser on first start, no release notes, no minimap or canvas stats
SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.InstalledVersion": "1.32.9",
    "Comfy.Notification.ShowVersionUpdates": False,
    "Comfy.Minimap.Visible": False,
    "Comfy.Graph.CanvasInfo": False,
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,  # full detail when a fitted view zooms out
}
INIT_JS = "localStorage.setItem('vueNodesBannerDismissed', 'true');"
READY_JS = """() => !!(window.app?.graph && window.app.canvas && window.app.extensionManager?.command
    && window.LiteGraph?.registered_node_types?.JanusR1Loader)"""
# the frontend's own report of missing node types: app.loadGraphData hands it to afterConfigureGraph
HOOK_JS = """() => {
  window.__janusMissing = null;
  app.registerExtension({
    name: "JanusR1.Test.MissingNodes",
    afterConfigureGraph(missing) {
      window.__janusMissing = (missing ?? []).map((m) => (typeof m === "string" ? m : m.type));
    },
  });
}"""
LOAD_JS = """async ([wf, name]) => {
  window.__janusMissing = null;
  await app.loadGraphData(wf, true, true, name);
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  return {
    missing: window.__janusMissing,
    nodes: app.graph._nodes.map((n) => ({
      id: n.id, type: n.type, registered: n.type in LiteGraph.registered_node_types,
      pos: [n.pos[0], n.pos[1]], size: [n.size[0], n.size[1]],
      combos: (n.widgets ?? []).filter((w) => w.type === "combo")
        .map((w) => [w.name, w.value, w.options?.values ?? null]),
    })),
    links: app.graph.links instanceof Map ? app.graph.links.size : Object.keys(app.graph.links ?? {}).length,
    dialogs: [...document.querySelectorAll(".p-dialog")].filter((d) => d.offsetParent !== null)
      .map((d) => d.innerText.slice(0, 300)),
  };
}"""
TEXT_JS = f"""(id) => {{
  const w = app.graph.getNodeById(id)?.widgets?.find((x) => x.name === {json.dumps(TEXT_WIDGET)});
  return w && w.value ? String(w.value) : null;
}}"""

WIDGETS_JS = "(id) => app.graph.getNodeById(id)?.widgets?.map((w) => [w.name, String(w.value).slice(0, 80)])"
# while a run goes on, what the node shows, sampled every animation frame: its progress bar (LiteGraph draws
# node.progress, set from the server's progress_state), and the live preview (the frontend keeps the server's
# b_preview_with_metadata images per node in app.nodePreviewImages and draws them as node.imgs)
# the values as the frontend saves them (a node may show its widgets in another order, e.g. Regenerate's critique
# right under the prompt, but saves them in the backend's order)
VALUES_JS = """(id) => app.graph.getNodeById(id).serialize().widgets_values.filter((v) => v !== undefined)"""
WATCH_JS = """(id) => {
  const seen = (window.__janusSeen = { progress: [], previews: 0, drawn: 0, events: [] });
  window.__janusWatch = true;
  const tick = () => {
    const n = app.graph.getNodeById(id);
    if (n && typeof n.progress === "number" && n.progress > 0) seen.progress.push(n.progress);
    if (app.nodePreviewImages?.[String(id)]?.length) seen.previews++;
    if ((n?.imgs ?? []).some((im) => String(im.src).startsWith("blob:"))) seen.drawn++;
    if (window.__janusWatch) requestAnimationFrame(tick);
  };
  app.api.addEventListener("b_preview_with_metadata", (e) => seen.events.push(String(e.detail?.displayNodeId)));
  requestAnimationFrame(tick);
}"""


def chromium_path() -> str | None:
    env = os.environ.get("JANUS_R1_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    return shutil.which("chromium") or next(
        (p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).is_file()), None
    )


def browser_missing() -> str | None:
    import importlib.util

    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 pip install playwright)"
    if chromium_path() is None:
        return "Debian's chromium is not installed (apt-get install chromium)"
    return None


class Frontend:
    """One page of ComfyUI's frontend, driven through its own JS API (window.app)."""

    def __init__(self, page, server, log: list[str]):
        self.page, self.server, self.log = page, server, log

    def load(self, workflow: Path | dict, name: str | None = None) -> dict:
        wf = json.loads(workflow.read_text()) if isinstance(workflow, Path) else workflow
        name = name or (workflow.stem if isinstance(workflow, Path) else "workflow")
        return self.page.evaluate(LOAD_JS, [wf, name])

    def wait_images(self) -> None:
        """Until every LoadImage node shows its picture (the node grows when it arrives)."""
        self.page.wait_for_function(
            "() => app.graph._nodes.filter((n) => n.type === 'LoadImage')"
            ".every((n) => n.imgs?.length && n.imgs.every((i) => i.complete && i.naturalWidth))",
            timeout=20_000,
        )
        self.page.wait_for_timeout(200)

    def command(self, cmd: str) -> None:
        self.page.evaluate("(c) => app.extensionManager.command.execute(c)", cmd)

    def fit_view(self) -> None:
        self.command("Comfy.Canvas.FitView")
        self.page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
        self.page.wait_for_timeout(300)

    def queue(self) -> str:
        """Queue the loaded graph the way the Run button does; the prompt id the server answered."""
        with self.page.expect_response(
            lambda r: r.url.endswith("/prompt") and r.request.method == "POST", timeout=60_000
        ) as info:
            self.page.evaluate("() => app.queuePrompt(0, 1)")
        resp = info.value
        body = resp.json()
        assert resp.status == 200, body
        return body["prompt_id"]

    def node_text(self, node_id: int, expected: str, timeout_ms: int = 30_000) -> str:
        """The text the pack's extension shows on the node, once it is ``expected`` (the run's ``executed``
        message may come a moment after /history reports the prompt complete) or when the wait runs out."""
        with contextlib.suppress(Exception):
            self.page.wait_for_function(
                f"([id, want]) => ({TEXT_JS})(id) === want", arg=[node_id, expected], timeout=timeout_ms
            )
        return self.page.evaluate(TEXT_JS, node_id)


@contextlib.contextmanager
def frontend(server, viewport: tuple[int, int] = (1600, 900), settings: dict | None = None):
    """Headless Chromium on the server's frontend, ready (app up, the pack's nodes registered)."""
    from playwright.sync_api import sync_playwright

    code, body = server.post("/settings", {**SETTINGS, **(settings or {})})
    assert code == 200, body
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.set_default_timeout(60_000)
            log: list[str] = []
            page.on("console", lambda m: log.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: log.append(f"pageerror: {e}"))
            page.add_init_script(INIT_JS)
            page.goto(server.url + "/")
            try:
                page.wait_for_function(READY_JS, timeout=120_000)
            except Exception as e:
                raise AssertionError("frontend not ready; console:\n" + "\n".join(log[-40:])) from e
            page.evaluate(HOOK_JS)
            yield Frontend(page, server, log)
        finally:
            browser.close()


@pytest.fixture(scope="module")
def fe(server):
    why = browser_missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: {why}")
        pytest.skip(why)
    with frontend(server) as f:
        yield f


def test_pack_extension_loads(fe):
    errors = [m for m in fe.log if "janus_r1" in m.lower() or "janus-r1" in m.lower()]
    assert not [m for m in errors if m.startswith(("error", "pageerror"))], errors
    assert fe.page.evaluate(f"app.extensions.some((e) => e.name === {json.dumps(EXTENSION)})")


def test_missing_node_detection_works(fe):
    """The check below is not vacuous: an unknown node type is reported and the frontend's dialog appears."""
    wf = json.loads(COT_WORKFLOW.read_text())
    bogus = dict(wf["nodes"][-1], id=99, type="JanusR1NoSuchNode", widgets_values=[])
    wf["nodes"].append(bogus)
    report = fe.load(wf, "missing_probe")
    assert report["missing"] == ["JanusR1NoSuchNode"]
    fe.page.wait_for_selector(".p-dialog", state="visible", timeout=10_000)
    fe.page.keyboard.press("Escape")
    fe.page.wait_for_selector(".p-dialog", state="hidden", timeout=10_000)


@pytest.mark.parametrize("path", WORKFLOWS + OLD_WORKFLOWS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_workflow_loads_without_missing_nodes(fe, path):
    wf = json.loads(path.read_text())
    report = fe.load(path)
    assert report["missing"] == [], report["missing"]  # the frontend's own list
    assert report["dialogs"] == [], report["dialogs"]  # no missing-nodes / missing-models / error dialog
    assert sorted(n["id"] for n in report["nodes"]) == sorted(n["id"] for n in wf["nodes"])
    assert all(n["registered"] for n in report["nodes"]), [n["type"] for n in report["nodes"]]
    assert report["links"] == len(wf["links"])
    # saved widget values stay on their widgets (new widgets are appended, so old files keep their order)
    for n in wf["nodes"]:
        if n["type"].startswith("JanusR1"):
            values = fe.page.evaluate(VALUES_JS, n["id"])
            assert values[: len(n["widgets_values"])] == n["widgets_values"], (n["type"], values)
    # every combo (the loader's model folder, LoadImage's file) holds a value the server lists
    for n in report["nodes"]:
        for name, value, options in n["combos"]:
            if isinstance(options, list) and name != "control_after_generate":
                assert value in options, f"{n['type']}.{name}={value!r} not in {options[:10]}"


def test_cot_workflow_runs_and_shows_reasoning(fe):
    fe.load(COT_WORKFLOW)
    cot = next(
        n["id"] for n in json.loads(COT_WORKFLOW.read_text())["nodes"] if n["type"] == "JanusR1CoTGenerate"
    )
    fe.page.evaluate(WATCH_JS, cot)
    pid = fe.queue()
    hist = fe.server.wait_history(pid)
    fe.page.wait_for_timeout(300)
    seen = fe.page.evaluate("() => { window.__janusWatch = false; return window.__janusSeen; }")
    assert hist["status"]["status_str"] == "success", hist["status"]
    # while it ran, the node showed its progress bar and the live preview of the image being drawn
    assert seen["progress"] and all(0 < p <= 1 for p in seen["progress"]), seen
    assert str(cot) in seen["events"], seen["events"]
    assert seen["previews"] > 0 and seen["drawn"] > 0, {k: v for k, v in seen.items() if k != "progress"}
    # as a textarea holds it: the browser turns CR and CRLF into LF (the tiny random model emits stray CRs)
    expected = re.sub(r"\r\n?", "\n", "\n".join(hist["outputs"][str(cot)]["text"]))
    assert expected.startswith("[image 1]")
    assert fe.node_text(cot, expected) == expected, fe.page.evaluate(WIDGETS_JS, cot)
    # and it is on screen: the extension's read-only text box, visible, in the viewport, not covered
    fe.fit_view()
    box = fe.page.locator('textarea[data-janus-r1="reasoning"]')
    assert box.count() == 1
    assert box.is_visible()
    assert box.input_value() == expected
    assert fe.page.evaluate(
        """() => {
          const el = document.querySelector('textarea[data-janus-r1="reasoning"]');
          const r = el.getBoundingClientRect();
          if (r.width < 50 || r.height < 30 || r.bottom > innerHeight || r.right > innerWidth) return false;
          return document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2) === el;
        }"""
    )


def _overlaps(nodes: list[dict], title_h: float = 30) -> list[tuple]:
    boxes = [
        (
            n["type"],
            n["pos"][0],
            n["pos"][1] - title_h,
            n["pos"][0] + n["size"][0],
            n["pos"][1] + n["size"][1],
        )
        for n in nodes
    ]
    out = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            dx, dy = min(a[3], b[3]) - max(a[1], b[1]), min(a[4], b[4]) - max(a[2], b[2])
            if dx > 0 and dy > 0:
                out.append((a[0], b[0], round(dx), round(dy)))
    return out


# before a run; test_comfy_browser_artist.py checks the same after a run (pictures, reasoning shown)
@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_nodes_do_not_overlap_in_the_frontend(fe, path):
    """What an artist sees: no node covers another once the frontend has sized them (image previews etc.)."""
    fe.load(path)
    fe.wait_images()
    fe.fit_view()
    nodes = fe.page.evaluate(
        "() => app.graph._nodes.map((n) => ({type: n.type, pos: [...n.pos], size: [...n.size]}))"
    )
    assert _overlaps(nodes) == []
