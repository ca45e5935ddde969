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

# name -> (title, nodes [(key, type, widget overrides)], links [(src key, src slot, dst key, dst input)], notes)
WORKFLOWS = {
    "janus_r1_cot_text_to_image": (
        [
            LOADER,
            (
                "cot",
                "JanusR1CoTGenerate",
                {"prompt": "a red apple on the left of a green cup, photo", "seed": 42},
            ),
            ("save", "SaveImage", {"filename_prefix": "janus_r1/cot"}),
            ("sheet", "PreviewImage", {}),
            ("reasoning", "PreviewAny", {}),
        ],
        [
            ("loader", 0, "cot", "model"),
            ("cot", 0, "save", "images"),
            ("cot", 5, "sheet", "images"),
            ("cot", 2, "reasoning", "source"),
        ],
        "Janus-Pro-R1 draws, judges its picture against the prompt, explains what is wrong and redraws (at most "
        "max_rounds images). The final image is saved; the contact sheet shows every attempt with its verdict "
        "and score, and the reasoning is previewed. `final` picks the last image (the paper) or the best score.",
    ),
    "janus_r1_judge_ranking": (
        [
            LOADER,
            ("img_a", "LoadImage", {"image": "example.png"}),
            ("img_b", "LoadImage", {"image": "example.png"}),
            ("batch", "ImageBatch", {}),
            ("judge", "JanusR1Judge", {"prompt": "a photo of a cat sitting on a sofa", "seed": 0}),
            ("best", "PreviewImage", {}),
            ("report", "PreviewAny", {}),
        ],
        [
            ("loader", 0, "judge", "model"),
            ("img_a", 0, "batch", "image1"),
            ("img_b", 0, "batch", "image2"),
            ("batch", 0, "judge", "images"),
            ("judge", 5, "best", "images"),
            ("judge", 4, "report", "source"),
        ],
        "Rank pictures made by any other model: load them (ImageBatch resizes the second to the first), and the "
        "Judge scores each against the prompt, S in [0, 1], with its Yes/No verdict and reason. `best` is the "
        "top-scored picture (`ranked` has them all, best first; `best_index` its place in the batch).",
    ),
    "janus_r1_edit_image": (
        [
            LOADER,
            ("img", "LoadImage", {"image": "example.png"}),
            ("edit", "JanusR1Edit", {"instruction": "make the sky purple and add a moon", "seed": 7}),
            ("save", "SaveImage", {"filename_prefix": "janus_r1/edit"}),
        ],
        [("loader", 0, "edit", "model"), ("img", 0, "edit", "image"), ("edit", 0, "save", "images")],
        "Edit a picture with a text instruction (CFG 4 as in the paper). The input is centre-cropped to a square.",
    ),
    "janus_r1_regenerate_image": (
        [
            LOADER,
            ("img", "LoadImage", {"image": "example.png"}),
            (
                "regen",
                "JanusR1Regenerate",
                {"prompt": "two cats sleeping on a red blanket", "seed": 3, "always_redraw": True},
            ),
            ("save", "SaveImage", {"filename_prefix": "janus_r1/regenerate"}),
            ("sheet", "PreviewImage", {}),
            ("reasoning", "PreviewAny", {}),
        ],
        [
            ("loader", 0, "regen", "model"),
            ("img", 0, "regen", "image"),
            ("regen", 0, "save", "images"),
            ("regen", 4, "sheet", "images"),
            ("regen", 2, "reasoning", "source"),
        ],
        "Improve an image made elsewhere: Janus judges it against the prompt (or uses your critique), writes what "
        "is wrong and redraws.",
    ),
    "janus_r1_best_of_n": (
        [
            LOADER,
            (
                "bon",
                "JanusR1BestOfN",
                {"prompt": "a blue bird on a snowy branch, watercolor", "seed": 11, "n": 4},
            ),
            ("save", "SaveImage", {"filename_prefix": "janus_r1/best"}),
            ("sheet", "PreviewImage", {}),
            ("report", "PreviewAny", {}),
        ],
        [
            ("loader", 0, "bon", "model"),
            ("bon", 0, "save", "images"),
            ("bon", 4, "sheet", "images"),
            ("bon", 3, "report", "source"),
        ],
        "Inference-time scaling: draw N candidates and keep the one the model itself scores highest.",
    ),
}


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
    col_x = {0: 40}
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
                if isinstance(t, list) or t in WIDGET_TYPES:
                    continue
                link = next((lk for lk in links if lk[3] == ids[key] and lk[4] == inp), None)
                inputs.append({"name": inp, "type": t, "link": link[0] if link else None})
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
            if opts.get("control_after_generate"):
                widgets.append("fixed")
            if opts.get("image_upload"):
                widgets.append("image")
        d = depth[key]
        x = 40 + d * 420
        y = 40 + rows.get(d, 0)
        h = 120 + 26 * (len(widgets) + max(len(inputs), len(outputs)))
        if typ == "LoadImage":  # the frontend grows it to show the picture once loaded
            h += 110
        rows[d] = rows.get(d, 0) + h + 40
        col_x[d] = x
        props = {"Node name for S&R": typ}
        if typ.startswith("JanusR1"):
            props.update({"cnr_id": PACK_ID, "ver": PACK_VERSION})
        else:
            props.update({"cnr_id": "comfy-core", "ver": "0.3.75"})
        nodes.append(
            {
                "id": ids[key],
                "type": typ,
                "pos": [x, y],
                "size": [380, h],
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
    nodes.append(
        {
            "id": note_id,
            "type": "MarkdownNote",
            "pos": [40, 40 + rows.get(0, 0)],
            "size": [380, 160],
            "flags": {},
            "order": len(nodes),
            "mode": 0,
            "inputs": [],
            "outputs": [],
            "properties": {},
            "widgets_values": [
                f"{note}\n\nModel: put Janus-Pro-R1-7B into `models/janus/Janus-Pro-R1-7B` (or tick "
                "`download_if_missing` on the loader)."
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
        (out / f"{name}.json").write_text(json.dumps(wf, indent=2) + "\n")
        print("wrote", out / f"{name}.json")


if __name__ == "__main__":
    main(sys.argv[1])
