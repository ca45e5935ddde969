"""Ask / describe (Janus's understanding side) against transformers' own Janus understanding path, on tiny models.

The oracle is independent of our prompt and image code: transformers' ``JanusProcessor`` (its default system
prompt, its placeholder expansion, its PIL image processor) builds the ids and pixels, and
``JanusForConditionalGeneration.generate`` (greedy) writes the answer on the same weights.
"""

from __future__ import annotations

import contextlib
import inspect

import numpy as np
import pytest
import torch
from PIL import Image

from janus_r1 import Answer, Cancelled, Hooks, JanusR1, JanusR1Error, defaults
from janus_r1.generation import templates
from janus_r1.model import vocabulary as V
from janus_r1.model.tiny import build_tiny_model
from janus_r1.model.vocabulary import Vocabulary

QUESTIONS = ["What colour is it?", "Describe every part of this picture in detail, from left to right, please."]


def _noise(w: int, h: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


class Oracle:
    """Our engine and transformers' processor + model on the same tiny random weights."""

    def __init__(self) -> None:
        from transformers import JanusProcessor

        try:  # transformers 5.x: the PIL backend; 4.5x: the one image processor
            from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil as Images
        except ImportError:
            from transformers import JanusImageProcessor as Images
        # transformers 4.5x's JanusProcessor hard-codes 576 image tokens: there the tiny model of the real 576-token
        # geometry (384 px), elsewhere the micro one (16 tokens, 64 px)
        legacy = "num_image_tokens" not in inspect.signature(JanusProcessor.__init__).parameters
        model, tok = build_tiny_model("real" if legacy else "micro", seed=3)
        self.jr = JanusR1(model, Vocabulary(tok), source="oracle")
        self.size, self.n = self.jr.image_size, self.jr.num_image_tokens
        pixels = Images(size={"height": self.size, "width": self.size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
        kw = dict(tokenizer_object=tok.backend_tokenizer, bos_token=V.BOS, eos_token=V.EOS, pad_token=V.PAD,
                  padding_side="left",
                  extra_special_tokens={"image_token": V.IMAGE_PLACEHOLDER, "boi_token": V.BOI, "eoi_token": V.EOI})
        if legacy:  # it insists on the LLaMA tokenizer class, which writes its own BOS post-processor
            from transformers import LlamaTokenizerFast

            text_tok, extra = LlamaTokenizerFast(**kw, add_bos_token=True), {}
        else:
            from transformers import PreTrainedTokenizerFast

            text_tok, extra = PreTrainedTokenizerFast(**kw), {"num_image_tokens": self.n}
        self.proc = JanusProcessor(image_processor=pixels, tokenizer=text_tok, use_default_system_prompt=True,
                                   **extra)
        # pictures the processor and ours see alike: the longest side already the model's (no resampling)
        self.images = [_noise(self.size, self.size * 3 // 4, 1), _noise(self.size, self.size, 2)]

    def inputs(self, questions: list[str], images: list[Image.Image], per_row: int = 1):
        user = "<|User|>: " + "<image_placeholder>\n" * per_row
        texts = [f"{user}{q}\n\n<|Assistant|>:" for q in questions]
        return self.proc(text=texts, images=images, return_tensors="pt", padding=True)

    def generate(self, inputs, max_new: int) -> list[list[int]]:
        ids = self.jr.vocab.ids
        with torch.no_grad():
            out = self.jr.model.generate(**inputs, max_new_tokens=max_new, do_sample=False, eos_token_id=ids.eos,
                                         pad_token_id=ids.pad)
        rows = out[:, inputs["input_ids"].shape[1]:].tolist()
        return [r[: r.index(ids.eos) + 1] if ids.eos in r else r for r in rows]


@pytest.fixture(scope="module")
def oracle() -> Oracle:
    return Oracle()


@contextlib.contextmanager
def _eos_at(jr: JanusR1, row: int, call: int):
    """A hook on the lm head: from its ``call``-th call on, row ``row`` prefers EOS (our loop and transformers'
    both call it once for the prompt, then once per token)."""
    calls = {"n": 0}

    def hook(_m, _i, out):
        calls["n"] += 1
        if calls["n"] >= call:
            out[row, ..., jr.vocab.ids.eos] += 1000.0
        return out

    h = jr.model.lm_head.register_forward_hook(hook)
    try:
        yield
    finally:
        h.remove()


def test_prompt_ids_are_deepseeks_chat_format_and_the_processors(oracle):
    j, v = oracle.jr.janus, oracle.jr.vocab
    text = templates.ask_prompt("  Which one is red?  ", 2)
    assert text == (templates.ASK_SYSTEM_PROMPT + "\n\n<|User|>: <image_placeholder>\n<image_placeholder>\n"
                    "Which one is red?\n\n<|Assistant|>:")
    ids = templates.ask_ids(j, "Which one is red?", 2, oracle.n)
    # DeepSeek's VLChatProcessor: encode the whole string with BOS, then each placeholder -> BOI, n x IMG, EOI
    expect = []
    for t in v.tokenizer.encode(text):
        expect += [v.ids.boi, *[v.ids.image_placeholder] * oracle.n, v.ids.eoi] if t == v.ids.image_placeholder \
            else [t]
    assert ids == expect and ids[0] == v.ids.bos
    assert ids.count(v.ids.image_placeholder) == 2 * oracle.n and ids.count(v.ids.boi) == 2
    theirs = oracle.inputs(["Which one is red?"], oracle.images, per_row=2)
    assert theirs["input_ids"][0].tolist() == ids


@pytest.mark.parametrize("runner", ["eager", "fixed", "graph", "dynamic"])
def test_greedy_answers_equal_transformers_generate_batch_and_eos(oracle, runner, monkeypatch):
    jr = oracle.jr
    monkeypatch.setattr(jr.janus, "runner", runner)  # every decode runner writes the same answer
    inputs = oracle.inputs(QUESTIONS, oracle.images)
    with _eos_at(jr, 0, 4):  # row 0 ends after three tokens, row 1 goes on
        theirs = oracle.generate(inputs, 10)
    with _eos_at(jr, 0, 4):
        ours = jr.ask(oracle.images, QUESTIONS, max_new_tokens=10, temperature=0)
    assert [a.ids for a in ours] == theirs
    assert ours[0].ids[-1] == jr.vocab.ids.eos and len(ours[0].ids) == 4 and ours[0].finished
    assert len(ours[1].ids) == 10 and not ours[1].finished
    assert ours[0].text == jr.vocab.decode(ours[0].ids[:-1]).strip()
    assert [a.question for a in ours] == QUESTIONS and ours[0].images == 1


def test_two_images_in_one_question_equal_transformers(oracle):
    jr = oracle.jr
    theirs = oracle.generate(oracle.inputs(["Which one is brighter?"], oracle.images, per_row=2), 8)
    [ours] = jr.ask([oracle.images], "Which one is brighter?", max_new_tokens=8)
    assert [ours.ids] == theirs and ours.images == 2
    # the node's and CLI's image_b: the second image of each question
    [b] = jr.ask(oracle.images[0], "Which one is brighter?", max_new_tokens=8, images_b=oracle.images[1])
    assert b.ids == ours.ids


def test_a_batch_answers_as_each_question_alone(micro):
    pics = [_noise(64, 40, 5), _noise(30, 64, 6), _noise(64, 64, 7)]
    qs = ["Why?", QUESTIONS[1], "What is in the middle of the image, and what colour is it?"]
    batch = micro.ask(pics, qs, max_new_tokens=9)
    alone = [micro.ask(p, q, max_new_tokens=9)[0] for p, q in zip(pics, qs)]
    assert [a.ids for a in batch] == [a.ids for a in alone]
    # one question for every image, one image for every question
    assert [a.question for a in micro.ask(pics, "Why?", max_new_tokens=2)] == ["Why?"] * 3
    assert [a.ids for a in micro.ask(pics[0], qs, max_new_tokens=9)] == \
        [micro.ask(pics[0], q, max_new_tokens=9)[0].ids for q in qs]


def test_describe_is_ask_with_the_default_question(micro, tmp_path):
    pic = _noise(64, 64, 8)
    pic.save(tmp_path / "a.png")
    [d] = micro.describe(str(tmp_path / "a.png"), max_new_tokens=6)
    [a] = micro.ask(pic, "Describe this image in detail.", max_new_tokens=6)
    assert d.question == defaults.ASK_QUESTION == "Describe this image in detail."
    assert (d.ids, d.text) == (a.ids, a.text) and isinstance(d, Answer)
    sig = inspect.signature(JanusR1.ask).parameters
    assert (sig["question"].default, sig["max_new_tokens"].default, sig["temperature"].default,
            sig["top_p"].default, sig["top_k"].default) == (defaults.ASK_QUESTION, defaults.ASK_MAX_NEW_TOKENS,
                                                            defaults.ASK_TEMPERATURE, defaults.ASK_TOP_P,
                                                            defaults.ASK_TOP_K)


def test_sampling_is_seeded_and_a_tiny_top_p_is_greedy(micro):
    pic = _noise(64, 64, 9)
    one = micro.ask(pic, "Why?", max_new_tokens=12, temperature=1.0, top_p=1.0, seed=4)[0]
    again = micro.ask(pic, "Why?", max_new_tokens=12, temperature=1.0, top_p=1.0, seed=4)[0]
    other = micro.ask(pic, "Why?", max_new_tokens=12, temperature=1.0, top_p=1.0, seed=5)[0]
    assert one.ids == again.ids and one.seed == 4 and one.ids != other.ids
    greedy = micro.ask(pic, "Why?", max_new_tokens=12)[0]
    assert micro.ask(pic, "Why?", max_new_tokens=12, temperature=1.5, top_p=1e-6, seed=6)[0].ids == greedy.ids
    assert micro.ask(pic, "Why?", max_new_tokens=12, temperature=1.0, top_k=1, seed=7)[0].ids == greedy.ids
    drawn = micro.ask(pic, "Why?", max_new_tokens=1, temperature=1.0)[0].seed
    assert isinstance(drawn, int)  # recorded, so the answer can be repeated


def test_progress_per_token_and_cancel_leaves_the_model_usable(micro):
    pic = _noise(64, 64, 10)
    events, phases = [], []
    micro.ask(pic, "Why?", max_new_tokens=5, hooks=Hooks(on_step=events.append, on_phase=phases.append))
    assert phases == ["answer"] and [(e.phase, e.step, e.total) for e in events] == [("text", k, 5) for k in
                                                                                      range(1, 6)]
    n = {"k": 0}

    def cancel() -> bool:
        n["k"] += 1
        return n["k"] > 2

    with pytest.raises(Cancelled):
        micro.ask(pic, "Why?", max_new_tokens=50, hooks=Hooks(should_cancel=cancel))
    assert micro.ask(pic, "Why?", max_new_tokens=5)[0].ids == micro.ask(pic, "Why?", max_new_tokens=5)[0].ids


def test_memory_needed_knows_the_ask_task(micro):
    base = micro.memory_needed("ask", batch=1, images=1, max_new_tokens=16)
    assert micro.memory_needed("ask", batch=2, images=1, max_new_tokens=16) > base
    assert micro.memory_needed("ask", batch=1, images=2, max_new_tokens=16) > base
    assert micro.memory_needed("ask", batch=1, images=1, max_new_tokens=512) > base
    assert micro.memory_needed("describe") == micro.memory_needed("ask")
    from janus_r1.model.memory import memory_needed

    assert micro.memory_needed("judge", batch=2, reflection=8) == memory_needed(micro.model, "judge", 2,
                                                                                 reflection=8)


PIC = Image.new("RGB", (64, 64), (200, 30, 30))


@pytest.mark.parametrize("call, match", [
    (lambda m: m.ask(PIC, ""), r"^question is empty; ask something"),
    (lambda m: m.ask(PIC, "  \n"), r"^question is empty"),
    (lambda m: m.ask(PIC, ["Why?", " "]), r"^question\[1\] is empty"),
    (lambda m: m.ask(PIC, []), r"^question: no question given"),
    (lambda m: m.ask(PIC, b"why"), r"^question must be text \(str\), not bytes"),
    (lambda m: m.ask(PIC, 3), r"^question must be text \(str\) or a list of str \(got int\)"),
    (lambda m: m.ask(PIC, "is <image_placeholder> red?"), r"contains '<image_placeholder>'; leave image tags out"),
    (lambda m: m.ask(None, "Why?"), r"^images must be a PIL image, a path"),
    (lambda m: m.ask([], "Why?"), r"^images: no image given"),
    (lambda m: m.ask([PIC, []], "Why?"), r"^images\[1\] is an empty list"),
    (lambda m: m.ask([PIC, 7], "Why?"), r"^images\[1\] is a int"),
    (lambda m: m.ask(["/no/such.png"], "Why?"), r"^images\[0\]: no such file '/no/such.png'"),
    (lambda m: m.ask([PIC, PIC], ["a?", "b?", "c?"]), r"^got 2 images but 3 questions; give one question, or one"),
    (lambda m: m.ask([PIC, PIC, PIC], "Why?", images_b=[PIC, PIC]),
     r"^got 2 images_b for 3 images; give one, or one per image\.$"),
    (lambda m: m.ask(PIC, "Why?", max_new_tokens=0), r"^max_new_tokens must be an integer >= 1 \(got 0\)"),
    (lambda m: m.ask(PIC, "Why?", max_new_tokens=2.5), r"^max_new_tokens must be an integer"),
    (lambda m: m.ask(PIC, "Why?", max_new_tokens=True), r"^max_new_tokens must be an integer"),
    (lambda m: m.ask(PIC, "Why?", temperature=-0.1), r"^temperature must be a finite number >= 0 .*0 answers greedily"),
    (lambda m: m.ask(PIC, "Why?", temperature=float("nan")), r"^temperature must be a finite number"),
    (lambda m: m.ask(PIC, "Why?", temperature=1, top_p=0), r"^top_p must be a number in \(0, 1\]"),
    (lambda m: m.ask(PIC, "Why?", top_p=1.5), r"^top_p must be a number in \(0, 1\]"),
    (lambda m: m.ask(PIC, "Why?", top_k=-1), r"^top_k must be an integer >= 0"),
    (lambda m: m.ask(PIC, "Why?", seed=-1), r"^seed must be an integer"),
    (lambda m: m.ask(PIC, "Why?", hooks=print), r"^hooks must be a janus_r1.Hooks"),
    (lambda m: m.describe(PIC, max_new_tokens=-3), r"^max_new_tokens must be an integer >= 1"),
])
def test_bad_input_is_one_clear_error(micro, call, match):
    with pytest.raises(JanusR1Error, match=match):
        call(micro)


def test_prompt_budget_keeps_each_answer_a_usable_prompt(micro):
    """Issue 25, finding 2: ``prompt_budget`` answers fit a text-to-image prompt of that many tokens with its
    template (what ``generate`` accepts), ending at a whole sentence when shortened; without it the answer runs
    to max_new_tokens and does not fit."""
    from janus_r1.generation.prompt_fit import fit_text, prompt_tokens

    j = micro.janus
    text = "A red cube. It sits on a blue sphere! Behind them a green wall rises"
    assert fit_text(j, text, 1000) == text  # fits: untouched
    budget = prompt_tokens(j, "A red cube. It sits on a blue sphere!")
    assert fit_text(j, text, budget) == "A red cube. It sits on a blue sphere!"  # the last whole sentence that fits
    assert fit_text(j, text, budget - 1) == "A red cube."
    pic = Image.new("RGB", (32, 32), (200, 30, 30))
    [long] = micro.ask(pic, max_new_tokens=300)
    [kept] = micro.ask(pic, max_new_tokens=300, prompt_budget=60)
    assert prompt_tokens(j, long.text) > 60 and not long.shortened  # the tiny model's gibberish runs long
    assert prompt_tokens(j, kept.text) <= 60 and kept.shortened and kept.text
    assert long.text.startswith(kept.text[: len(kept.text) // 2])  # the same answer, shortened (greedy)
    micro.generate(kept.text, max_rounds=1, max_reflection=2, seed=0, max_prompt_tokens=60)  # accepted as a prompt
    with pytest.raises(JanusR1Error, match="prompt_budget"):
        micro.ask(pic, prompt_budget=-1)
