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
        "**Type a prompt, get a picture.** Janus-Pro draws it in one pass, without checking its work: the "
        "fastest way to try prompts and seeds. For pictures the model judges and redraws itself, open the CoT "
        "template.",
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
        "**A picture the model checks itself.** Janus-Pro-R1 draws the prompt, judges its picture (Yes/No and a "
        "score), writes what is wrong and redraws, up to max_rounds images. You get the final image (saved with "
        "its verdicts and scores inside the PNG), the reasoning on the node and as a .txt, and a sheet of every "
        "attempt. `final` keeps the last image (the paper) or the best-scored one.",
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
        "**Which picture matches the prompt best?** The Judge scores pictures from any model against your "
        "prompt (S from 0 to 1, a Yes/No verdict and its reason), ranks them and previews the best one. Here "
        "the second picture is the first one inverted: load your own instead (ImageBatch resizes the second to "
        "the first). `ranked` has them all, `best_index` counts from 0.",
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
        "**Change a picture with words.** Load a picture, type what to change (\"make the sky purple\"), and "
        "Janus draws the edited picture. The model sees the centre square of the input; `output_size` = input "
        "size brings its edit back to the input's shape.",
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
        "**Fix a picture made elsewhere.** Janus judges your picture against the prompt (or takes your critique), "
        "writes what is wrong and redraws it; the sheet shows the input and each redraw with its score. With "
        "always_redraw off, a picture it accepts comes back untouched.",
    ),
    "Janus-R1 Ask - describe and redraw": (
        [
            LOADER,
            ("img", "LoadImage", {"image": "example.png"}),
            ("ask", "JanusR1Ask", {}),
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
        "**Describe a picture, then redraw it from the description.** Ask writes what it sees in the loaded "
        "picture (edit its question for other answers), kept to the 200-token prompt budget by its "
        "prompt_budget; CoT Generate draws from those words. Feed Ask's text to any other model's prompt the same "
        "way.",
    ),
    "Janus-R1 Ask - rank descriptions": (
        [
            LOADER,
            ("img", "LoadImage", {"image": "example.png"}),
            ("other", "ImageInvert", {}),
            ("batch", "ImageBatch", {}),
            ("ask", "JanusR1Ask", {}),
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
        "**Check captions.** Ask describes every picture (one answer each); the Judge scores each picture "
        "against its own description (S from 0 to 1) and ranks them, previewing the best-described one. Load "
        "your own pictures in place of the example and its inverted copy.",
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
        "**Draw several, keep the best.** Janus draws n candidates for the prompt and keeps the one it scores "
        "highest itself. The node shows the pick and the ranking; the sheet shows every candidate with its rank "
        "and score.",
    ),
}

# Layout (issue 25, finding 6): a template must read at Fit View, where frontend 1.32.9 fits the graph's box at 75 %
# of the canvas and draws every node as a blank box below the level-of-detail zoom (8 px text: scale 8 / 14 =
# 0.57 at the default setting). So every template is laid out in a few columns (COLUMNS below), each node at the
# height the frontend gives it (its sockets and widgets, estimated by node_height), and the whole graph kept
# within FIT_BOX: on a 1600 x 900 canvas that fits at scale >= 0.6 (tested in the browser). Room to grow after
# a run: a Janus-R1 node with an image or a reasoning box grows downwards once it has run (web/js/janus_r1.js),
# so nothing is placed below one, except under Ask, which keeps ASK_TEXT_ROOM for its answer box.
FIT_BOX = (1950, 1100)
NODE_WIDTH = {"PreviewImage": 520, "SaveImage": 400, "LoadImage": 340, "JanusR1Loader": 340, "ImageInvert": 300,
              "ImageBatch": 300, "MarkdownNote": 340}
CORE_HEIGHT = {"LoadImage": 360, "SaveImage": 400, "PreviewImage": 400, "ImageInvert": 60, "ImageBatch": 80,
               "MarkdownNote": 250}
JANUS_WIDTH = 420  # web/js/janus_r1.js widens a node with a reasoning box to 420
ASK_TEXT_ROOM = 260  # web/js/janus_r1.js BOX_MIN_HEIGHT (220) and its margins
COLUMN_GAP, ROW_GAP, TITLE = 60, 40, 30
# per template: its columns, left to right, each a list of node keys top to bottom ("note" is the Markdown note)
COLUMNS = {
    "Janus-R1 Text to Image": [["loader", "note"], ["t2i"], ["save"]],
    "Janus-R1 CoT Text to Image": [["loader", "note"], ["cot"], ["save", "text"], ["sheet"]],
    "Janus-R1 Judge - rank images": [["loader", "img"], ["other", "batch", "note"], ["judge"], ["best"]],
    "Janus-R1 Edit Image": [["loader", "img", "note"], ["edit"], ["save"]],
    "Janus-R1 Regenerate Image": [["loader", "img", "note"], ["regen"], ["save"], ["sheet"]],
    "Janus-R1 Ask - describe and redraw": [["loader", "img"], ["ask", "note"], ["cot"], ["save"]],
    "Janus-R1 Ask - rank descriptions": [["loader", "img"], ["other", "batch", "note"], ["ask", "judge"], ["best"]],
    "Janus-R1 Best of N": [["loader", "note"], ["bon"], ["save"], ["sheet"]],
}


def node_height(typ: str, widgets: int, sockets: int, multiline: int) -> int:
    """The height frontend 1.32.9 gives a node before a run (title bar excluded, as LiteGraph counts): 20 px per
    socket row, 24 per widget, 54 more per multiline text, measured on these nodes; a few px to spare."""
    if typ in CORE_HEIGHT:
        return CORE_HEIGHT[typ]
    h = 14 + 20 * sockets + 24 * (widgets - multiline) + 78 * multiline + 24
    if typ == "JanusR1Ask":
        h += ASK_TEXT_ROOM
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
    sizes: dict[str, tuple[int, int]] = {}
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
        multiline = sum(1 for _, opts, _t in widget_names(info) if opts.get("multiline"))
        w = NODE_WIDTH.get(typ, JANUS_WIDTH)
        shown = len(widgets) - sum(1 for _, o, _t in widget_names(info) if o.get("image_upload"))
        h = node_height(typ, shown, max(len(inputs), len(outputs)), multiline)
        sizes[key] = (w, h)
        props = {"Node name for S&R": typ}
        if typ.startswith("JanusR1"):
            props.update({"cnr_id": PACK_ID, "ver": PACK_VERSION})
        else:
            props.update({"cnr_id": "comfy-core", "ver": "0.3.75"})
        nodes.append(
            {
                "id": ids[key],
                "type": typ,
                "pos": [0, 0],  # placed below, column by column
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
    note_id = len(nodes) + 1
    sizes["note"] = (NODE_WIDTH["MarkdownNote"], CORE_HEIGHT["MarkdownNote"])
    nodes.append(
        {
            "id": note_id,
            "type": "MarkdownNote",
            "pos": [0, 0],
            "size": list(sizes["note"]),
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
    by_key = {key: nodes[ids[key] - 1] for key in ids} | {"note": nodes[-1]}
    columns = COLUMNS[name]
    assert sorted(k for col in columns for k in col) == sorted(by_key), f"{name}: COLUMNS must place every node"
    x, bottom = 40, 0
    for col in columns:
        y = 40 + TITLE
        for key in col:
            w = max(sizes[k][0] for k in col)
            by_key[key]["pos"] = [x, y]
            by_key[key]["size"] = [w, sizes[key][1]]
            y += sizes[key][1] + ROW_GAP + TITLE
        bottom = max(bottom, y)
        x += max(sizes[k][0] for k in col) + COLUMN_GAP
    box = (x - COLUMN_GAP - 40, bottom - ROW_GAP - TITLE - 40)
    assert box[0] <= FIT_BOX[0] and box[1] <= FIT_BOX[1], f"{name}: {box} does not fit {FIT_BOX} (Fit View)"
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
