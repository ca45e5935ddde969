"""The introspective loop (spec §2.4/§2.5) as a per-sample rollout: generate -> judge -> regenerate, and the two
decode phases every task is made of (:func:`draw` image codes, :func:`judge_rows` images), which ``tasks`` reuses.

Every sample carries one :class:`_Sample` (its result so far, its prompt, its two histories); a round judges the
latest image of every open sample in one batch and draws the next image for the samples judged "No" in another.
Rows judged "Yes" are finished and never regenerated. Regenerating an external image (§2.4 with a caller's image
and optional critique) is the same loop started from that image.

Encoder rule (§2.5): before the model writes *text*, every earlier image enters through SigLIP (understanding
embeddings); before it draws, through the VQ generation path (its sampled codes by default). The KV cache is
never carried across a phase switch: each phase builds its whole context and prefills it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import defaults
from ..errors import JanusR1Error
from .checks import (
    FINAL_RULES,
    check_bool,
    check_cfg,
    check_choice,
    check_critiques,
    check_hooks,
    check_int,
    check_prompts,
    load_images,
    pair,
    resolve_seed,
)
from .context import Piece, build, cfg_rows
from .decode import NO_HOOKS, Hooks, decode_image, decode_text
from .facade import Janus
from .sampling import IMAGE_SAMPLING, TEXT_SAMPLING, Sampling, make_generator
from .templates import History, critique_judgement, judge_context, regen_context
from .trace import Attempt, Judgement, SampleResult, choose_final


def draw(j: Janus, rows: list[list[Piece]], cfg: float, sampling: Sampling, gen, hooks: Hooks) -> torch.Tensor:
    """Image codes (B, N) for generation contexts, each row with its CFG twin."""
    ctx = build(cfg_rows(rows, j.vocab.ids.pad), j.model.get_input_embeddings(), j.vocab.ids.pad)
    return decode_image(j.model, ctx, j.num_image_tokens, cfg, sampling, gen, hooks, j.runner)


def judge_rows(
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
    pair_logits = out.first_logits[:, [ids.yes, ids.no]]
    scores = torch.softmax(pair_logits, dim=-1)[:, 0].tolist()
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


@dataclass
class _Sample:
    """One sample's rollout: its result so far, the codes of its latest image, and what each encoder has seen."""

    result: SampleResult
    prompt_ids: list[int]
    codes: torch.Tensor  # (N,) codes of the latest image
    critique: str | None = None  # the caller's critique of the start image, replacing the model's first judgement
    und_history: History = field(default_factory=list)  # (SigLIP embeds, judgement) per failed round
    gen_history: History = field(default_factory=list)  # (gen-path embeds, judgement) per failed round


@dataclass(frozen=True)
class _Run:
    """What every round of one call shares."""

    j: Janus
    max_rounds: int
    cfg: float
    image_sampling: Sampling
    text_sampling: Sampling
    max_reflection: int
    gen: torch.Generator
    hooks: Hooks
    reencode: bool
    force_first: str | None  # "No" when external start images must always be redrawn

    def phase(self, name: str) -> None:
        if self.hooks.on_phase:
            self.hooks.on_phase(name)


def _judge(run: _Run, k: int, open_: list[_Sample]) -> torch.Tensor:
    """Judge image k of every open sample (a caller's critique replaces the model's own in round 1); returns the
    SigLIP embeddings of the judged images, in ``open_`` order."""
    und = run.j.embed_und([s.result.attempts[-1].image for s in open_])
    judged: dict[int, Judgement] = {}
    for n, s in enumerate(open_):
        if k == 1 and s.critique is not None:
            judged[n] = critique_judgement(run.j, s.critique)
    to_judge = [n for n in range(len(open_)) if n not in judged]
    if to_judge:
        run.phase(f"judge {k}/{run.max_rounds}")
        rows = [judge_context(run.j, open_[n].prompt_ids, open_[n].und_history, und[n]) for n in to_judge]
        force = run.force_first if k == 1 else None
        judged.update(zip(to_judge, judge_rows(run.j, rows, run.text_sampling, run.max_reflection, run.gen,
                                               run.hooks, force)))
    for n, s in enumerate(open_):
        s.result.attempts[-1].judgement = judged[n]
    return und


def _remember(run: _Run, s: _Sample, und: torch.Tensor) -> None:
    """A "No": keep the judged image in both histories (SigLIP for judging, gen path for drawing)."""
    latest = s.result.attempts[-1]
    s.und_history.append((und, latest.judgement))
    prev = s.codes.unsqueeze(0)
    if run.reencode and latest.source == "generated":  # the released lossy round trip (B3)
        prev = run.j.encode_images([latest.image])  # the 8-bit image the judge saw
    s.gen_history.append((run.j.embed_gen(prev)[0], latest.judgement))


def _redraw(run: _Run, k: int, open_: list[_Sample]) -> None:
    """Draw image k+1 for every sample judged "No" in round k."""
    run.phase(f"image {k + 1}/{run.max_rounds}")
    rows = [regen_context(run.j, s.prompt_ids, s.gen_history) for s in open_]
    codes = draw(run.j, rows, run.cfg, run.image_sampling, run.gen, run.hooks)
    pics = run.j.decode_codes(codes, truncate=run.reencode)
    for n, s in enumerate(open_):
        s.codes = codes[n]
        s.result.attempts.append(Attempt(k + 1, pics[n], codes[n].tolist()))


def _rollout(run: _Run, samples: list[_Sample], judge_final: bool) -> None:
    """Rounds 1..max_rounds: judge the open samples, keep the "Yes" ones, redraw the rest."""
    open_ = samples
    for k in range(1, run.max_rounds + 1):
        last = k == run.max_rounds
        if last and not judge_final:
            return
        und = _judge(run, k, open_)
        still = []
        for n, s in enumerate(open_):
            if s.result.attempts[-1].judgement.verdict == "Yes" or last:  # accepted, or out of rounds
                continue
            _remember(run, s, und[n])
            still.append(s)
        open_ = still
        if not open_ or last:
            return
        _redraw(run, k, open_)


def _start(j: Janus, run: _Run, prompts: list[str], num_images: int, start_images, critiques,
           max_prompt_tokens: int, seed: int, final: str) -> list[_Sample]:
    """Round 1's images: the caller's start images (regeneration), else one draw per prompt and image."""
    if start_images is not None:
        pics = load_images(start_images)
        prompts, pics = pair(prompts, pics, "images")
        crits = check_critiques(critiques, len(pics))
    elif critiques is not None:
        raise JanusR1Error("critiques need start_images: they are critiques of images given by the caller.")
    prompt_ids = {p: j.prompt_ids(p, max_prompt_tokens) for p in prompts}
    if start_images is not None:
        task, source, rows = "regenerate", "input", [(p, 0) for p in prompts]
        codes = j.encode_images(pics)
    else:
        task, source = "introspect", "generated"
        rows = [(p, k) for p in prompts for k in range(num_images)]
        crits = [None] * len(rows)
        run.phase(f"image 1/{run.max_rounds}")
        codes = draw(j, [[j.prompt_piece(prompt_ids[p])] for p, _ in rows], run.cfg, run.image_sampling, run.gen,
                     run.hooks)
        pics = j.decode_codes(codes, truncate=run.reencode)
    return [
        _Sample(SampleResult(p, k, [Attempt(1, pic, c.tolist(), source=source)], seed=seed, task=task,
                             final_rule=final), prompt_ids[p], codes[n], crit)
        for n, ((p, k), pic, c, crit) in enumerate(zip(rows, pics, codes.cpu(), crits))
    ]


def introspect(
    j: Janus,
    prompts,
    num_images: int = defaults.NUM_IMAGES,
    max_rounds: int = defaults.MAX_ROUNDS,
    cfg: float = defaults.CFG,
    image_sampling: Sampling = IMAGE_SAMPLING,
    text_sampling: Sampling = TEXT_SAMPLING,
    max_reflection: int = defaults.MAX_REFLECTION,
    seed: int | None = None,
    hooks: Hooks = NO_HOOKS,
    reencode: bool = False,
    judge_final: bool = True,
    start_images=None,
    critiques: list[str | None] | None = None,
    redraw_if_accepted: bool = False,
    max_prompt_tokens: int = defaults.MAX_PROMPT_TOKENS,
    final: str = defaults.FINAL,
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
    force_first = "No" if start_images is not None and redraw_if_accepted else None
    run = _Run(j, max_rounds, cfg, image_sampling, text_sampling, max_reflection, make_generator(seed, j.device),
               hooks, reencode, force_first)
    samples = _start(j, run, prompts, num_images, start_images, critiques, max_prompt_tokens, seed, final)
    _rollout(run, samples, judge_final)
    for s in samples:
        s.result.final = choose_final(s.result.attempts, final)
    return [s.result for s in samples]
