"""The Janus-Pro-R1 tasks, each a context recipe (spec §2) run through the one decode loop.

* :func:`text_to_image` -- §2.1, CFG over interleaved (cond, uncond) rows.
* :func:`judge` -- §2.2/§2.3, self-evaluation: forced Yes/No first token, reflection, S from the same logits.
* :func:`introspect` -- §2.4/§2.5, generate -> judge -> regenerate conditioned on the failed attempts and their
  critiques, up to ``max_rounds`` images; rows judged "Yes" are finished and never regenerated. Regenerating an
  external image (§2.4 with a caller's image and optional critique) is the same loop started from that image.
* :func:`edit` -- §2.6.

Encoder rule (§2.5): before the model writes *text*, every earlier image enters through SigLIP (understanding
embeddings); before it draws, through the VQ generation path (its sampled codes by default). The KV cache is
never carried across a phase switch: each phase builds its whole context and prefills it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from ..errors import JanusR1Error
from ..model.vocabulary import EDIT_PREFIX, Vocabulary, t2i_prompt
from . import images as imgs
from . import vq
from .checks import (
    FINAL_RULES,
    check_bool,
    check_cfg,
    check_choice,
    check_critiques,
    check_hooks,
    check_int,
    check_prompts,
    check_seed,
    choose_final,
    load_images,
    resolve_seed,
)
from .context import Embeds, Piece, Text, build, cfg_rows, generation_embeds, understanding_embeds
from .decode import NO_HOOKS, Hooks, decode_image, decode_text
from .sampling import IMAGE_SAMPLING, TEXT_SAMPLING, Sampling, make_generator
from .trace import Attempt, Judgement, SampleResult

DEFAULT_CFG = 5.0  # T2I and regeneration (paper App. B.4)
DEFAULT_EDIT_CFG = 4.0  # editing (paper App. B.5)
DEFAULT_MAX_ROUNDS = 3  # at most three images per prompt (paper App. B.4)
DEFAULT_MAX_REFLECTION = 256  # tokens; the released one-shot script's 80 truncates SFT-length reasons (B11)
MAX_PROMPT_TOKENS = 200  # the reference's tokenizer budget for a caption prompt
MAX_INSTRUCTION_TOKENS = 90  # editing instructions in SFT


@dataclass
class Janus:
    """The loaded model and its vocabulary: everything a task needs."""

    model: torch.nn.Module
    vocab: Vocabulary
    runner: str = "auto"  # decode runner: auto | graph | fixed | eager | dynamic (see decode.py)

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @property
    def num_image_tokens(self) -> int:
        return int(self.model.config.vision_config.num_image_tokens)

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    # --- embedding blocks (spec §2.8) -------------------------------------------------------------------
    def embed_und(self, images: list[Image.Image]) -> torch.Tensor:
        """SigLIP + aligner embeddings (B, N, D) of images the model is about to *read*."""
        return understanding_embeds(self.model, images)

    def embed_gen(self, codes: torch.Tensor) -> torch.Tensor:
        """Generation-path embeddings (B, N, D) of images the model is about to *draw after*."""
        return generation_embeds(self.model, codes)

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """VQ codes (B, N) of external images (centre crop, l2 nearest neighbour)."""
        return vq.encode(self.model.model.vqmodel, imgs.vq_pixels(images, self.image_size))

    def decode_codes(self, codes: torch.Tensor, chunk: int = 4, truncate: bool = False) -> list[Image.Image]:
        """Decode in chunks: the VQ decoder's full-resolution feature maps dominate peak memory.
        ``truncate``: 8-bit pixels by truncation, as the released scripts convert (re-encode mode only)."""
        out: list[Image.Image] = []
        for i in range(0, codes.shape[0], chunk):
            out += imgs.to_pil(vq.decode(self.model.model.vqmodel, codes[i : i + chunk]), truncate=truncate)
        return out

    # --- prompt pieces ----------------------------------------------------------------------------------
    def prompt_ids(self, prompt: str, max_tokens: int = MAX_PROMPT_TOKENS) -> list[int]:
        ids = self.vocab.encode_with_bos(t2i_prompt(prompt))
        if len(ids) > max_tokens:
            raise JanusR1Error(
                f"prompt is {len(ids)} tokens with its template, over the budget of {max_tokens}; shorten it "
                f"(the model was trained on captions within {MAX_PROMPT_TOKENS} tokens) or raise "
                "max_prompt_tokens (CLI: --max-prompt-tokens)."
            )
        return ids

    def prompt_piece(self, ids: list[int]) -> Text:
        """The caption prompt; its uncond twin keeps BOS and the final <begin_of_image>, PAD in between."""
        return Text(ids, drop=(1, len(ids) - 1))


# --- validation (janus_r1.generation.checks; re-exported for the nodes and the API) -----------------------

def _pair(prompts: list[str], items: list, what: str) -> tuple[list[str], list]:
    """Broadcast one prompt over many images (or one image over many prompts)."""
    if len(prompts) == 1 and len(items) > 1:
        prompts = prompts * len(items)
    if len(items) == 1 and len(prompts) > 1:
        items = items * len(prompts)
    if len(prompts) != len(items):
        raise JanusR1Error(f"got {len(items)} {what} but {len(prompts)} prompts; give one prompt or one per image.")
    return prompts, items


# --- tasks ----------------------------------------------------------------------------------------------

def _draw(j: Janus, rows: list[list[Piece]], cfg: float, sampling: Sampling, gen, hooks: Hooks) -> torch.Tensor:
    ctx = build(cfg_rows(rows, j.vocab.ids.pad), j.model.get_input_embeddings(), j.vocab.ids.pad)
    return decode_image(j.model, ctx, j.num_image_tokens, cfg, sampling, gen, hooks, j.runner)


def text_to_image(
    j: Janus,
    prompts,
    num_images: int = 1,
    cfg: float = DEFAULT_CFG,
    sampling: Sampling = IMAGE_SAMPLING,
    seed: int | None = None,
    hooks: Hooks = NO_HOOKS,
    max_prompt_tokens: int = MAX_PROMPT_TOKENS,
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
    codes = _draw(j, [[j.prompt_piece(i)] for _, _, i in rows], cfg, sampling, gen, hooks)
    pics = j.decode_codes(codes)
    return [
        SampleResult(p, k, [Attempt(1, pic, c.tolist())], final=0, seed=seed, task="text_to_image")
        for (p, k, _), pic, c in zip(rows, pics, codes.cpu())
    ]


def _judge_rows(
    j: Janus,
    rows: list[list[Piece]],
    sampling: Sampling,
    max_reflection: int,
    gen,
    hooks: Hooks,
    force: str | None = None,
) -> list[Judgement]:
    """Run the self-evaluation phase on prepared understanding contexts (each ending in SELF_CHECK)."""
    ids = j.vocab.ids
    ctx = build(rows, j.model.get_input_embeddings(), ids.pad)
    forced = [ids.yes, ids.no] if force is None else [ids.yes if force == "Yes" else ids.no]
    out = decode_text(j.model, ctx, max_reflection, sampling, gen, ids.eos, ids.pad, forced, hooks, j.runner)
    pair = out.first_logits[:, [ids.yes, ids.no]]
    scores = torch.softmax(pair, dim=-1)[:, 0].tolist()
    result = []
    for r in range(len(rows)):
        toks, bits = out.ids[r].tolist(), out.mask[r].tolist()
        if ids.eos in toks:  # keep through the row's own EOS (attention 0), drop the trailing PADs
            cut = toks.index(ids.eos) + 1
            toks, bits = toks[:cut], bits[:cut]
        if toks:
            verdict = "Yes" if toks[0] == ids.yes else "No"
        else:  # score-only: no token sampled, the verdict is the more probable answer
            verdict = "Yes" if scores[r] >= 0.5 else "No"
        text = j.vocab.decode(toks) if toks else verdict
        result.append(Judgement(verdict, float(scores[r]), text, toks, bits))
    return result


def _judge_context(j: Janus, prompt_ids: list[int], history: list[tuple[torch.Tensor, Judgement]],
                   current: torch.Tensor) -> list[Piece]:
    """[prompt] (IMG_k(und) SELF_CHECK R_k REGEN_TRIGGER)* IMG(und) SELF_CHECK."""
    v = j.vocab
    row: list[Piece] = [Text(prompt_ids)]
    for und, jd in history:
        row += [Embeds(und), Text(v.self_check_ids), Text(jd.ids, jd.mask), Text(v.regen_trigger_ids)]
    return row + [Embeds(current), Text(v.self_check_ids)]


def _regen_context(j: Janus, prompt_ids: list[int], history: list[tuple[torch.Tensor, Judgement]]) -> list[Piece]:
    """[prompt (droppable)] (IMG_k(gen) SELF_CHECK R_k REGEN_TRIGGER)+ -- then image tokens follow."""
    v = j.vocab
    row: list[Piece] = [j.prompt_piece(prompt_ids)]
    for gen_emb, jd in history:
        row += [Embeds(gen_emb), Text(v.self_check_ids), Text(jd.ids, jd.mask), Text(v.regen_trigger_ids)]
    return row


def judge(
    j: Janus,
    images,
    prompts,
    sampling: Sampling = TEXT_SAMPLING,
    max_reflection: int = DEFAULT_MAX_REFLECTION,
    seed: int | None = None,
    hooks: Hooks = NO_HOOKS,
    max_prompt_tokens: int = MAX_PROMPT_TOKENS,
) -> list[Judgement]:
    """Self-evaluate any images (any source, mode and size) against prompts. ``max_reflection=0`` scores only."""
    prompts = check_prompts(prompts)
    pics = load_images(images)
    prompts, pics = _pair(prompts, pics, "images")
    max_reflection = check_int("max_reflection", max_reflection, 0)
    max_prompt_tokens = check_int("max_prompt_tokens", max_prompt_tokens, 1)
    seed, hooks = resolve_seed(seed), check_hooks(hooks)
    sampling.validate("text")
    und = j.embed_und(pics)
    rows = [_judge_context(j, j.prompt_ids(p, max_prompt_tokens), [], und[i]) for i, p in enumerate(prompts)]
    if hooks.on_phase:
        hooks.on_phase("judge")
    return _judge_rows(j, rows, sampling, max_reflection, make_generator(seed, j.device), hooks)


def score(j: Janus, images, prompts, max_prompt_tokens: int = MAX_PROMPT_TOKENS) -> list[Judgement]:
    """S = P(Yes)/(P(Yes)+P(No)) at the first answer position; verdict = "Yes" iff S >= 0.5. Deterministic."""
    return judge(j, images, prompts, max_reflection=0, max_prompt_tokens=max_prompt_tokens)


def _critique_judgement(j: Janus, critique: str) -> Judgement:
    """A caller's critique as the reflection of a "No" verdict (the model's own reflections start that way)."""
    text = critique.strip()
    if not text:
        raise JanusR1Error("critique is empty; pass None to let the model write its own.")
    if not text.lower().startswith("no"):
        text = "No, " + text
    ids = j.vocab.encode_continuation(text) + [j.vocab.ids.eos]
    return Judgement("No", None, text, ids, [1] * (len(ids) - 1) + [0])


def introspect(
    j: Janus,
    prompts,
    num_images: int = 1,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    cfg: float = DEFAULT_CFG,
    image_sampling: Sampling = IMAGE_SAMPLING,
    text_sampling: Sampling = TEXT_SAMPLING,
    max_reflection: int = DEFAULT_MAX_REFLECTION,
    seed: int | None = None,
    hooks: Hooks = NO_HOOKS,
    reencode: bool = False,
    judge_final: bool = True,
    start_images=None,
    critiques: list[str | None] | None = None,
    redraw_if_accepted: bool = False,
    max_prompt_tokens: int = MAX_PROMPT_TOKENS,
    final: str = "last",
) -> list[SampleResult]:
    """The paper's introspective text-to-image (and, with ``start_images``, regeneration of external images).

    Round k: judge image k (SigLIP context of every earlier image and critique); "Yes" rows are done; "No" rows
    get image k+1 drawn from the gen-path context of every earlier attempt and its critique, the caption being
    the only thing CFG drops. At most ``max_rounds`` images per sample (external start images count as one).
    ``reencode=True`` rebuilds each failed image's codes by decode -> VQ re-encode, as the released scripts do
    (bit-parity with them only; lossy and slower), and converts decoded pixels to 8 bits by truncation as they
    do, for the images kept and judged alike. ``redraw_if_accepted`` forces a "No" verdict on external start
    images so they are always redrawn. ``final``: which attempt each sample returns -- ``"last"`` (the paper:
    the accepted image, else the last drawn) or ``"best"`` (highest S among judged attempts, ties to the later).
    """
    prompts = check_prompts(prompts)
    num_images = check_int("num_images", num_images, 1)
    max_rounds = check_int("max_rounds", max_rounds, 1)
    max_reflection = check_int("max_reflection", max_reflection, 1)
    max_prompt_tokens = check_int("max_prompt_tokens", max_prompt_tokens, 1)
    cfg, seed, hooks = check_cfg(cfg), resolve_seed(seed), check_hooks(hooks)
    final = check_choice("final", final, FINAL_RULES)
    reencode, judge_final = check_bool("reencode", reencode), check_bool("judge_final", judge_final)
    redraw_if_accepted = check_bool("redraw_if_accepted", redraw_if_accepted)
    image_sampling.validate("image")
    text_sampling.validate("text")
    task = "introspect"
    if start_images is not None:
        pics = load_images(start_images)
        prompts, pics = _pair(prompts, pics, "images")
        crits = check_critiques(critiques, len(pics))
    elif critiques is not None:
        raise JanusR1Error("critiques need start_images: they are critiques of images given by the caller.")
    prompt_ids = {p: j.prompt_ids(p, max_prompt_tokens) for p in prompts}
    gen = make_generator(seed, j.device)

    if start_images is not None:
        task = "regenerate"
        rows = [(p, 0) for p in prompts]
        codes = j.encode_images(pics)
        first_source = "input"
    else:
        rows = [(p, k) for p in prompts for k in range(num_images)]
        crits = [None] * len(rows)
        if hooks.on_phase:
            hooks.on_phase(f"image 1/{max_rounds}")
        codes = _draw(j, [[j.prompt_piece(prompt_ids[p])] for p, _ in rows], cfg, image_sampling, gen, hooks)
        pics = j.decode_codes(codes, truncate=reencode)
        first_source = "generated"

    results = [
        SampleResult(p, k, [Attempt(1, pic, c.tolist(), source=first_source)], seed=seed, task=task,
                     final_rule=final)
        for (p, k), pic, c in zip(rows, pics, codes.cpu())
    ]
    und_hist: list[list] = [[] for _ in rows]  # (und embeds, judgement) per finished round
    gen_hist: list[list] = [[] for _ in rows]  # (gen embeds, judgement)
    current_codes = {i: codes[i] for i in range(len(rows))}
    active = list(range(len(rows)))

    for k in range(1, max_rounds + 1):
        last = k == max_rounds
        if last and not judge_final:
            break
        # --- judge image k of every active row (caller critiques replace the model's own) -------------
        und = j.embed_und([results[i].attempts[-1].image for i in active])
        judgements: dict[int, Judgement] = {}
        to_judge = [i for i in active if not (k == 1 and crits[i] is not None)]
        for i in active:
            if k == 1 and crits[i] is not None:
                judgements[i] = _critique_judgement(j, crits[i])
        if to_judge:
            if hooks.on_phase:
                hooks.on_phase(f"judge {k}/{max_rounds}")
            ctx_rows = [
                _judge_context(j, prompt_ids[results[i].prompt], und_hist[i], und[active.index(i)])
                for i in to_judge
            ]
            force = "No" if (k == 1 and start_images is not None and redraw_if_accepted) else None
            for i, jd in zip(to_judge, _judge_rows(j, ctx_rows, text_sampling, max_reflection, gen, hooks, force)):
                judgements[i] = jd
        still = []
        for i in active:
            jd = judgements[i]
            results[i].attempts[-1].judgement = jd
            if jd.verdict == "Yes" or last:  # accepted, or out of rounds: the latest image is the answer
                continue
            still.append(i)
            und_hist[i].append((und[active.index(i)], jd))
            prev = current_codes[i].unsqueeze(0)
            if reencode and results[i].attempts[-1].source == "generated":  # the released lossy round trip (B3)
                prev = j.encode_images([results[i].attempts[-1].image])  # the 8-bit image the judge saw
            gen_hist[i].append((j.embed_gen(prev)[0], jd))
        active = still
        if not active or last:
            break
        # --- draw image k+1 for the rows judged "No" ---------------------------------------------------
        if hooks.on_phase:
            hooks.on_phase(f"image {k + 1}/{max_rounds}")
        ctx_rows = [_regen_context(j, prompt_ids[results[i].prompt], gen_hist[i]) for i in active]
        new_codes = _draw(j, ctx_rows, cfg, image_sampling, gen, hooks)
        new_pics = j.decode_codes(new_codes, truncate=reencode)
        for n, i in enumerate(active):
            current_codes[i] = new_codes[n]
            results[i].attempts.append(Attempt(k + 1, new_pics[n], new_codes[n].tolist()))
    for r in results:
        r.final = choose_final(r.attempts, final)
    return results


def edit_row(j: Janus, gen_in: torch.Tensor, instruction_ids: list[int]) -> list[Piece]:
    """The editing context (§2.6): [BOS] <|User|>: <begin_of_image> IMG(gen) <end_of_image> instruction
    " Please generate an image.\n\n<|Assistant|>:<begin_of_image>"; CFG drops only the instruction."""
    v = j.vocab
    return [Text(v.encode_with_bos(EDIT_PREFIX)), Embeds(gen_in), Text([v.ids.eoi]),
            Text(instruction_ids, drop=(0, len(instruction_ids))), Text(v.edit_suffix_ids)]


def edit(
    j: Janus,
    images,
    instructions,
    num_images: int = 1,
    cfg: float = DEFAULT_EDIT_CFG,
    sampling: Sampling = IMAGE_SAMPLING,
    seed: int | None = None,
    hooks: Hooks = NO_HOOKS,
) -> list[SampleResult]:
    """Edit images with instructions (template §2.6): the input enters through the VQ path, CFG drops only
    the instruction."""
    instructions = check_prompts(instructions, "instructions")
    pics = load_images(images)
    instructions, pics = _pair(instructions, pics, "images")
    num_images = check_int("num_images", num_images, 1)
    cfg, seed, hooks = check_cfg(cfg), resolve_seed(seed), check_hooks(hooks)
    sampling.validate("image")
    v = j.vocab
    codes_in = j.encode_images(pics)
    gen_in = j.embed_gen(codes_in)
    rows, meta = [], []
    for n, (ins, pic) in enumerate(zip(instructions, pics)):
        ins_ids = v.encode_continuation(ins.strip())
        if len(ins_ids) > MAX_INSTRUCTION_TOKENS:
            raise JanusR1Error(
                f"instruction {n} is {len(ins_ids)} tokens, over the {MAX_INSTRUCTION_TOKENS} the editing model "
                "was trained with; shorten it."
            )
        for k in range(num_images):
            rows.append(edit_row(j, gen_in[n], ins_ids))
            meta.append((ins, k, pic, codes_in[n]))
    gen = make_generator(seed, j.device)
    if hooks.on_phase:
        hooks.on_phase("edit")
    codes = _draw(j, rows, cfg, sampling, gen, hooks)
    out_pics = j.decode_codes(codes)
    return [
        SampleResult(ins, k, [Attempt(0, pic, c_in.tolist(), source="input"), Attempt(1, out, c.tolist())],
                     final=1, seed=seed, task="edit")
        for (ins, k, pic, c_in), out, c in zip(meta, out_pics, codes.cpu())
    ]


__all__ = ["Janus", "text_to_image", "judge", "score", "introspect", "edit", "edit_row", "check_prompts", "check_int",
           "check_cfg", "check_seed", "load_images"]
