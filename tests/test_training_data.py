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
        D.load_t2i_labels([labels], vocab)
    assert f"{labels}:3" in str(e.value) and needle in str(e.value)


def test_skip_mode_counts_each_reason(tmp_path, vocab):
    labels = _bad_labels(tmp_path)
    recs, report = D.load_t2i_labels([labels], vocab, on_bad_row="skip")
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
