"""The one-shot Janus-Pro-R1 tasks, each a context recipe (:mod:`.templates`) run through the one decode loop.

* :func:`text_to_image` -- §2.1, CFG over interleaved (cond, uncond) rows.
* :func:`judge` / :func:`score` -- §2.2/§2.3, self-evaluation: forced Yes/No first token, reflection, S from the
  same logits.
* :func:`edit` -- §2.6.

The introspective generate -> judge -> regenerate loop (§2.4/§2.5) is :mod:`.introspect`, whose two phases
(:func:`draw`, :func:`judge_rows`) these tasks reuse; it is re-exported here for callers of ``tasks.introspect``
(GRPO's rollouts, the tests).
"""

from __future__ import annotations

from .. import defaults
from ..errors import JanusR1Error
from .checks import (
    check_cfg,
    check_hooks,
    check_int,
    check_prompts,
    check_seed,
    load_images,
    pair,
    resolve_seed,
)
from .decode import NO_HOOKS, Hooks
from .facade import Janus
from .introspect import draw, introspect, judge_rows
from .sampling import IMAGE_SAMPLING, TEXT_SAMPLING, Sampling, make_generator
from .templates import critique_judgement, edit_row, judge_context, regen_context
from .trace import Attempt, Judgement, SampleResult


def text_to_image(
    j: Janus,
    prompts,
    num_images: int = defaults.NUM_IMAGES,
    cfg: float = defaults.CFG,
    sampling: Sampling = IMAGE_SAMPLING,
    seed: int | None = None,
    hooks: Hooks = NO_HOOKS,
    max_prompt_tokens: int = defaults.MAX_PROMPT_TOKENS,
) -> list[SampleResult]:
    """Plain Janus text-to-image: ``num_images`` images per prompt, no judging."""
    prompts = check_prompts(prompts)
    num_images = check_int("num_images", num_images, 1)
    max_prompt_tokens = check_int("max_prompt_tokens", max_prompt_tokens, 1)
    cfg, seed, hooks = check_cfg(cfg), resolve_seed(seed), check_hooks(hooks)
    sampling.validate("image")
    ids = [j.prompt_ids(p, max_prompt_tokens) for p in prompts]
    rows = [(p, k, i) for p, i in zip(prompts, ids) for k in range(num_images)]
    gen = make_generator(seed, j.device)
    if hooks.on_phase:
        hooks.on_phase("image 1")
    codes = draw(j, [[j.prompt_piece(i)] for _, _, i in rows], cfg, sampling, gen, hooks)
    pics = j.decode_codes(codes)
    return [
        SampleResult(p, k, [Attempt(1, pic, c.tolist())], final=0, seed=seed, task="text_to_image")
        for (p, k, _), pic, c in zip(rows, pics, codes.cpu())
    ]


def judge(
    j: Janus,
    images,
    prompts,
    sampling: Sampling = TEXT_SAMPLING,
    max_reflection: int = defaults.MAX_REFLECTION,
    seed: int | None = None,
    hooks: Hooks = NO_HOOKS,
    max_prompt_tokens: int = defaults.MAX_PROMPT_TOKENS,
) -> list[Judgement]:
    """Self-evaluate any images (any source, mode and size) against prompts. ``max_reflection=0`` scores only."""
    prompts = check_prompts(prompts)
    pics = load_images(images)
    prompts, pics = pair(prompts, pics, "images")
    max_reflection = check_int("max_reflection", max_reflection, 0)
    max_prompt_tokens = check_int("max_prompt_tokens", max_prompt_tokens, 1)
    seed, hooks = resolve_seed(seed), check_hooks(hooks)
    sampling.validate("text")
    und = j.embed_und(pics)
    rows = [judge_context(j, j.prompt_ids(p, max_prompt_tokens), [], und[i]) for i, p in enumerate(prompts)]
    if hooks.on_phase:
        hooks.on_phase("judge")
    return judge_rows(j, rows, sampling, max_reflection, make_generator(seed, j.device), hooks)


def score(j: Janus, images, prompts, max_prompt_tokens: int = defaults.MAX_PROMPT_TOKENS) -> list[Judgement]:
    """S = P(Yes)/(P(Yes)+P(No)) at the first answer position; verdict = "Yes" iff S >= 0.5. Deterministic."""
    return judge(j, images, prompts, max_reflection=0, max_prompt_tokens=max_prompt_tokens)


def edit(
    j: Janus,
    images,
    instructions,
    num_images: int = defaults.NUM_IMAGES,
    cfg: float = defaults.EDIT_CFG,
    sampling: Sampling = IMAGE_SAMPLING,
    seed: int | None = None,
    hooks: Hooks = NO_HOOKS,
) -> list[SampleResult]:
    """Edit images with instructions (template §2.6): the input enters through the VQ path, CFG drops only
    the instruction."""
    instructions = check_prompts(instructions, "instructions")
    pics = load_images(images)
    instructions, pics = pair(instructions, pics, "images")
    num_images = check_int("num_images", num_images, 1)
    cfg, seed, hooks = check_cfg(cfg), resolve_seed(seed), check_hooks(hooks)
    sampling.validate("image")
    v = j.vocab
    codes_in = j.encode_images(pics)
    gen_in = j.embed_gen(codes_in)
    rows, meta = [], []
    for n, (ins, pic) in enumerate(zip(instructions, pics)):
        ins_ids = v.encode_continuation(ins.strip())
        if len(ins_ids) > defaults.MAX_INSTRUCTION_TOKENS:
            raise JanusR1Error(
                f"instruction {n} is {len(ins_ids)} tokens, over the {defaults.MAX_INSTRUCTION_TOKENS} the editing "
                "model was trained with; shorten it."
            )
        for k in range(num_images):
            rows.append(edit_row(j, gen_in[n], ins_ids))
            meta.append((ins, k, pic, codes_in[n]))
    gen = make_generator(seed, j.device)
    if hooks.on_phase:
        hooks.on_phase("edit")
    codes = draw(j, rows, cfg, sampling, gen, hooks)
    out_pics = j.decode_codes(codes)
    return [
        SampleResult(ins, k, [Attempt(0, pic, c_in.tolist(), source="input"), Attempt(1, out, c.tolist())],
                     final=1, seed=seed, task="edit")
        for (ins, k, pic, c_in), out, c in zip(meta, out_pics, codes.cpu())
    ]


__all__ = ["Janus", "text_to_image", "judge", "score", "introspect", "edit", "edit_row", "judge_context",
           "regen_context", "critique_judgement", "check_prompts", "check_int", "check_cfg", "check_seed",
           "load_images"]
