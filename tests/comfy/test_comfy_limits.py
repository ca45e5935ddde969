"""Issue 24 on the real ComfyUI executor: the Ask node refuses a question over the model's context (with the image
rows) with one clear error before anything is decoded, and the error names the widget, not a CLI flag."""

from __future__ import annotations

from test_comfy_ask import ask, load, preview
from test_comfy_nodes import graph


def test_a_question_over_the_models_context_is_one_clear_error(worker):
    question = "word " * 5000  # ~20,000 positions with the tiny tokenizer, over the 16,384 the model has
    res = worker.execute(graph(load("janus_r1_example_a.png"), ask("2", question=question), preview("3")))
    errs = [e[1] for e in res["events"] if e[0] == "execution_error"]
    assert len(errs) == 1 and errs[0]["node_id"] == "3", errs
    msg = errs[0]["exception_message"].strip()
    assert msg.startswith("Janus-R1: question is 20") and "over the model's context of 16384 positions" in msg, msg
    assert "CLI" not in msg and "\n" not in msg
