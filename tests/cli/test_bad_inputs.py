"""Bad input, CLI and Python API (issue 9): one clear error naming what was wrong, no traceback, nothing written.

CLI cases run ``cli.main(argv)`` and assert exit 2, a single ``error:`` line holding the expected fragment, and
that neither ``--out`` nor any temporary folder beside it exists afterwards. API cases assert a ``JanusR1Error``
whose message names the argument. Inputs people naturally have (``pathlib.Path``, NumPy scalars, ``hooks=None``)
are checked to work.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from janus_r1 import JanusR1Error, cli
from janus_r1.generation.checks import SEED_MAX
from janus_r1.model.tiny_files import write_tiny

CAT = "a red cat"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Every input a case refers to as ``{name}``."""
    d = tmp_path_factory.mktemp("inputs")
    img = d / "in.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(img)
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 10)
    (d / "latin1.txt").write_bytes("a caf\xe9 at night\n".encode("latin-1"))
    (d / "prompts.txt").write_text("a red cat\na blue dog\n")
    (d / "a_dir").mkdir()
    (d / "a_file").write_text("I am a file")
    (d / "dangling").symlink_to(d / "nowhere")  # issue 24: links that lead nowhere, a FIFO, an over-budget line
    (d / "loop").symlink_to(d / "loop")
    os.mkfifo(d / "fifo")
    (d / "long.txt").write_text("a red cat\n# a comment\n\n" + "a very long prompt " * 60 + "\n")
    tiny = write_tiny(d / "tiny", geometry="micro", seed=0)
    pickled = write_tiny(d / "pickled", geometry="micro", seed=0, weights="bin")
    sd = torch.load(pickled / "pytorch_model.bin", weights_only=True)
    sd["saved_at"] = datetime.datetime(2026, 1, 1)  # a Python object: unpickling it is refused
    torch.save(sd, pickled / "pytorch_model.bin")
    mism = write_tiny(d / "mismatch", layout="transformers", geometry="micro", seed=0)
    from safetensors.torch import load_file, save_file

    [st] = list(mism.glob("*.safetensors"))
    sd = load_file(st)
    key = "model.language_model.layers.0.mlp.down_proj.weight"
    sd[key] = torch.zeros(sd[key].shape[0] + 1, sd[key].shape[1])
    save_file(sd, st, metadata={"format": "pt"})
    return {"img": str(img), "corrupt": str(d / "corrupt.png"), "latin1": str(d / "latin1.txt"),
            "prompts": str(d / "prompts.txt"), "dir": str(d / "a_dir"), "file": str(d / "a_file"),
            "dangling": str(d / "dangling"), "loop": str(d / "loop"), "fifo": str(d / "fifo"),
            "long": str(d / "long.txt"), "tiny": str(tiny), "pickled": str(pickled), "mismatch": str(mism), "missing": str(d / "nope.png"),
            **_malformed_dirs({"deepseek": tiny, "transformers": mism}, d)}


MALFORMED = {  # name -> (file, edit of its JSON): a malformed config.json or tokenizer file (issue 15)
    "cfg_str": ("config.json", lambda c: c["language_config"].update(hidden_size="32")),
    "cfg_nosec": ("config.json", lambda c: c.pop("gen_head_config")),
    "cfg_type": ("config.json", lambda c: c.update(model_type="bert", language_config=None)),
    "cfg_llm": ("config.json", lambda c: c["language_config"].update(model_type="mistral")),
    "tok_bos": ("tokenizer_config.json", lambda c: c.update(add_bos_token="yes")),
    "tok_json": ("tokenizer.json", lambda c: c.pop("model")),
    "tf_cfg": ("config.json", lambda c: c["vq_config"].update(num_embeddings="64")),  # transformers layout
}


def _malformed_dirs(bases: dict[str, Path], d: Path) -> dict[str, str]:
    """A copy of a tiny model per MALFORMED entry (``tf_*``: the transformers layout), with that one file broken."""
    import json
    import shutil

    out = {}
    for name, (fname, edit) in MALFORMED.items():
        dst = d / name
        shutil.copytree(bases["transformers" if name.startswith("tf_") else "deepseek"], dst)
        obj = json.loads((dst / fname).read_text(encoding="utf-8"))
        edit(obj)
        (dst / fname).write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
        out[name] = str(dst)
    return out


def _argv(argv: list[str], files: dict[str, str], out: Path) -> list[str]:
    subs = {**files, "out": str(out)}
    return [a.format(**subs) for a in argv]


def _assert_one_error(code: int, err: str, fragment: str, out: Path, status: int = 2) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == status, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err
    if out is not None:
        assert not out.exists() and not list(out.parent.glob(f".{out.name}.*")), "something was written"


G = ["generate", CAT, "--out", "{out}", "--model", "{tiny}", "--quiet"]

CLI_CASES = [
    # seeds: 0 .. 2^64-1 everywhere
    (G + ["--seed", "1180591620717411303424"], "--seed: must be an integer seed in [0, 18446744073709551615]"),
    (G + ["--seed", "-1"], "--seed"),
    (G + ["--seed", "1.5"], "--seed"),
    (["batch", "{prompts}", "--out", "{out}", "--model", "{tiny}", "--seed", str(SEED_MAX)], "prompt i is seeded"),
    # memory: refused up front, before any drawing
    (G + ["--num-images", "10000000"], "need at least"),  # refused before the model loads (see below)
    (["generate", CAT, "--out", "{out}", "--model", "/no/model", "--num-images", "10000000"], "need at least"),
    (G + ["--num-images", "0"], "--num-images"),
    (G + ["--chunk-size", "0"], "--chunk-size"),
    # prompt files
    (["batch", "{latin1}", "--out", "{out}", "--model", "{tiny}"], "not UTF-8"),
    (["batch", "{dir}", "--out", "{out}", "--model", "{tiny}"], "is a directory"),
    (["batch", "{missing}", "--out", "{out}", "--model", "{tiny}"], "does not exist"),
    # output location, checked before the model loads (the model here does not even exist)
    (["generate", CAT, "--out", "{file}/sub", "--model", "/no/model"], "is not a directory"),
    (["generate", CAT, "--out", "/proc/janus-r1-out", "--model", "/no/model"], "cannot write into /proc"),
    (["generate", CAT, "--out", "/sys/janus-r1-out", "--model", "/no/model"], "cannot write into /sys"),
    (["generate", CAT, "--out", "{dangling}", "--model", "/no/model"], "dangling is a symbolic link to nothing"),
    (["generate", CAT, "--out", "{dangling}/sub", "--model", "/no/model"], "is a symbolic link to nothing"),
    (["generate", CAT, "--out", "{loop}/sub", "--model", "/no/model"], "loop is a symbolic link to nothing"),
    (["generate", CAT, "--out", "{file}/sub/deeper", "--model", "/no/model"], "a_file is not a directory"),
    (["generate", CAT, "--out", "{fifo}", "--model", "/no/model"], "exists and is not a directory"),
    # FIFOs (and other non-regular files) are refused, never opened: reading one would block forever
    (["regenerate", "{fifo}", "--prompt", CAT, "--out", "{out}", "--model", "/no/model"],
     "is a FIFO (named pipe); only regular image files are read"),
    (["score", "{fifo}", "--prompt", CAT, "--model", "/no/model"], "is a FIFO (named pipe)"),
    (["ask", "{fifo}", "--model", "/no/model"], "is a FIFO (named pipe)"),
    (["batch", "{fifo}", "--out", "{out}", "--model", "/no/model"],
     "fifo is a FIFO (named pipe); only regular files are read"),
    # the whole prompt file is checked before the first prompt is drawn (issue 24)
    (["batch", "{long}", "--out", "{out}", "--model", "{tiny}", "--quiet"], "long.txt:4: prompt is"),
    # a question over the model's context (16,384 positions) with the image rows (issue 24)
    (["ask", "{img}", "--question", "word " * 5000, "--model", "{tiny}", "--quiet"],
     "over the model's context of 16384 positions"),
    (["ask", "{img}", "--question", "word " * 4000, "--max-new-tokens", "2000", "--model", "{tiny}", "--quiet"],
     "with max_new_tokens 2000 that is over the model's context"),
    # one critique for every image, or one per image (issue 24)
    (["regenerate", "{img}", "--prompt", CAT, "--critique", "a", "--critique", "b", "--out", "{out}", "--model",
      "/no/model"], "--critique given 2 times for 1 image(s)"),
    # prompts, instructions, critiques, images: checked before the model loads
    (["generate", "", "--out", "{out}", "--model", "/no/model"], "empty"),
    (["generate", "  \n ", "--out", "{out}", "--model", "/no/model"], "empty"),
    (["edit", "{img}", "--instruction", " ", "--out", "{out}", "--model", "/no/model"], "--instruction"),
    (["regenerate", "{img}", "--prompt", CAT, "--critique", " ", "--out", "{out}", "--model", "/no/model"],
     "--critique is empty"),
    (["regenerate", "{missing}", "--prompt", CAT, "--out", "{out}", "--model", "/no/model"], "no such file"),
    (["score", "{dir}", "--prompt", CAT, "--model", "/no/model"], "is a directory"),
    (["judge", "{corrupt}", "--prompt", CAT, "--model", "/no/model"], "cannot read"),
    (["score", "{img}", "--prompt", "", "--model", "/no/model"], "empty"),
    (["generate", "a very long prompt " * 60] + G[2:], "--max-prompt-tokens"),
    # options with a fixed set of values or a range
    (G + ["--device", "gpu0"], "--device: must be auto, cpu, cuda, cuda:N or mps"),
    (G + ["--dtype", "int8"], "--dtype: must be one of auto, bf16"),
    (G + ["--cfg", "-1"], "--cfg"),
    (G + ["--cfg", "nan"], "--cfg"),
    (G + ["--temperature", "0"], "--temperature"),
    (G + ["--top-p", "2"], "--top-p"),
    (G + ["--top-k", "-1"], "--top-k"),
    (G + ["--max-rounds", "0"], "--max-rounds"),
    (G + ["--max-reflection", "0"], "--max-reflection"),
    (G + ["--max-prompt-tokens", "0"], "--max-prompt-tokens"),
    (G + ["--final", "highest"], "--final: invalid choice"),
    (G + ["--max-memory", "0"], "--max-memory"),
    (G + ["--runner", "warp"], "--runner"),
    (["score", "{img}", "--prompt", CAT, "--reflect", "-2"], "--reflect"),
    (["make-tiny", "{out}", "--seed", "-3"], "--seed"),
    (["generate", CAT], "--out"),
    # model directories
    (["score", "{img}", "--prompt", CAT, "--model", "{pickled}", "--quiet"], "could run arbitrary code"),
    (["score", "{img}", "--prompt", CAT, "--model", "{mismatch}", "--quiet"],
     "model.language_model.layers.0.mlp.down_proj.weight has shape [33, 64] but the model built from "
     "config.json expects [32, 64]"),
    (["score", "{img}", "--prompt", CAT, "--model", "{dir}/none"], "does not exist"),
    # malformed config.json / tokenizer files: the file and the field named (issue 15)
    (G[:5] + ["{cfg_str}", "--quiet"], "cfg_str/config.json: field 'language_config.hidden_size' must be an integer"),
    (G[:5] + ["{cfg_nosec}", "--quiet"], "cfg_nosec/config.json: section 'gen_head_config' is missing"),
    (G[:5] + ["{cfg_type}", "--quiet"], "cfg_type/config.json: field 'model_type' is 'bert'"),
    (G[:5] + ["{cfg_llm}", "--quiet"], "cfg_llm/config.json: field 'language_config.model_type' is 'mistral'"),
    (G[:5] + ["{tok_bos}", "--quiet"], "tok_bos/tokenizer_config.json: field 'add_bos_token' must be true or false"),
    (G[:5] + ["{tok_json}", "--quiet"], "tok_json/tokenizer.json: section 'model'"),
    (G[:5] + ["{tf_cfg}", "--quiet"], "tf_cfg/config.json: field 'vq_config.num_embeddings' must be an integer"),
]


@pytest.mark.parametrize("argv, fragment", CLI_CASES, ids=[f"{i:02d}-{c[1][:24]}" for i, c in enumerate(CLI_CASES)])
def test_cli_bad_input(files, tmp_path, capsys, argv, fragment):
    out = tmp_path / "out"
    code = cli.main(_argv(argv, files, out))
    err = capsys.readouterr().err
    _assert_one_error(code, err, fragment, out)


def test_cli_pickle_refusal_does_not_suggest_unsafe_loading(files, capsys):
    cli.main(["score", files["img"], "--prompt", CAT, "--model", files["pickled"], "--quiet"])
    err = capsys.readouterr().err
    assert "weights_only=False" not in err and "weights_only` set to `False" not in err
    assert "safetensors" in err


def test_cli_refuses_what_the_models_geometry_cannot_hold(files, tmp_path, capsys, monkeypatch):
    """Between the early lower bound (1 image of 16 px per sample) and the micro model's real need (3 rounds of
    64 px + sheets): refused right after loading, before anything is drawn."""
    from janus_r1 import runplan

    n = 1000
    early, real = n * runplan.result_bytes(16, 1, 1), n * runplan.result_bytes(64, 16, 3)
    monkeypatch.setattr(runplan, "available_bytes", lambda device: (early + real) // 2)
    monkeypatch.setattr("janus_r1.generation.introspect.draw", lambda *a: pytest.fail("drew before refusing"))
    out = tmp_path / "out"
    code = cli.main(_argv(G + ["--num-images", str(n)], files, out))
    _assert_one_error(code, capsys.readouterr().err, f"--num-images: {n} sample(s) of up to 3 image(s) need about",
                      out)


def test_cli_one_critique_per_image(files, tmp_path, capsys):
    """``--critique`` repeated: one per image, in order (issue 24: the earlier ones were dropped silently)."""
    import json

    out = tmp_path / "out"
    argv = ["regenerate", files["img"], files["img"], "--prompt", CAT, "--critique", "too red", "--critique",
            "too small", "--out", str(out), "--model", files["tiny"], "--quiet", "--max-rounds", "1"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    trace = json.loads((out / "trace.json").read_text())
    assert [s["attempts"][0]["reflection"] for s in trace["samples"]] == ["No, too red", "No, too small"]


def test_api_refuses_a_fifo_as_an_image(micro, files):
    for call in (lambda: micro.score(files["fifo"], CAT), lambda: micro.ask(files["fifo"])):
        with pytest.raises(JanusR1Error, match="is a FIFO \\(named pipe\\); only regular image files are read"):
            call()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_cli_read_only_out(files, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code = cli.main(["generate", CAT, "--out", str(ro / "out"), "--model", "/no/model"])
        _assert_one_error(code, capsys.readouterr().err, "cannot write into", ro / "out")
    finally:
        ro.chmod(0o755)


def test_cli_help_documents_every_option(capsys):
    """Every option of every command has help text; the top-level description names every command."""
    parser = cli.build_parser()
    assert cli.main(["--help"]) == 0
    top = capsys.readouterr().out
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sp in sub.choices.items():
        assert f"  {name} " in top, f"{name} missing from the top-level help"
        if name.startswith("train-"):
            continue  # the training helper's options
        for action in sp._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings[0]} has no help"
            if not action.option_strings:
                assert action.help, f"{name} {action.dest} has no help"
    assert cli.main(["regenerate", "--help"]) == 0
    assert "INPUT image counting as round 1" in " ".join(capsys.readouterr().out.split())


# --- Python API ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def img():
    return Image.new("RGB", (48, 40), (10, 120, 200))


API_CASES = [
    (lambda m, i: m.generate(None), "prompts must be text"),
    (lambda m, i: m.generate(5), "prompts must be text (str) or a list of str (got int)"),
    (lambda m, i: m.generate(b"a cat"), "prompts must be text (str) or a list of str, not bytes"),
    (lambda m, i: m.generate(["a cat", 3]), "prompts[1] is a int"),
    (lambda m, i: m.generate([]), "prompts: no prompt given"),
    (lambda m, i: m.judge(None, CAT), "images must be a PIL image, a path"),
    (lambda m, i: m.judge([i, 5], CAT), "images[1] is a int"),
    (lambda m, i: m.judge(i, CAT, max_reflection=-1), "max_reflection"),
    (lambda m, i: m.score(i, 5), "prompts must be text"),
    (lambda m, i: m.score(b"png bytes", CAT), "images must be a PIL image"),
    (lambda m, i: m.edit(None, "make it blue"), "images must be a PIL image"),
    (lambda m, i: m.edit(i, None), "instructions must be text"),
    (lambda m, i: m.regenerate(i, CAT, critiques=5), "critiques must be None, a str, or a list"),
    (lambda m, i: m.regenerate(i, CAT, critiques=["a", "b"]), "2 critiques for 1 images"),
    (lambda m, i: m.regenerate(i, CAT, critiques=[""]), "critiques[0] is empty"),
    (lambda m, i: m.regenerate(None, CAT), "images must be a PIL image"),
    (lambda m, i: m.generate(CAT, hooks=5), "hooks must be a janus_r1.Hooks or None"),
    (lambda m, i: m.generate(CAT, seed=2**64), "seed must be an integer in [0, 2^64-1"),
    (lambda m, i: m.generate(CAT, seed=-1), "seed must be"),
    (lambda m, i: m.generate(CAT, seed=1.5), "seed must be"),
    (lambda m, i: m.generate(CAT, seed=True), "seed must be"),
    (lambda m, i: m.text_to_image(CAT, num_images=2.0), "num_images must be an integer"),
    (lambda m, i: m.generate(CAT, cfg="5"), "cfg must be a finite number"),
    (lambda m, i: m.generate(CAT, final="highest"), "final must be one of 'last', 'best'"),
    (lambda m, i: m.generate(CAT, reencode="yes"), "reencode must be True or False"),
    (lambda m, i: m.generate(CAT, max_prompt_tokens=0), "max_prompt_tokens must be"),
    (lambda m, i: m.generate("cat " * 400), "raise max_prompt_tokens"),
    (lambda m, i: m.best_of_n(5), "prompt must be one text"),
    (lambda m, i: m.ask(i, "word " * 5000), "question is 20"),
    (lambda m, i: m.ask([i, i], ["Why?", "word " * 5000]), "question 1 is 20"),
    (lambda m, i: m.best_of_n(CAT, n=0), "n must be an integer >= 1"),
]


@pytest.mark.parametrize("call, fragment", API_CASES, ids=[f"{i:02d}-{c[1][:24]}" for i, c in enumerate(API_CASES)])
def test_api_bad_input(micro, img, call, fragment):
    with pytest.raises(JanusR1Error) as err:
        call(micro, img)
    assert fragment in str(err.value)


@pytest.mark.parametrize("name", list(MALFORMED))
def test_api_malformed_model_folder_names_the_file(files, name):
    from janus_r1 import JanusR1

    with pytest.raises(JanusR1Error) as err:
        JanusR1.from_pretrained(files[name], device="cpu", progress=False)
    assert f"{name}/{MALFORMED[name][0]}: " in str(err.value) and "\n" not in str(err.value)


def test_api_accepts_paths_numpy_scalars_and_no_hooks(micro, img, tmp_path):
    p = tmp_path / "a.png"
    img.save(p)
    by_path = micro.judge(p, CAT, max_reflection=3, seed=1)
    by_str = micro.judge(str(p), CAT, max_reflection=3, seed=1)
    by_pil = micro.judge(Image.open(p), CAT, max_reflection=3, seed=1)
    assert by_path[0].score == by_str[0].score == by_pil[0].score
    assert len(micro.score([p, str(p), img], CAT)) == 3
    a = micro.generate(CAT, seed=np.int64(3), cfg=np.float32(5.0), num_images=np.int64(1), max_rounds=np.int64(2),
                       max_reflection=np.int32(3), temperature=np.float64(1.0), top_k=np.int64(4096),
                       hooks=None)[0]
    b = micro.generate(CAT, seed=3, cfg=5.0, max_rounds=2, max_reflection=3)[0]
    assert [x.codes for x in a.attempts] == [x.codes for x in b.attempts] and a.seed == 3
    assert micro.text_to_image(CAT, seed=SEED_MAX, hooks=None)[0].seed == SEED_MAX
    assert micro.edit(p, "make it red", seed=np.uint64(2))[0].seed == 2


def test_api_long_prompt_passes_with_a_larger_budget(micro):
    long = "cat " * 400
    with pytest.raises(JanusR1Error, match="over the budget of 200"):
        micro.text_to_image(long, seed=0)
    [r] = micro.text_to_image(long, seed=0, max_prompt_tokens=1000)
    assert len(r.attempts[0].codes) == micro.num_image_tokens


def test_default_seed_is_drawn_recorded_and_repeats(micro):
    [r] = micro.text_to_image(CAT)
    assert isinstance(r.seed, int) and 0 <= r.seed < 2**53 and r.to_dict()["seed"] == r.seed
    [again] = micro.text_to_image(CAT, seed=r.seed)
    assert again.attempts[0].codes == r.attempts[0].codes
