"""Draw the workflow thumbnails (``workflows/<name>.jpg``, the file the template browser asks for) and the README screenshot (``docs/comfyui_cot_workflow.png``)
in ComfyUI's real web frontend: the real server with the tiny random model, headless Chromium, the same helpers as
``test_comfy_browser.py``. Not a test; run it after changing a workflow or a node's widgets:

    python tools/comfy/make_screenshots.py [NAME ...]      (default: every workflow and the README screenshot)

Needs what the ComfyUI tests need (tests/comfy/setup_comfy.sh) plus Debian's chromium and the playwright package.
The README screenshot shows the CoT workflow after a run; with the tiny random model its pictures are noise and
its reasoning is gibberish, but both are really produced and shown by the pack's nodes.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = REPO / "tests" / "comfy"  # the browser test's helpers, which this generator reuses
sys.path.insert(0, str(HERE))
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

import conftest  # noqa: E402
import harness  # noqa: E402
from test_comfy_browser import COT_WORKFLOW, WORKFLOWS, browser_missing, frontend  # noqa: E402

THUMB_VIEWPORT = (1600, 900)
SCREENSHOT = REPO / "docs" / "comfyui_cot_workflow.png"
MARGIN = 24
# the graph's bounding box on screen (nodes with their title bars), after the view was fitted
BOUNDS_JS = """() => {
  const ds = app.canvas.ds, r = app.canvas.canvas.getBoundingClientRect(), th = LiteGraph.NODE_TITLE_HEIGHT;
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const n of app.graph._nodes) {
    x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - th);
    x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
  }
  const sx = (x) => r.left + (x + ds.offset[0]) * ds.scale, sy = (y) => r.top + (y + ds.offset[1]) * ds.scale;
  return [sx(x0), sy(y0), sx(x1), sy(y1)];
}"""


def example_picture(path: Path) -> Path:
    """A friendlier stand-in for ComfyUI's example.png (the picture the LoadImage nodes show)."""
    from PIL import Image, ImageDraw

    w, h = 512, 384
    img = Image.new("RGB", (w, h))
    d = ImageDraw.Draw(img)
    for y in range(h):  # dusk sky
        t = y / h
        d.line([(0, y), (w, y)], fill=(int(40 + 200 * t), int(60 + 90 * t), int(140 - 40 * t)))
    d.ellipse([330, 70, 420, 160], fill=(255, 214, 120))
    d.polygon(
        [(0, 300), (120, 210), (250, 290), (380, 200), (512, 280), (512, 384), (0, 384)], fill=(46, 82, 64)
    )
    d.polygon([(0, 384), (0, 340), (200, 300), (420, 350), (512, 330), (512, 384)], fill=(30, 56, 44))
    img.save(path)
    return path


def thumbnail(fe, path: Path) -> Path:
    report = fe.load(path)
    assert report["missing"] == [] and report["dialogs"] == [], (
        path.name,
        report["missing"],
        report["dialogs"],
    )
    fe.wait_images()
    fe.fit_view()
    x0, y0, x1, y1 = fe.page.evaluate(BOUNDS_JS)
    vw, vh = THUMB_VIEWPORT
    x0, y0 = max(0, x0 - MARGIN), max(0, y0 - MARGIN)
    x1, y1 = min(vw, x1 + MARGIN), min(vh, y1 + MARGIN)
    out = path.with_suffix(".jpg")  # frontend 1.32.9 loads /api/workflow_templates/<pack>/<name>.jpg
    fe.page.screenshot(
        path=str(out), type="jpeg", quality=85, clip={"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0}
    )
    return out


def readme_screenshot(fe) -> Path:
    fe.load(COT_WORKFLOW)
    cot = next(
        n["id"] for n in json.loads(COT_WORKFLOW.read_text())["nodes"] if n["type"] == "JanusR1CoTGenerate"
    )
    hist = fe.server.wait_history(fe.queue())
    assert hist["status"]["status_str"] == "success", hist["status"]
    text = "\n".join(hist["outputs"][str(cot)]["text"]).replace("\r\n", "\n").replace("\r", "\n")
    assert fe.node_text(cot, text) == text, "the reasoning text did not appear on the CoT node"
    fe.fit_view()
    fe.page.wait_for_timeout(500)  # image previews decoded
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    fe.page.screenshot(path=str(SCREENSHOT))
    return SCREENSHOT


def main(names: list[str]) -> None:
    why = conftest._missing() or browser_missing()
    if why:
        raise SystemExit(why)
    todo = [p for p in WORKFLOWS if not names or p.stem in names]
    with tempfile.TemporaryDirectory(prefix="janus_r1_shots_") as tmp:
        tmp = Path(tmp)
        from janus_r1.model.tiny_files import write_tiny

        comfy = harness.copy_comfy(harness.comfy_source(), tmp / "ComfyUI")
        model = write_tiny(tmp / "model" / "Janus-Pro-R1-7B", layout="deepseek", geometry="micro")
        (tmp / "images").mkdir()
        images = conftest.write_test_images(tmp / "images")
        images["example.png"] = example_picture(tmp / "images" / "example.png")
        base = harness.make_base(tmp / "base", model, images)
        with conftest.start_server(comfy, base) as srv:
            with frontend(srv, THUMB_VIEWPORT) as fe:
                fe.command("Workspace.ToggleFocusMode")  # the canvas alone for the thumbnails
                for path in todo:
                    out = thumbnail(fe, path)
                    print(f"{out.relative_to(REPO)}: {out.stat().st_size // 1024} KB")
            if not names or "readme" in names:
                # a fresh page: the whole UI with this one workflow open (its name in the top bar, no tab row)
                with frontend(srv, (1600, 900), {"Comfy.Workflow.WorkflowTabsPosition": "Sidebar"}) as fe:
                    out = readme_screenshot(fe)
                    print(f"{out.relative_to(REPO)}: {out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main(sys.argv[1:])
