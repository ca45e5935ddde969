"""The real ComfyUI server (main.py --cpu on 127.0.0.1): POST /prompt, /history, interrupt, validation errors,
docs, JS extension and workflow templates served."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from harness import JANUS_NODES
from test_comfy_workflows import convert

REPO = Path(__file__).resolve().parents[2]
PACK = "janus-r1"  # folder name under custom_nodes (harness.PACK_NAME)


def _cot_prompt(object_info_file: Path, **over) -> dict:
    api = convert(REPO / "workflows" / "Janus-R1 CoT Text to Image.json", object_info_file)
    for node in api.values():
        if node["class_type"] == "JanusR1CoTGenerate":
            node["inputs"].update(over)
    return api


def test_nodes_registered_on_server(object_info):
    for name in JANUS_NODES:
        assert name in object_info


def test_post_prompt_runs_to_history(server, object_info_file):
    code, body = server.post(
        "/prompt", {"prompt": _cot_prompt(object_info_file), "client_id": uuid.uuid4().hex}
    )
    assert code == 200, body
    hist = server.wait_history(body["prompt_id"])
    assert hist["status"]["status_str"] == "success", hist["status"]
    outputs = hist["outputs"]
    texts = [o["text"][0] for o in outputs.values() if "text" in o]
    assert any(t.startswith("[image 1]") for t in texts)
    images = [im for o in outputs.values() for im in o.get("images", []) if im["type"] == "output"]
    assert images and (server.base / "output" / images[0]["subfolder"] / images[0]["filename"]).is_file()


def test_interrupt_then_next_prompt_runs(server, object_info_file):
    # a long run (many rounds, long reflections) that the interrupt cuts short
    slow = _cot_prompt(object_info_file, max_rounds=10, max_reflection=1024, batch_size=8, seed=99)
    code, body = server.post("/prompt", {"prompt": slow, "client_id": "t"})
    assert code == 200, body
    pid = body["prompt_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until it is running
        q = server.get("/queue")
        if any(item[1] == pid for item in q.get("queue_running", [])):
            break
        time.sleep(0.05)
    time.sleep(0.5)
    code, _ = server.post("/interrupt", {})
    assert code == 200
    hist = server.wait_history(pid, timeout=60)
    msgs = [m[0] for m in hist["status"].get("messages", [])]
    assert "execution_interrupted" in msgs, hist["status"]
    code, body = server.post("/prompt", {"prompt": _cot_prompt(object_info_file, seed=5), "client_id": "t"})
    assert code == 200
    assert server.wait_history(body["prompt_id"])["status"]["status_str"] == "success"


def test_invalid_prompt_is_rejected_with_node_errors(server, object_info_file):
    bad = _cot_prompt(object_info_file, max_rounds=99, cfg="strong")
    code, body = server.post("/prompt", {"prompt": bad, "client_id": "t"})
    assert code == 400
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    errs = json.dumps(body["node_errors"])
    assert "max_rounds" in errs and "cfg" in errs


def test_docs_js_and_templates_served(server):
    for node in JANUS_NODES:
        md = server.get(f"/extensions/{PACK}/docs/{node}.md", raw=True).decode()
        assert md.startswith("# ") and len(md) > 200, node
    exts = server.get("/extensions")
    assert any(e.startswith(f"/extensions/{PACK}/") and e.endswith(".js") for e in exts), exts
    templates = server.get("/api/workflow_templates")
    assert sorted(templates[PACK]) == sorted(p.stem for p in (REPO / "workflows").glob("*.json"))


def test_every_template_has_the_thumbnail_the_frontend_asks_for(server):
    """Workflow ▸ Browse Templates (frontend 1.32.9) lists a pack's templates by file name (its title) and loads
    the thumbnail ``/api/workflow_templates/<pack>/<name>.jpg`` (mediaSubtype "jpg" is hard-coded for custom
    node templates): every one must be a real JPEG, and every title readable (no underscores)."""
    import urllib.parse

    names = server.get("/api/workflow_templates")[PACK]
    assert names
    for name in names:
        quoted = urllib.parse.quote(name)
        wf = server.get(f"/api/workflow_templates/{PACK}/{quoted}.json")
        assert wf["nodes"], name
        jpg = server.get(f"/api/workflow_templates/{PACK}/{quoted}.jpg", raw=True)
        assert jpg[:3] == b"\xff\xd8\xff", f"{name}.jpg is not a JPEG"
        assert "_" not in name and name.startswith("Janus-R1 "), name
    assert any("text to image" in n.lower() and "cot" not in n.lower() for n in names), names


def test_a_pack_whose_engine_cannot_import_fails_to_load_like_comfyui_packs_do(comfy_tree, tmp_path, launch_server):
    """The nodes import the engine plainly (issue 25). When it cannot import -- here a dependency of the engine
    is missing -- ComfyUI's start-up log names the missing module and the install command and lists the pack as
    "(IMPORT FAILED)" (what ComfyUI-Manager reports); no Janus-R1 node registers, and the server runs on."""
    base = tmp_path / "base"
    pack = base / "custom_nodes" / "janus-r1"
    (pack / "janus_r1").mkdir(parents=True)
    for sub in ("input", "output", "temp", "user"):
        (base / sub).mkdir()
    (pack / "__init__.py").write_text((REPO / "__init__.py").read_text())
    (pack / "requirements.txt").write_text((REPO / "requirements.txt").read_text())
    (pack / "nodes").symlink_to(REPO / "nodes", target_is_directory=True)
    (pack / "janus_r1" / "__init__.py").write_text("import janus_r1_missing_dependency  # noqa: F401\n")
    with launch_server(comfy_tree, base) as srv:
        info = srv.get("/object_info")
        log = srv.log.read_text()
    assert not [n for n in info if n.startswith("JanusR1")]
    assert "LoadImage" in info
    line = next(ln for ln in log.splitlines() if "Janus-R1 cannot import its engine" in ln)
    assert "No module named 'janus_r1_missing_dependency'" in line, line
    assert f"python -m pip install -r {pack / 'requirements.txt'}" in line, line
    assert any("(IMPORT FAILED)" in ln and ln.rstrip().endswith("janus-r1") for ln in log.splitlines()), log[-3000:]
