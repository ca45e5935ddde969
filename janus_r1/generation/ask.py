"""Ask and describe: free questions about images -- Janus's understanding side -- through the one decode loop.

Each question is one row: the chat prompt of sft_format "deepseek" with the processor's system prompt, one
``<image_placeholder>`` per image expanded to ``<begin_of_image>`` + N image positions + ``<end_of_image>``
(:func:`templates.ask_ids`, the ids DeepSeek's VLChatProcessor builds), the N positions holding the image's
SigLIP + aligner embeddings -- the encoder the model reads images with before it writes text (spec §2.5). All
rows of a call are left-padded into one batch (PAD, attention 0) and answered together by
:func:`~.decode.decode_text`, which stops each row at its EOS; temperature 0 answers greedily.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from .. import defaults
from ..errors import JanusR1Error
from ..model.memory import run_bytes
from .checks import (
    add_second_images,
    check_answer_sampling,
    check_hooks,
    check_int,
    check_questions,
    load_image_groups,
    pair_questions,
    resolve_seed,
)
from .context import build
from .decode import NO_HOOKS, Hooks, decode_text
from .facade import Janus
from .sampling import Sampling, make_generator
from .templates import ask_context, ask_ids


@dataclass
class Answer:
    """The model's answer to one question about one image (or several shown together)."""

    question: str
    text: str  # decoded without special tokens, surrounding whitespace stripped
    ids: list[int] = field(repr=False)  # the answer's token ids, its EOS included when it wrote one
    finished: bool  # True: the model ended the answer (EOS); False: cut at max_new_tokens
    images: int = 1  # images shown with the question
    seed: int | None = None  # the seed the call used (drawn when none was given), so it can be repeated
    shortened: bool = False  # ended early at a whole sentence to fit a prompt budget (``prompt_fit``)

    def to_dict(self) -> dict:
        return {"question": self.question, "answer": self.text, "finished": self.finished, "images": self.images,
                "seed": self.seed}


def answer_sampling(temperature: float, top_p: float, top_k: int) -> Sampling:
    """The answer's sampler: greedy at temperature 0 (top-k still applies, top-p cannot change an argmax),
    else temperature / top-k / top-p in the reference order (``sampling.sample``)."""
    t, p, k = check_answer_sampling(temperature, top_p, top_k)
    return Sampling(top_k=k, greedy=True) if t == 0 else Sampling(temperature=t, top_k=k, top_p=p)


def _embed_once(j: Janus, groups: list[list]) -> list[list[torch.Tensor]]:
    """SigLIP embeddings of every distinct image once (one image asked many questions is encoded once)."""
    distinct: dict[int, int] = {}
    flat = []
    for g in groups:
        for im in g:
            if id(im) not in distinct:
                distinct[id(im)] = len(flat)
                flat.append(im)
    und = j.embed_und(flat)
    return [[und[distinct[id(im)]] for im in g] for g in groups]


def context_positions(j: Janus) -> int:
    """Positions the language model was built for (Janus-Pro: 16,384): a prompt and its answer must fit."""
    cfg = j.model.config
    text = getattr(cfg, "text_config", None) or getattr(cfg, "language_config", None) or cfg
    return int(getattr(text, "max_position_embeddings", 0) or 16384)


def check_context(j: Janus, questions: list[str], images: list[int], max_new_tokens: int) -> list[int]:
    """Refuse a row whose question, template and image rows plus ``max_new_tokens`` exceed the model's positions
    (before any image is encoded): past them RoPE runs out of what the model was trained on and the answer is
    noise. Returns each row's prompt length. ``images``: images shown with each question."""
    limit = context_positions(j)
    lengths = []
    for r, (q, n) in enumerate(zip(questions, images)):
        length = len(ask_ids(j, q, n, j.num_image_tokens))
        if length + max_new_tokens > limit:
            where = "question" if len(questions) == 1 else f"question {r}"
            raise JanusR1Error(
                f"{where} is {length} positions with its template and {n} image(s) of {j.num_image_tokens}, and "
                f"with max_new_tokens {max_new_tokens} that is over the model's context of {limit} positions; "
                f"shorten the question by at least {length + max_new_tokens - limit} tokens or lower max_new_tokens "
                "(CLI: --max-new-tokens)."
            )
        lengths.append(length)
    return lengths


@contextlib.contextmanager
def cancellable_prefill(j: Janus, hooks: Hooks):
    """Honour a cancel between decoder layers of the prefill, not only between tokens: a prefill of a long
    question is one forward that took tens of seconds on a big model. A pre-hook on each layer's ``o_proj`` (which
    every runner calls as a module when it has a hook: ``fused.fused_linear``) polls ``hooks`` when it sees more
    than one position, i.e. in the prefill only; the decode steps are untouched."""
    if hooks.should_cancel is None:
        yield
        return

    def poll(_module, args) -> None:
        if args[0].shape[-2] > 1:
            hooks.check()

    layers = j.model.model.language_model.layers
    handles = [layer.self_attn.o_proj.register_forward_pre_hook(poll) for layer in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def ask(
    j: Janus,
    images,
    questions=defaults.ASK_QUESTION,
    max_new_tokens: int = defaults.ASK_MAX_NEW_TOKENS,
    sampling: Sampling | None = None,
    seed: int | None = None,
    hooks: Hooks = NO_HOOKS,
    images_b=None,
) -> list[Answer]:
    """One answer per question row. ``images``: an image or path, or a list of them (one row each), an item may
    be a list of images shown together; ``questions``: one for all rows or one per row; ``images_b``: a second
    image per row (one for all, or one per row), shown after the first (compare two images)."""
    questions = check_questions(questions)
    groups = add_second_images(load_image_groups(images), images_b)
    questions, groups = pair_questions(questions, groups)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, 1)
    seed, hooks = resolve_seed(seed), check_hooks(hooks)
    sampling = answer_sampling(defaults.ASK_TEMPERATURE, defaults.ASK_TOP_P, defaults.ASK_TOP_K) \
        if sampling is None else sampling.validate("answer")
    check_context(j, questions, [len(g) for g in groups], max_new_tokens)
    hooks.check()
    und = _embed_once(j, groups)
    ids = j.vocab.ids
    rows = [ask_context(j, q, e) for q, e in zip(questions, und)]
    ctx = build(rows, j.model.get_input_embeddings(), ids.pad)
    if hooks.on_phase:
        hooks.on_phase("answer")
    hooks.check()
    with cancellable_prefill(j, hooks):
        out = decode_text(j.model, ctx, max_new_tokens, sampling, make_generator(seed, j.device), ids.eos, ids.pad,
                          None, hooks, j.runner)
    answers = []
    for r, (q, g) in enumerate(zip(questions, groups)):
        toks = out.ids[r].tolist()
        finished = ids.eos in toks
        toks = toks[: toks.index(ids.eos) + 1] if finished else toks
        text = j.vocab.decode([t for t in toks if t != ids.eos]).strip()
        answers.append(Answer(q, text, toks, finished, len(g), seed))
    return answers


def memory_needed(j: Janus, batch: int = 1, images: int = 1, max_new_tokens: int = defaults.ASK_MAX_NEW_TOKENS,
                  question: str = defaults.ASK_QUESTION) -> int:
    """Bytes beyond the weights that :func:`ask` needs for ``batch`` rows of ``images`` images each: one text
    phase (no CFG twin) over the longest prompt and ``max_new_tokens`` answer tokens."""
    q = question if isinstance(question, str) and question.strip() else defaults.ASK_QUESTION
    limit = context_positions(j)
    # a prompt is never longer than the model's context (ask() refuses it); a question of many times that many
    # characters is not tokenized here (the estimate is the whole context)
    context = limit if len(q) > 8 * limit else min(len(ask_ids(j, q, max(int(images), 1), j.num_image_tokens)), limit)
    return run_bytes(j.model, max(int(batch), 1), context, max(int(max_new_tokens), 1))
