"""Training data: validation with file:line, the fail/skip switch and its counts, selection rules."""

from __future__ import annotations

import json
import random

import pytest

from janus_r1 import JanusR1Error
from janus_r1.training import data as D
from janus_r1.training import sft as S
from janus_r1.training.config import SFTConfig, load_config
from janus_r1.training.toy import write_toy_edit, write_toy_t2i


@pytest.fixture(scope="module")
def vocab():
    from janus_r1.model.tiny import build_tiny_tokenizer
    from janus_r1.model.vocabulary import Vocabulary

    return Vocabulary(build_tiny_tokenizer())


def _bad_labels(tmp_path):
    labels = write_toy_t2i(tmp_path, n_prompts=2)
    (tmp_path / "corrupt.png").write_bytes(b"not a png at all")
    rows = labels.read_text().splitlines()
    ok = json.loads(rows[0])
    item = dict(ok["data"][0])
    rows += [
        "{not json",  # line 3
        json.dumps({"promptid": 7, "prompt": "x", "data": [{**item, "prob": 1.5}]}),  # 4
        json.dumps({"promptid": 8, "prompt": "y", "data": [{**item, "img_path": "missing.png"}]}),  # 5
        json.dumps({"promptid": 9, "prompt": "z", "data": [{**item, "img_path": "corrupt.png"}]}),  # 6
        json.dumps({"promptid": 10, "prompt": "cat " * 300, "data": [item]}),  # 7
    ]
    labels.write_text("\n".join(rows) + "\n")
    return labels


@pytest.mark.parametrize("line,needle", [(3, "not valid JSON"), (4, "prob must be a number in [0, 1]"),
                                         (5, "image not found"), (6, "cannot read image"), (7, "over the budget")])
def test_fail_mode_names_file_and_line(tmp_path, vocab, line, needle):
    labels = _bad_labels(tmp_path)
    rows = labels.read_text().splitlines()
    keep = rows[:2] + [rows[line - 1]]  # the bad row stays at line 3
    labels.write_text("\n".join(keep) + "\n")
    with pytest.raises(JanusR1Error) as e:
        D.load_t2i_labels([labels], vocab, check_images=True)  # eager: every image opened at start-up
    assert f"{labels}:3" in str(e.value) and needle in str(e.value)


def test_skip_mode_counts_each_reason(tmp_path, vocab):
    labels = _bad_labels(tmp_path)
    recs, report = D.load_t2i_labels([labels], vocab, on_bad_row="skip", check_images=True)
    assert len(recs) == 2 and report.kept == 12
    assert report.skipped == {"invalid JSON": 1, "prob outside [0, 1]": 1, "bad image": 2, "prompt over budget": 1}
    assert any(f"{labels}:5" in m for m in report.messages)
    assert "12 rows kept, 5 skipped" in report.summary()


def test_sources_merge_by_promptid_and_conflicts_are_errors(tmp_path, vocab):
    a = write_toy_t2i(tmp_path / "flux", n_prompts=2)
    b = write_toy_t2i(tmp_path / "janus", n_prompts=2)
    recs, _ = D.load_t2i_labels([a, b], vocab)
    assert len(recs) == 2 and all(len(r.images) == 12 for r in recs)  # Janus images not dropped (S2)
    rows = [json.loads(x) for x in b.read_text().splitlines()]
    rows[1]["prompt"] = "something else"
    b.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(JanusR1Error, match=f"{b}:2: promptid 1 has another prompt text"):
        D.load_t2i_labels([a, b], vocab)


def test_selection_paper_thresholds_and_state_codes(tmp_path, vocab):
    recs, _ = D.load_t2i_labels([write_toy_t2i(tmp_path, n_prompts=2)], vocab)
    paper = S.Pools(recs, SFTConfig())
    # probs 0.92 0.85 | 0.75 | 0.3 0.1 0.05: gen positives S >= 0.8, judge positives S >= 0.7, negatives S < 0.5
    assert len(paper.t2i) == 4
    rec, pos, neg = paper.judge[0]
    assert [x.prob for x in pos] == [0.92, 0.85, 0.75] and [x.prob for x in neg] == [0.3, 0.1, 0.05]
    code = S.Pools(recs, SFTConfig(select="state"))
    assert len(code.t2i) == 6  # state 4 (S >= 0.7) counts as a generation positive in the released code
    strict = S.Pools(recs, SFTConfig(gen_positive=0.95))
    assert strict.sizes() == {"t2i": 0, "judge": 2, "regen": 0} and strict.mix() == [0.0, 1.0, 0.0]


def test_draws_respect_the_task_rules(tmp_path, vocab):
    recs, _ = D.load_t2i_labels([write_toy_t2i(tmp_path, n_prompts=3)], vocab)
    pools = S.Pools(recs, SFTConfig())
    probs = {x.path: x.prob for r in recs for x in r.images}
    rng = random.Random(0)
    verdicts = []
    for _ in range(200):
        s = pools.draw("judge", rng)
        verdicts.append(s.verdict)
        assert len(s.history) <= 2 and all(probs[p] < 0.5 for p, _ in s.history)
        assert s.current not in [p for p, _ in s.history]
        assert (probs[s.current] >= 0.7) == (s.verdict == "Yes") and (probs[s.current] < 0.5) == (s.verdict == "No")
        r = pools.draw("regen", rng)
        assert 1 <= len(r.history) <= 2 and probs[r.target] >= 0.8
        assert all(probs[p] < probs[r.target] for p, _ in r.history)
    assert 0.4 < verdicts.count("Yes") / 200 < 0.6  # balanced 50/50
    drops = sum(pools.draw("t2i", rng).drop for _ in range(2000))
    assert 150 < drops < 250  # 10 % prompt dropout


def test_answer_ids_keep_verdict_and_eos(vocab):
    from types import SimpleNamespace

    j = SimpleNamespace(vocab=vocab)
    ids = S.answer_ids(j, "No", "no, the dog is missing. " * 50, max_tokens=20)
    assert len(ids) == 20 and ids[0] == vocab.ids.no and ids[-1] == vocab.ids.eos  # S4: the EOS survives
    assert S.answer_text("Yes", "yes, it matches") == "Yes, it matches"
    assert S.answer_text("No", "the dog is missing") == "No, the dog is missing"


def test_edit_rows_and_prompts(tmp_path, vocab):
    rows, report = D.load_edit_rows([write_toy_edit(tmp_path)], vocab)
    assert len(rows) == 2 and rows[0].output.endswith("out0.png")
    (tmp_path / "p.jsonl").write_text('{"prompt": "a cat"}\n\n{"caption": "a dog"}\n{"other": 1}\n')
    with pytest.raises(JanusR1Error, match=r"p.jsonl:4: a prompt row needs"):
        D.load_prompts(tmp_path / "p.jsonl", vocab)
    prompts, rep = D.load_prompts(tmp_path / "p.jsonl", vocab, on_bad_row="skip")
    assert prompts == ["a cat", "a dog"] and rep.skipped == {"missing field": 1}


def test_config_precedence_and_unknown_keys(tmp_path):
    (tmp_path / "r.yaml").write_text("lr: 1.0e-4\nmix: [1, 1, 2]\nbatch_size: 8\n")
    cfg = load_config(SFTConfig, str(tmp_path / "r.yaml"), {"batch_size": 2, "lr": None})
    assert cfg.lr == 1e-4 and cfg.mix == (1, 1, 2) and cfg.batch_size == 2
    (tmp_path / "bad.yaml").write_text("learning_rate: 1\n")
    with pytest.raises(JanusR1Error, match="unknown setting 'learning_rate'"):
        load_config(SFTConfig, str(tmp_path / "bad.yaml"))


def test_sharding_settings_are_checked_and_a_missing_deepspeed_is_named(tmp_path, monkeypatch):
    with pytest.raises(JanusR1Error, match="sharding must be none, fsdp, zero2 or zero3"):
        load_config(SFTConfig, None, {"sharding": "zero1"})
    with pytest.raises(JanusR1Error, match="sharding zero3 keeps fp32 master weights"):
        load_config(SFTConfig, None, {"sharding": "zero3", "dtype": "bf16"})
    with pytest.raises(JanusR1Error, match="sharding zero2 supports mixed_precision no or bf16"):
        load_config(SFTConfig, None, {"sharding": "zero2", "mixed_precision": "fp16"})
    import sys

    from janus_r1.training import zero

    monkeypatch.setitem(sys.modules, "deepspeed", None)  # as if not installed
    with pytest.raises(JanusR1Error, match=r"needs DeepSpeed: pip install deepspeed .*sharding: fsdp"):
        zero._deepspeed()


def test_shipped_recipes_load():
    from pathlib import Path

    import janus_r1.training as T
    from janus_r1.training.config import GRPOConfig

    recipes = Path(T.__file__).parent / "recipes"
    sft = load_config(SFTConfig, str(recipes / "sft_t2i.yaml"))
    assert sft.mix == (0.2, 0.3, 0.5) and sft.betas == (0.9, 0.95) and sft.gen_positive == 0.8
    grpo = load_config(GRPOConfig, str(recipes / "grpo_t2i.yaml"))
    assert (grpo.group_size, grpo.beta, grpo.lr, grpo.convert_lr, grpo.min_lr) == (7, 0.05, 6e-6, 2e-6, 2e-7)
    assert load_config(GRPOConfig, str(recipes / "grpo_edit.yaml")).edit_weights == (0.5, 1.0)
    assert load_config(SFTConfig, str(recipes / "sft_t2i_code.yaml")).select == "state"
    assert load_config(SFTConfig, str(recipes / "sft_edit.yaml")).task == "edit"


# --- Parquet label files, lazy images, questions ---------------------------------------------------------


def _write_parquet(path, rows):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), str(path), row_group_size=2)
    return path


def test_parquet_per_prompt_rows_read_like_our_jsonl(tmp_path, vocab):
    labels = write_toy_t2i(tmp_path, n_prompts=3)
    rows = [json.loads(x) for x in labels.read_text().splitlines()]
    pq_file = _write_parquet(tmp_path / "labels.parquet", rows)
    from_jsonl, _ = D.load_t2i_labels([labels], vocab)
    from_parquet, report = D.load_t2i_labels([pq_file], vocab, check_images=True)
    strip = [[(x.path, x.reason, x.prob, x.state) for x in r.images] for r in from_jsonl]
    assert strip == [[(x.path, x.reason, x.prob, x.state) for x in r.images] for r in from_parquet]
    assert [r.where for r in from_parquet] == [f"{pq_file}:{n}" for n in (1, 2, 3)] and report.kept == 18


def test_parquet_per_image_rows_with_embedded_images_are_read_lazily(tmp_path, vocab, monkeypatch):
    from PIL import Image

    labels = write_toy_t2i(tmp_path, n_prompts=2)
    flat = []
    for rec in (json.loads(x) for x in labels.read_text().splitlines()):
        for item in rec["data"]:
            png = (tmp_path / item.pop("img_path")).read_bytes()
            flat.append({"promptid": rec["promptid"], "prompt": rec["prompt"], **item,
                         "image": {"bytes": png, "path": f"{item['id']}.png"}})
    pq_file = _write_parquet(tmp_path / "flat.parquet", flat)
    opened = []
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a) or pytest.fail("opened an image"))
    recs, report = D.load_t2i_labels([pq_file], vocab)  # no image opened at start-up
    monkeypatch.undo()
    assert not opened and len(recs) == 2 and [len(r.images) for r in recs] == [6, 6] and report.kept == 12
    ref = recs[1].images[3].path
    assert ref == f"parquet:{pq_file}#10:image"  # row 10 = prompt 1's fourth image
    got = D.open_image(ref)
    want = Image.open(tmp_path / "p1_3.png").convert("RGB")
    assert got.size == want.size and got.tobytes() == want.tobytes()


def test_parquet_errors_name_file_and_row(tmp_path, vocab):
    rows = [{"promptid": 1, "prompt": "a cat", "img_path": "x.png", "prob": 0.9, "reason": "Yes"},
            {"promptid": 2, "prompt": "a dog", "img_path": "y.png", "prob": 1.7, "reason": "Yes"}]
    pq_file = _write_parquet(tmp_path / "bad.parquet", rows)
    with pytest.raises(JanusR1Error, match=r"bad.parquet:2 \(data\[0\]\): prob must be a number in \[0, 1\]"):
        D.load_t2i_labels([pq_file], vocab, check_images=False)
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(JanusR1Error, match="junk.parquet: cannot read as Parquet"):
        D.load_t2i_labels([tmp_path / "junk.parquet"], vocab)


def test_missing_or_corrupt_images_pass_the_scan_and_fail_when_opened(tmp_path, vocab):
    labels = _bad_labels(tmp_path)
    recs, report = D.load_t2i_labels([labels], vocab, on_bad_row="skip", check_images=False)
    assert report.skipped == {"invalid JSON": 1, "prob outside [0, 1]": 1, "prompt over budget": 1}
    paths = {x.path for r in recs for x in r.images}
    assert str(tmp_path / "missing.png") in paths and str(tmp_path / "corrupt.png") in paths
    with pytest.raises(JanusR1Error, match="image not found: .*missing.png"):
        D.open_image(str(tmp_path / "missing.png"))
    with pytest.raises(JanusR1Error, match=r"cannot read image .*corrupt.png \(UnidentifiedImageError"):
        D.open_image(str(tmp_path / "corrupt.png"))


def test_prompt_questions_from_jsonl_and_parquet(tmp_path, vocab):
    rows = [{"prompt": "a red dog", "questions": ["Is there a dog?", "Is the dog red?"]},
            {"prompt": "a cat", "questions": {"2": "Is the cat black?", "1": "Is there a cat?", "10": "Is it night?"}},
            {"prompt": "a bird"}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    want = {"a red dog": ["Is there a dog?", "Is the dog red?"],
            "a cat": ["Is there a cat?", "Is the cat black?", "Is it night?"]}
    assert D.load_questions(tmp_path / "p.jsonl") == want
    assert D.load_prompts(tmp_path / "p.jsonl", vocab)[0] == ["a red dog", "a cat", "a bird"]
    assert D.load_questions(write_toy_prompts_file(tmp_path)) == {}
    pq_rows = [{"prompt": r["prompt"], "questions": want.get(r["prompt"])} for r in rows]
    assert D.load_questions(_write_parquet(tmp_path / "p.parquet", pq_rows)) == want
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b", "questions": "Is it b?"}\n')
    with pytest.raises(JanusR1Error, match=r"bad.jsonl:2: 'questions' must be a non-empty list"):
        D.load_questions(tmp_path / "bad.jsonl")


def write_toy_prompts_file(tmp_path):
    from janus_r1.training.toy import write_toy_prompts

    return write_toy_prompts(tmp_path / "txt")
