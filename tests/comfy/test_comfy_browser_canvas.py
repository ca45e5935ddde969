"""Issue 25 in ComfyUI's real frontend (headless Chromium on the real server): every template reads at Fit View;
the Ask -> CoT template runs with Ask's default widgets, and a second Run finds every Janus-R1 node cached (the
reasoning box is never sent with the prompt, and Ask's greedy seed stays put even with "randomize"); a node's
new run starts from a clean node, also when it is cancelled.

Screenshots land in ``$JANUS_R1_SHOTS`` (default: pytest's tmp dir) so a person can look at them.
"""

from __future__ import annotations

import json
from pathlib import Path

from test_comfy_browser import WORKFLOWS, fe  # noqa: F401 - fe is a fixture

REPO = Path(__file__).resolve().parents[2]
ASK_COT = REPO / "workflows" / "Janus-R1 Ask - describe and redraw.json"
TEXT_WIDGET = "janus_r1_text"
LOD = "LiteGraph.Canvas.MinFontSizeForLOD"
LOD_THRESHOLD = 8 / 14  # frontend 1.32.9: the default 8 px over LiteGraph's 14 px node text
SET_JS = "([k, v]) => app.extensionManager.setting.set(k, v)"
NODE_JS = """(id) => { const n = app.graph.getNodeById(id), key = String(id);
  return { widgets: (n.widgets ?? []).map((w) => w.name), imgs: (n.imgs ?? []).length,
           outputs: !!app.nodeOutputs?.[key], previews: !!app.nodePreviewImages?.[key] }; }"""
WIDGET_JS = "([id, name]) => app.graph.getNodeById(id).widgets.find((w) => w.name === name)?.value"
SET_WIDGET_JS = "([id, name, v]) => { app.graph.getNodeById(id).widgets.find((w) => w.name === name).value = v; }"


def _node_id(wf: dict, typ: str) -> int:
    return next(n["id"] for n in wf["nodes"] if n["type"] == typ)


def test_every_template_reads_at_fit_view(fe, shots):  # noqa: F811
    """Finding 6: at Fit View (the default level-of-detail setting) every template is drawn in full, not as
    blank boxes: the fitted zoom stays above the frontend's low-quality threshold."""
    fe.page.evaluate(SET_JS, [LOD, 8])
    try:
        scales = {}
        for path in WORKFLOWS:
            fe.load(path)
            fe.wait_images()
            fe.fit_view()
            fe.page.wait_for_timeout(400)  # the fit animation (350 ms) has ended
            scale, low = fe.page.evaluate("() => [app.canvas.ds.scale, app.canvas.low_quality]")
            scales[path.stem] = round(scale, 3)
            fe.page.screenshot(path=str(shots / f"fit {path.stem}.png"))
            assert not low and scale > LOD_THRESHOLD, (path.stem, scale)
    finally:
        fe.page.evaluate(SET_JS, [LOD, 0])
    assert min(scales.values()) >= 0.6, scales


def test_ask_into_cot_runs_with_defaults_and_the_second_run_is_cached(fe, shots):  # noqa: F811
    """Findings 1-3: Load Image -> Ask (default widgets) -> CoT Generate runs; the prompt the frontend sends
    carries no reasoning box; Run again and every Janus-R1 node is reported cached -- even with Ask's seed
    control on "randomize", since Ask answers greedily; a new Ask node's control starts at "fixed"."""
    wf = json.loads(ASK_COT.read_text())
    ask, cot = _node_id(wf, "JanusR1Ask"), _node_id(wf, "JanusR1CoTGenerate")
    janus = sorted(str(n["id"]) for n in wf["nodes"] if n["type"].startswith("JanusR1"))
    fe.load(ASK_COT)
    fe.wait_images()
    fe.page.evaluate(SET_WIDGET_JS, [ask, "control_after_generate", "randomize"])
    for name, value in (("max_rounds", 1), ("max_reflection", 16)):  # a short CoT (the executor test runs its
        fe.page.evaluate(SET_WIDGET_JS, [cot, name, value])  # defaults); Ask keeps every default
    seed = fe.page.evaluate(WIDGET_JS, [ask, "seed"])
    posted: list[dict] = []
    fe.page.on("request", lambda r: posted.append(r.post_data_json) if r.url.endswith("/prompt") and r.method ==
               "POST" else None)
    runs = []
    for _ in range(2):
        hist = fe.server.wait_history(fe.queue())
        assert hist["status"]["status_str"] == "success", hist["status"]
        fe.page.wait_for_timeout(500)  # the executed messages reach the page: the boxes are on the nodes
        runs.append(hist)
    text = fe.page.evaluate(WIDGET_JS, [cot, TEXT_WIDGET])
    assert text and text.startswith("[image 1]")
    assert fe.page.evaluate(WIDGET_JS, [ask, TEXT_WIDGET])  # Ask shows its answer
    fe.fit_view()
    fe.page.screenshot(path=str(shots / "ask into cot after two runs.png"))
    assert len(posted) == 2
    for body in posted:  # what the Run button sent: no display-only widget among any node's inputs
        assert all(TEXT_WIDGET not in node["inputs"] for node in body["prompt"].values()), body["prompt"]
    assert posted[1]["prompt"][str(ask)]["inputs"]["seed"] == seed  # greedy: the seed stayed put
    assert fe.page.evaluate(WIDGET_JS, [ask, "seed"]) == seed
    first, second = ({m[0]: m[1] for m in h["status"]["messages"]} for h in runs)
    ran = {str(ask), str(cot)}  # (the loader may be cached from an earlier test of this server)
    assert not ran & set(first.get("execution_cached", {}).get("nodes", []))  # the first run ran them
    assert set(janus) <= set(second["execution_cached"]["nodes"]), second  # the second found them cached
    assert not [e for e in fe.log if e.startswith("pageerror")], fe.log[-5:]
    created = fe.page.evaluate(
        """() => { const n = LiteGraph.createNode("JanusR1Ask"); app.graph.add(n);
                   const v = n.widgets.find((w) => w.name === "control_after_generate")?.value;
                   app.graph.remove(n); return v; }"""
    )
    assert created == "fixed"


def test_a_new_run_starts_from_a_clean_node_also_after_cancel(fe, shots):  # noqa: F811
    """Finding 5: once CoT Generate has run (image and reasoning on the node), a new run shows nothing of the old
    one while it runs -- only its own live text -- and after Cancel neither the old reasoning nor the old images
    come back."""
    wf = json.loads(ASK_COT.read_text())
    cot = _node_id(wf, "JanusR1CoTGenerate")
    fe.load(ASK_COT)
    fe.wait_images()
    for name, value in (("max_rounds", 1), ("max_reflection", 16)):  # as above: a short first run
        fe.page.evaluate(SET_WIDGET_JS, [cot, name, value])
    hist = fe.server.wait_history(fe.queue())
    assert hist["status"]["status_str"] == "success", hist["status"]
    fe.page.wait_for_function(  # the finished run is on the node: its reasoning and its image
        f"(id) => app.graph.getNodeById(id).widgets.some((w) => w.name === {json.dumps(TEXT_WIDGET)})"
        " && (app.graph.getNodeById(id).imgs ?? []).length > 0",
        arg=cot,
        timeout=30_000,
    )
    for name, value in (("max_rounds", 10), ("max_reflection", 1024), ("batch_size", 8), ("seed", 43)):
        fe.page.evaluate(SET_WIDGET_JS, [cot, name, value])  # a long run, to look at it while it runs
    pid = fe.queue()
    fe.page.wait_for_function(  # the new run streams its live text onto the node
        "(id) => (app.graph.getNodeById(id).widgets ?? []).some((w) => w.name === '$$node-text-preview')",
        arg=cot,
        timeout=60_000,
    )
    during = fe.page.evaluate(NODE_JS, cot)
    fe.page.screenshot(path=str(shots / "cot during a new run.png"))
    code, _ = fe.server.post("/interrupt", {})
    assert code == 200
    hist = fe.server.wait_history(pid, timeout=120)
    assert "execution_interrupted" in [m[0] for m in hist["status"].get("messages", [])]
    fe.page.wait_for_timeout(500)
    after = fe.page.evaluate(NODE_JS, cot)
    fe.fit_view()
    fe.page.screenshot(path=str(shots / "cot after cancel.png"))
    assert TEXT_WIDGET not in during["widgets"] and not during["outputs"], during  # no old reasoning, no old output
    assert TEXT_WIDGET not in after["widgets"] and not after["outputs"], after
    assert "$$node-text-preview" not in after["widgets"], after  # and no progress label left
