"""One set of defaults (janus_r1/defaults.py) read by the API, the CLI and the nodes; Sampling objects passed
through the API unchanged."""

from __future__ import annotations

import ast
import inspect
import runpy
from pathlib import Path

import pytest

from janus_r1 import JanusR1, JanusR1Error, Sampling, defaults
from janus_r1.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def test_api_signatures_read_the_defaults():
    gen = inspect.signature(JanusR1.generate).parameters
    assert (gen["cfg"].default, gen["max_rounds"].default, gen["top_k"].default, gen["text_top_k"].default,
            gen["max_reflection"].default, gen["max_prompt_tokens"].default, gen["final"].default) == (
        defaults.CFG, defaults.MAX_ROUNDS, defaults.TOP_K, defaults.TEXT_TOP_K, defaults.MAX_REFLECTION,
        defaults.MAX_PROMPT_TOKENS, defaults.FINAL)
    assert inspect.signature(JanusR1.edit).parameters["cfg"].default == defaults.EDIT_CFG == 4.0
    assert inspect.signature(JanusR1.regenerate).parameters["max_rounds"].default == defaults.REGEN_MAX_ROUNDS


def test_cli_options_read_the_defaults():
    args = build_parser().parse_args(["generate", "a cat", "--out", "x"])
    assert (args.cfg, args.temperature, args.top_k, args.top_p, args.text_top_k, args.max_reflection,
            args.max_rounds, args.max_prompt_tokens, args.final, args.num_images) == (
        defaults.CFG, defaults.TEMPERATURE, defaults.TOP_K, defaults.TOP_P, defaults.TEXT_TOP_K,
        defaults.MAX_REFLECTION, defaults.MAX_ROUNDS, defaults.MAX_PROMPT_TOKENS, defaults.FINAL,
        defaults.NUM_IMAGES)
    assert build_parser().parse_args(["edit", "a.png", "--instruction", "i", "--out", "x"]).cfg == defaults.EDIT_CFG
    regen = build_parser().parse_args(["regenerate", "a.png", "--prompt", "p", "--out", "x"])
    assert regen.max_rounds == defaults.REGEN_MAX_ROUNDS


def test_the_nodes_widgets_import_the_engines_defaults():
    """nodes/widgets.py imports janus_r1/defaults.py as a module (``from ..janus_r1 import defaults``), so a
    widget's default is the engine's and a reader follows it there; defaults.py imports nothing, so every part
    of the package may read it."""
    tree = ast.parse((ROOT / "nodes" / "widgets.py").read_text())
    assert any(isinstance(n, ast.ImportFrom) and n.level == 2 and n.module == "janus_r1"
               and [a.name for a in n.names] == ["defaults"] for n in ast.walk(tree))
    loaded = runpy.run_path(str(ROOT / "janus_r1" / "defaults.py"))
    assert {k: v for k, v in loaded.items() if k.isupper()} == {k: v for k, v in vars(defaults).items() if k.isupper()}
    tree = ast.parse((ROOT / "janus_r1" / "defaults.py").read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [getattr(n, "module", None) for n in imports] == ["__future__"]


def test_sampling_defaults_match_the_decode_presets():
    from janus_r1.generation.sampling import IMAGE_SAMPLING, TEXT_SAMPLING

    assert (IMAGE_SAMPLING.temperature, IMAGE_SAMPLING.top_k, IMAGE_SAMPLING.top_p) == (
        defaults.TEMPERATURE, defaults.TOP_K, defaults.TOP_P)
    assert TEXT_SAMPLING.top_k == defaults.TEXT_TOP_K


def test_a_sampling_object_draws_the_same_tokens_as_its_keywords(micro):
    kw = micro.text_to_image("a red cat", temperature=0.9, top_k=100, top_p=0.8, seed=3)
    obj = micro.text_to_image("a red cat", image_sampling=Sampling(temperature=0.9, top_k=100, top_p=0.8), seed=3)
    assert kw[0].attempts[0].codes == obj[0].attempts[0].codes
    img = kw[0].image
    a = micro.judge(img, "a red cat", text_top_k=7, max_reflection=8, seed=1)
    b = micro.judge(img, "a red cat", text_sampling=Sampling(top_k=7), max_reflection=8, seed=1)
    assert (a[0].ids, a[0].score) == (b[0].ids, b[0].score)


def test_a_bad_sampling_object_is_one_clear_error(micro):
    with pytest.raises(JanusR1Error, match=r"^image_sampling must be a janus_r1.Sampling or None \(got dict\)\.$"):
        micro.text_to_image("a cat", image_sampling={"top_k": 1})
    with pytest.raises(JanusR1Error, match="^image temperature must be a number > 0"):
        micro.edit(kw_image(micro), "make it blue", image_sampling=Sampling(temperature=0.0))
    with pytest.raises(JanusR1Error, match="^text top_k must be an integer >= 0"):
        micro.judge(kw_image(micro), "a cat", text_sampling=Sampling(top_k=-1))


def kw_image(micro):
    from PIL import Image

    return Image.new("RGB", (micro.image_size, micro.image_size), (200, 30, 30))
