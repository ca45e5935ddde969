"""Issue 17 in ComfyUI's real frontend (headless Chromium on the real server): what an artist sees after a run --
Best of N shows its pick, no node grows over another, no progress label is left behind (after a run or an
interrupt), and the template browser shows every Janus-R1 template's thumbnail and readable title.

Screenshots land in ``$JANUS_R1_SHOTS`` (default: pytest's tmp dir) so a person can look at them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
from test_comfy_browser import COT_WORKFLOW, WORKFLOWS, _overlaps, fe  # noqa: F401 - fe is a fixture

REPO = Path(__file__).resolve().parents[2]
BEST_OF_N = REPO / "workflows" / "Janus-R1 Best of N.json"
EDIT = REPO / "workflows" / "Janus-R1 Edit Image.json"
NATIVE = "$$node-text-preview"  # the frontend's streamed-text box
NATIVE_JS = f"""() => app.graph._nodes.filter((n) => String(n.type).startsWith("JanusR1"))
  .filter((n) => (n.widgets ?? []).some((w) => w.name === {json.dumps(NATIVE)})).map((n) => n.type)"""
SIZES_JS = "() => app.graph._nodes.map((n) => ({type: n.type, pos: [...n.pos], size: [...n.size]}))"


def _node_id(path: Path, typ: str) -> int:
    return next(n["id"] for n in json.loads(path.read_text())["nodes"] if n["type"] == typ)


def _run(fe, path: Path) -> dict:  # noqa: F811
    fe.load(path)
    fe.wait_images()
    hist = fe.server.wait_history(fe.queue())
    assert hist["status"]["status_str"] == "success", hist["status"]
    fe.page.wait_for_timeout(800)  # the executed messages reach the page, images decode
    return hist


def _shot_of_node(fe, node_id: int, out: Path) -> None:  # noqa: F811
    fe.fit_view()
    box = fe.page.evaluate(
        """(id) => {
          const n = app.graph.getNodeById(id), ds = app.canvas.ds;
          const r = app.canvas.canvas.getBoundingClientRect(), th = LiteGraph.NODE_TITLE_HEIGHT;
          const sx = (x) => r.left + (x + ds.offset[0]) * ds.scale, sy = (y) => r.top + (y + ds.offset[1]) * ds.scale;
          return [sx(n.pos[0]), sy(n.pos[1] - th), sx(n.pos[0] + n.size[0]), sy(n.pos[1] + n.size[1])];
        }""",
        node_id,
    )
    x0, y0, x1, y1 = (max(0, v) for v in box)
    fe.page.screenshot(path=str(out), clip={"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0})


def test_best_of_n_shows_its_pick_after_the_run(fe, shots):  # noqa: F811
    """Finding 1: the big image on the node is the image it returns as ``best`` (rank #1), not the last live
    preview of a sampling row."""
    hist = _run(fe, BEST_OF_N)
    bon = _node_id(BEST_OF_N, "JanusR1BestOfN")
    [shown] = hist["outputs"][str(bon)]["images"]
    fe.page.wait_for_function(
        "([id, f]) => (app.graph.getNodeById(id).imgs ?? []).some((i) => i.src.includes(f) && i.complete)",
        arg=[bon, shown["filename"]],
        timeout=20_000,
    )
    srcs = fe.page.evaluate("(id) => (app.graph.getNodeById(id).imgs ?? []).map((i) => i.src)", bon)
    assert len(srcs) == 1 and shown["filename"] in srcs[0] and "type=temp" in srcs[0], srcs
    # the pick the node returns: the same pixels as the Save Image node's file
    save = _node_id(BEST_OF_N, "SaveImage")
    [saved] = hist["outputs"][str(save)]["images"]
    base = fe.server.base
    from PIL import Image, ImageChops

    a = Image.open(base / "temp" / shown["subfolder"] / shown["filename"]).convert("RGB")
    b = Image.open(base / "output" / saved["subfolder"] / saved["filename"]).convert("RGB")
    assert ImageChops.difference(a, b).getbbox() is None
    assert "#1:" in hist["outputs"][str(bon)]["text"][0]
    _shot_of_node(fe, bon, shots / "best_of_n_after_run.png")
    fe.fit_view()
    fe.page.screenshot(path=str(shots / "best_of_n_workflow_after_run.png"))


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_has_room_for_its_outputs_after_a_run(fe, shots, path):  # noqa: F811
    """Finding 4: once every Save/Preview node shows its picture and each Janus-R1 node its image and
    reasoning, still no node covers another."""
    _run(fe, path)
    fe.fit_view()
    nodes = fe.page.evaluate(SIZES_JS)
    fe.page.screenshot(path=str(shots / f"{path.stem} after run.png"))
    assert _overlaps(nodes) == []
    assert fe.page.evaluate(NATIVE_JS) == []  # finding 6: no "[edit]" / "[image 1]" label left


def test_no_progress_label_left_after_an_interrupt(fe):  # noqa: F811
    """Finding 6: an interrupted CoT run leaves no "[image 1/10]" label on the node."""
    wf = json.loads(COT_WORKFLOW.read_text())
    for n in wf["nodes"]:
        if n["type"] == "JanusR1CoTGenerate":
            v = n["widgets_values"]  # [3] max_rounds, [9] max_reflection, [10] batch_size
            v[3], v[9], v[10] = 10, 1024, 8  # long enough to interrupt
    cot = _node_id(COT_WORKFLOW, "JanusR1CoTGenerate")
    fe.load(wf, "interrupt_probe")
    pid = fe.queue()
    fe.page.wait_for_function(  # the run streams its labels onto the node
        f"(id) => (app.graph.getNodeById(id).widgets ?? []).some((w) => w.name === {json.dumps(NATIVE)})",
        arg=cot,
        timeout=60_000,
    )
    code, _ = fe.server.post("/interrupt", {})
    assert code == 200
    hist = fe.server.wait_history(pid, timeout=120)
    assert "execution_interrupted" in [m[0] for m in hist["status"].get("messages", [])]
    deadline = time.monotonic() + 10
    while fe.page.evaluate(NATIVE_JS) and time.monotonic() < deadline:
        fe.page.wait_for_timeout(200)
    assert fe.page.evaluate(NATIVE_JS) == []
    box = fe.page.evaluate(
        "(id) => (app.graph.getNodeById(id).widgets ?? []).find((w) => w.name === 'janus_r1_text')?.value ?? ''",
        cot,
    )
    assert "[image" not in box and "[judge" not in box, box


def test_template_browser_shows_thumbnails_and_titles(fe, shots):  # noqa: F811
    """Finding 3: Workflow > Browse Templates lists the pack's templates with readable titles and real
    thumbnails (frontend 1.32.9 asks for <name>.jpg; these were 404s)."""
    asked: dict[str, int] = {}

    def on_response(r) -> None:
        if "/api/workflow_templates/janus-r1/" in r.url and r.url.endswith(".jpg"):
            asked[unquote(r.url.rsplit("/", 1)[1])] = r.status

    fe.page.on("response", on_response)
    try:
        fe.command("Comfy.BrowseTemplates")
        fe.page.wait_for_selector(".p-dialog", state="visible", timeout=20_000)
        want = sorted(p.stem for p in WORKFLOWS)
        # the pack's category in the dialog's side bar (labelled with the custom_nodes folder name)
        fe.page.locator(".p-dialog").get_by_text("janus-r1", exact=True).first.click()
        deadline = time.monotonic() + 30
        while len(asked) < len(want) and time.monotonic() < deadline:
            fe.page.wait_for_timeout(200)
        assert asked == {f"{n}.jpg": 200 for n in want}, asked  # the files the frontend asks for, all found
        fe.page.wait_for_function(  # and drawn: every card's picture decoded (they arrive as blob: URLs)
            """(n) => { const imgs = [...document.querySelectorAll('.p-dialog img')];
                        return imgs.length >= n && imgs.every((i) => i.complete && i.naturalWidth > 0); }""",
            arg=len(want),
            timeout=30_000,
        )
        text = fe.page.locator(".p-dialog").inner_text()
        for title in want:
            assert title in text, title
    finally:
        fe.page.remove_listener("response", on_response)
    fe.page.screenshot(path=str(shots / "template_browser.png"))
    fe.page.keyboard.press("Escape")


REGENERATE = REPO / "workflows" / "Janus-R1 Regenerate Image.json"
OLD_REGENERATE = Path(__file__).parent / "old_workflows" / "janus_r1_regenerate_image.json"
SHOWN_JS = "(id) => app.graph.getNodeById(id).widgets.map((w) => w.name)"
BY_NAME_JS = "(id) => Object.fromEntries(app.graph.getNodeById(id).widgets.map((w) => [w.name, w.value]))"


def test_regenerate_shows_the_critique_first_and_saves_in_the_stored_order(fe):  # noqa: F811
    """Finding 10: what the artist types (prompt, critique) comes first on Regenerate; saved files keep the
    backend's widget order, so a workflow saved before (critique after the sampling settings) loads onto the
    right widgets and a new save converts like before."""
    for path in (REGENERATE, OLD_REGENERATE):
        wf = json.loads(path.read_text())
        node = next(n for n in wf["nodes"] if n["type"] == "JanusR1Regenerate")
        fe.load(wf, path.stem)
        assert fe.page.evaluate(SHOWN_JS, node["id"])[:3] == ["prompt", "critique", "seed"]
        values = fe.page.evaluate(BY_NAME_JS, node["id"])
        v = node["widgets_values"]
        assert (values["prompt"], values["seed"], values["max_rounds"], values["always_redraw"]) == (
            v[0],
            v[1],
            v[3],
            v[4],
        )
        assert values["critique"] == "" and values["cfg"] == v[5]
        # typed critique is saved in the stored (backend) slot, and reloads onto the critique widget
        fe.page.evaluate(
            "(id) => { app.graph.getNodeById(id).widgets.find((w) => w.name === 'critique').value = 'no cat'; }",
            node["id"],
        )
        saved = fe.page.evaluate("(id) => app.graph.getNodeById(id).serialize().widgets_values", node["id"])
        assert saved[:2] == v[:2] and saved[11] == "no cat", saved
        wf2 = fe.page.evaluate("() => app.graph.serialize()")
        fe.load(wf2, "reloaded")
        assert fe.page.evaluate(BY_NAME_JS, node["id"])["critique"] == "no cat"
