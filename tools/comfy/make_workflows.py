"""Write ``workflows/*.json`` (ComfyUI UI format, version 0.4) from a compact description and an /object_info dump.

Not a test. Run it after changing a node's inputs, then re-run the tests (they convert, validate and execute every
workflow):  python tools/comfy/make_workflows.py OBJECT_INFO.json
(dump /object_info from a ComfyUI with this pack, e.g. the test server: ``curl 127.0.0.1:PORT/object_info``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACK_ID = "janus-r1"  # registry id = [project].name
PACK_VERSION = "0.1.0"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}

LOADER = (
    "loader",
    "JanusR1Loader",
    {"model_name": "Janus-Pro-R1-7B", "dtype": "auto", "download_if_missing": False, "quantize": "none"},
)

# File names are the titles Workflow > Browse Templates shows (frontend 1.32.9 titles a custom node template by
# its file name and loads ``<name>.jpg`` as its thumbnail), so they are written for people.
# name -> (nodes [(key, type, widget overrides)], links [(src key, src slot, dst key, dst input)], note)
WORKFLOWS = {
    "Janus-R1 Text to Image": (
        [
            LOADER,
            ("t2i", "JanusR1TextToImage", {"prompt": "a lighthouse on a cliff at dusk, oil painting", "seed": 1}),
            ("save", "SaveImage", {"filename_prefix": "janus_r1/t2i"}),
        ],
        [("loader", 0, "t2i", "model"), ("t2i", 0, "save", "images")],
        "Plain Janus-Pro text to image: one pass, no self-check (the fastest). For pictures the model checks "
        "and redraws itself, see the CoT template.",
    ),
    "Janus-R1 CoT Text to Image": (
        [
            LOADER,
            (
                "cot",
                "JanusR1CoTGenerate",
                {"prompt": "a red apple on the left of a green cup, photo", "seed": 42},
            ),
            ("save", "SaveImage", {"filename_prefix": "janus_r1/cot"}),
            ("sheet", "PreviewImage", {}),
            ("text", "JanusR1SaveText", {"filename_prefix": "janus_r1/cot_reasoning"}),
        ],
        [
            ("loader", 0, "cot", "model"),
            ("cot", 0, "save", "images"),
            ("cot", 5, "sheet", "images"),
            ("cot", 2, "text", "text"),
        ],
        "Janus-Pro-R1 draws, judges its picture against the prompt, explains what is wrong and redraws (at most "
        "max_rounds images). The node shows the final image and its reasoning; the saved PNG carries the "
        "verdicts and scores, and Save Reasoning writes the reasoning as a .txt beside it. The contact sheet "
        "shows every attempt with its verdict and score. `final` picks the last image (the paper) or the best "
        "score.",
    ),
    "Janus-R1 Judge - rank images": (
        [
            LOADER,
            ("img", "LoadImage", {"image": "example.png"}),
            ("other", "ImageInvert", {}),
            ("batch", "ImageBatch", {}),
            ("judge", "JanusR1Judge", {"prompt": "a photo of a cat sitting on a sofa", "seed": 0}),
            ("best", "PreviewImage", {}),
        ],
        [
            ("loader", 0, "judge", "model"),
            ("img", 0, "batch", "image1"),
            ("img", 0, "other", "image"),
            ("other", 0, "batch", "image2"),
            ("batch", 0, "judge", "images"),
            ("judge", 5, "best", "images"),
        ],
        "Rank pictures made by any model: the Judge scores each against the prompt, S in [0, 1], with its Yes/No "
        "verdict and reason, and shows the report. Here the second picture is the first one inverted, so there "
        "is something to tell apart: load your own pictures instead (ImageBatch resizes the second to the "
        "first; `best` is the top-scored one, `ranked` has them all, `best_index` its place in the batch).",
    ),
    "Janus-R1 Edit Image": (
        [
            LOADER,
            ("img", "LoadImage", {"image": "example.png"}),
            (
                "edit",
                "JanusR1Edit",
                {"instruction": "make the sky purple and add a moon", "seed": 7, "output_size": "input size"},
            ),
            ("save", "SaveImage", {"filename_prefix": "janus_r1/edit"}),
        ],
        [("loader", 0, "edit", "model"), ("img", 0, "edit", "image"), ("edit", 0, "save", "images")],
        "Edit a picture with a text instruction (CFG 4 as in the paper). The model sees the centre square of the "
        "input; `output_size` = input size stretches its edit back to the input's shape.",
    ),
    "Janus-R1 Regenerate Image": (
        [
            LOADER,
            ("img", "LoadImage", {"image": "example.png"}),
            (
                "regen",
                "JanusR1Regenerate",
                {
                    "prompt": "two cats sleeping on a red blanket",
                    "seed": 3,
                    "always_redraw": True,
                    "output_size": "input size",
                },
            ),
            ("save", "SaveImage", {"filename_prefix": "janus_r1/regenerate"}),
            ("sheet", "PreviewImage", {}),
        ],
        [
            ("loader", 0, "regen", "model"),
            ("img", 0, "regen", "image"),
            ("regen", 0, "save", "images"),
            ("regen", 4, "sheet", "images"),
        ],
        "Improve an image made elsewhere: Janus judges it against the prompt (or uses your critique), writes what "
        "is wrong and redraws. An image it accepts comes back untouched (turn off always_redraw for that).",
    ),
    "Janus-R1 Ask - describe and redraw": (
        [
            LOADER,
            ("img", "LoadImage", {"image": "example.png"}),
            ("ask", "JanusR1Ask", {"max_new_tokens": 120}),
            ("cot", "JanusR1CoTGenerate", {"prompt": "", "seed": 42}),
            ("save", "SaveImage", {"filename_prefix": "janus_r1/redrawn"}),
        ],
        [
            ("loader", 0, "ask", "model"),
            ("img", 0, "ask", "image"),
            ("loader", 0, "cot", "model"),
            ("ask", 0, "cot", "prompt"),
            ("cot", 0, "save", "images"),
        ],
        "Janus-Pro also understands pictures: Ask describes the loaded image (its question is editable), and the "
        "description becomes CoT Generate's prompt, so Janus redraws the picture from its own words. "
        "max_new_tokens 120 keeps the description inside the 200-token prompt budget the model was trained on. "
        "Feed Ask's text to any other model's prompt the same way.",
    ),
    "Janus-R1 Ask - rank descriptions": (
        [
            LOADER,
            ("img", "LoadImage", {"image": "example.png"}),
            ("other", "ImageInvert", {}),
            ("batch", "ImageBatch", {}),
            ("ask", "JanusR1Ask", {"max_new_tokens": 120}),
            ("judge", "JanusR1Judge", {"prompt": "", "seed": 0}),
            ("best", "PreviewImage", {}),
        ],
        [
            ("loader", 0, "ask", "model"),
            ("img", 0, "batch", "image1"),
            ("img", 0, "other", "image"),
            ("other", 0, "batch", "image2"),
            ("batch", 0, "ask", "image"),
            ("loader", 0, "judge", "model"),
            ("batch", 0, "judge", "images"),
            ("ask", 0, "judge", "prompt"),
            ("judge", 5, "best", "images"),
        ],
        "How well does each picture match its own description? Ask describes every picture (one answer each), "
        "and the Judge scores each picture against its description (S in [0, 1]) and ranks them: a caption "
        "check. Load your own pictures in place of the example and its inverted copy.",
    ),
    "Janus-R1 Best of N": (
        [
            LOADER,
            (
                "bon",
                "JanusR1BestOfN",
                {"prompt": "a blue bird on a snowy branch, watercolor", "seed": 11, "n": 4},
            ),
            ("save", "SaveImage", {"filename_prefix": "janus_r1/best"}),
            ("sheet", "PreviewImage", {}),
        ],
        [
            ("loader", 0, "bon", "model"),
            ("bon", 0, "save", "images"),
            ("bon", 4, "sheet", "images"),
        ],
        "Inference-time scaling: draw N candidates and keep the one the model itself scores highest. The node "
        "shows the pick and the ranking; the sheet shows every candidate with its rank and score.",
    ),
}

# Room each node needs once it has run, so nothing grows over its neighbours (issue 17, finding 4): image
# outputs show a 384 px picture, contact sheets are wide, Janus-R1 nodes show their image (and reasoning).
NODE_WIDTH = {"PreviewImage": 640, "SaveImage": 440}
JANUS_IMAGE_ROOM = 300  # web/js/janus_r1.js IMAGE_ROOM
JANUS_TEXT_ROOM = 220  # web/js/janus_r1.js BOX_MIN_HEIGHT
TEXT_NODES = {"JanusR1CoTGenerate", "JanusR1Judge", "JanusR1Regenerate", "JanusR1BestOfN"}
IMAGE_NODES = {"JanusR1TextToImage", "JanusR1CoTGenerate", "JanusR1Regenerate", "JanusR1BestOfN", "JanusR1Edit"}
TEXT_NODES |= {"JanusR1Ask"}
COLUMN_GAP, ROW_GAP = 60, 60


def node_height(typ: str, widgets: int, sockets: int, multiline: int) -> int:
    """The height a node needs after a run (title bar excluded, as LiteGraph counts)."""
    h = 40 + 24 * (widgets - multiline) + 24 * sockets + 110 * multiline
    if typ == "LoadImage":
        return h + 300  # the frontend shows the picture
    if typ in ("SaveImage", "PreviewImage"):
        return max(h, 420)  # a 384 px picture under its widgets
    if typ in IMAGE_NODES:
        h += JANUS_IMAGE_ROOM
    if typ in TEXT_NODES:
        h += JANUS_TEXT_ROOM
    return h


def has_control(name: str, wtype: str, opts: dict) -> bool:
    """Whether the frontend adds a 'control after generate' widget (its value saved right after the input's):
    when asked, and for any INT named seed / noise_seed unless explicitly refused (frontend 1.32.9 rule)."""
    flag = opts.get("control_after_generate")
    return bool(flag) if flag is not None else wtype == "INT" and name in ("seed", "noise_seed")


def widget_names(info: dict) -> list[tuple[str, dict, str]]:
    """(name, options, type) of every widget input, in the frontend's order (required, then optional)."""
    out = []
    for section in ("required", "optional"):
        for name in info.get("input_order", {}).get(section, []):
            spec = info["input"][section][name]
            typ = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if isinstance(typ, list) or typ in WIDGET_TYPES:
                if opts.get("forceInput"):
                    continue
                out.append((name, opts, "COMBO" if isinstance(typ, list) else typ))
    return out


def build(name: str, object_info: dict) -> dict:
    node_specs, links_spec, note = WORKFLOWS[name]
    ids = {key: i for i, (key, _, _) in enumerate(node_specs, 1)}
    nodes, links = [], []
    for lid, (src, slot, dst, inp) in enumerate(links_spec, 1):
        src_type = object_info[node_specs[ids[src] - 1][1]]["output"][slot]
        links.append([lid, ids[src], slot, ids[dst], inp, src_type])
    widths: dict[int, int] = {}
    placed: list[tuple[int, int, int, int]] = []
    depth = {key: 0 for key in ids}
    for _ in range(len(ids)):
        for src, _, dst, _ in links_spec:
            depth[dst] = max(depth[dst], depth[src] + 1)
    rows: dict[int, int] = {}
    for order, (key, typ, values) in enumerate(node_specs):
        info = object_info[typ]
        inputs = []
        for section in ("required", "optional"):
            for inp in info.get("input_order", {}).get(section, []):
                spec = info["input"][section][inp]
                t = spec[0]
                opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if (isinstance(t, list) or t in WIDGET_TYPES) and not opts.get("forceInput"):
                    continue
                link = next((lk for lk in links if lk[3] == ids[key] and lk[4] == inp), None)
                inputs.append({"name": inp, "type": t, "link": link[0] if link else None})
        for lk in links:  # a link into a widget (Ask's text into a prompt): the widget's input socket
            if lk[3] == ids[key] and not any(x["name"] == lk[4] for x in inputs):
                t = info["input"].get("required", {}).get(lk[4], info["input"].get("optional", {}).get(lk[4]))[0]
                inputs.append({"name": lk[4], "type": t, "widget": {"name": lk[4]}, "link": lk[0]})
        for lk in links:
            if lk[3] == ids[key]:
                lk[4] = next(i for i, x in enumerate(inputs) if x["name"] == lk[4])
        outputs = []
        for slot, (t, oname) in enumerate(zip(info["output"], info["output_name"])):
            outputs.append(
                {
                    "name": oname,
                    "type": t,
                    "slot_index": slot,
                    "links": [lk[0] for lk in links if lk[1] == ids[key] and lk[2] == slot],
                }
            )
        widgets = []
        for wname, opts, wtype in widget_names(info):
            if wname in values:
                v = values[wname]
            elif "default" in opts:
                v = opts["default"]
            elif wtype == "COMBO":
                options = opts.get("options") or info["input"].get("required", {}).get(wname, [[None]])[0]
                v = options[0]
            else:
                v = ""
            widgets.append(v)
            if has_control(wname, wtype, opts):
                widgets.append("fixed")
            if opts.get("image_upload"):
                widgets.append("image")
        d = depth[key]
        multiline = sum(1 for _, opts, _t in widget_names(info) if opts.get("multiline"))
        w = NODE_WIDTH.get(typ, 420)
        h = node_height(typ, len(widgets), max(len(inputs), len(outputs)), multiline)
        widths[d] = max(widths.get(d, 0), w)
        y = 70 + rows.get(d, 0)  # below the title bar
        rows[d] = rows.get(d, 0) + h + ROW_GAP + 30  # + the title bar
        placed.append((d, y, w, h))
        props = {"Node name for S&R": typ}
        if typ.startswith("JanusR1"):
            props.update({"cnr_id": PACK_ID, "ver": PACK_VERSION})
        else:
            props.update({"cnr_id": "comfy-core", "ver": "0.3.75"})
        nodes.append(
            {
                "id": ids[key],
                "type": typ,
                "pos": [0, y],  # x once every column's width is known
                "size": [w, h],
                "flags": {},
                "order": order,
                "mode": 0,
                "inputs": inputs,
                "outputs": outputs,
                "properties": props,
                "widgets_values": widgets,
            }
        )
    col_x, x = {}, 40
    for d in sorted(widths):
        col_x[d] = x
        x += widths[d] + COLUMN_GAP
    for node, (d, _, _, _) in zip(nodes, placed):
        node["pos"][0] = col_x[d]
    note_id = len(nodes) + 1
    nodes.append(
        {
            "id": note_id,
            "type": "MarkdownNote",
            "pos": [40, 70 + rows.get(0, 0)],
            "size": [widths.get(0, 420), 200],
            "flags": {},
            "order": len(nodes),
            "mode": 0,
            "inputs": [],
            "outputs": [],
            "properties": {},
            "widgets_values": [
                f"{note}\n\nModel: put Janus-Pro-R1-7B into `models/janus/Janus-Pro-R1-7B` (models/Janus-Pro/ "
                "works too) or tick `download_if_missing` on the loader."
            ],
        }
    )
    return {
        "id": f"00000000-0000-4000-8000-{abs(hash(name)) % 10**12:012d}",
        "revision": 0,
        "last_node_id": note_id,
        "last_link_id": len(links),
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
        "version": 0.4,
    }


def main(object_info_path: str) -> None:
    object_info = json.loads(Path(object_info_path).read_text())
    out = REPO / "workflows"
    out.mkdir(exist_ok=True)
    for name in WORKFLOWS:
        wf = build(name, object_info)
        wf["id"] = f"4a4e5553-5231-4000-8000-{sorted(WORKFLOWS).index(name):012d}"
        for old in out.glob("janus_r1_*.*"):  # the machine-named files these replace
            old.unlink()
        (out / f"{name}.json").write_text(json.dumps(wf, indent=2) + "\n")
        print("wrote", out / f"{name}.json")


if __name__ == "__main__":
    main(sys.argv[1])
