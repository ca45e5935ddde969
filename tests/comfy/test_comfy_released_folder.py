"""The Loader node on a model folder laid out exactly like the released Janus-Pro-R1-7B one (issue 15): the 4.50
re-serialised config.json, tokenizer.json without a BOS post-processor, LlamaTokenizerFast with add_bos_token --
tiny weights, real ComfyUI executor. It must load and draw what the plain tiny folder with the same weights draws."""

from __future__ import annotations

from PIL import Image
from test_comfy_bad_inputs import PROMPT_NODES, node
from test_comfy_nodes import graph, save

from janus_r1.model.tiny_files import write_tiny


def test_loader_loads_the_released_layout_and_draws_the_same_image(worker):
    name = "Janus-Pro-R1-7B-released-layout"
    dst = worker.base / "models" / "janus" / name
    if not dst.exists():
        write_tiny(dst, geometry="micro", seed=0, released_style=True)
    pngs = {}
    for model_name in (name, "Janus-Pro-R1-7B"):
        p = graph(node("JanusR1TextToImage", prompt="a red cat", **PROMPT_NODES["JanusR1TextToImage"]),
                  save("2", 0, f"released_check_{len(pngs)}"))
        p["1"]["inputs"]["model_name"] = model_name
        res = worker.execute(p)
        assert res["success"], [e[1].get("exception_message") for e in res["events"] if e[0] == "execution_error"]
        [im] = res["outputs"]["3"]["images"]
        with Image.open(worker.base / "output" / im["subfolder"] / im["filename"]) as f:
            pngs[model_name] = f.convert("RGB").tobytes()  # pixels: the PNG's metadata names the model
    assert pngs[name] == pngs["Janus-Pro-R1-7B"]
