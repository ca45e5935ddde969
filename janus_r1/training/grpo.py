"""GRPO (spec §4): rollouts through the engine's introspective loop, bi-level rewards, advantages, the loss.

* Rollout: ``tasks.introspect`` (the loop the CLI and the nodes run) with ``num_images = G``: one group per prompt.
  Every attempt carries its sampled codes and its judgement's ids/mask, so each segment's context is rebuilt
  with the engine's own ``templates.judge_context`` / ``regen_context`` and teacher-forced.
* Rewards (paper B.2): ``R = R_Gen + R_Comp`` per trajectory, general T; or the released code's three streams
  ``r1 = R_QA(I_1)``, ``r2 = 1 - |r1 - SE_1|``, ``r3 = R_QA(final)`` each with its own advantage on its own segment
  (``advantage="segments"``; image 1 of an accepted sample is trained once, not twice -- R8).
* Log-probs of the distribution actually sampled (R3/R4 fixed): image tokens ``log_softmax(topk(u + w(c - u)) / T)``;
  the verdict token renormalised over {Yes, No}; reflection tokens with the text top-k and temperature; the EOS is
  in the loss (R5). ``logprob="code"`` reproduces the released trainer (``c - (w-1)/w u``, full-vocab verdict).
* Loss: ``-min(rho A, clip(rho, 1 +- eps) A) + beta k3``, per-trajectory token mean, mean over trajectories;
  ``rho = exp(lp - lp_old)`` against the rollout policy, so with ``mu >= 2`` inner iterations clipping applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import JanusR1Error
from ..generation import images as imgs
from ..generation import tasks, templates
from ..generation.context import first_param
from ..generation.sampling import Sampling, force_tokens
from ..generation.trace import SampleResult
from .sequences import Pass, code_merged_logprobs, guided, sampled_logprobs
from .sft import edit_row

# --- algebra (Appendix C.6) -----------------------------------------------------------------------------


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """``(r - mean_g) / (std_g + eps)`` within consecutive groups of ``group_size`` (unbiased std)."""
    r = rewards.view(-1, group_size).double()
    return ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + eps)).view(-1).to(rewards.dtype)


def k3(lp: torch.Tensor, lp_ref: torch.Tensor) -> torch.Tensor:
    """The k3 KL estimator ``exp(d) - d - 1`` with ``d = lp_ref - lp``: >= 0, 0 iff equal."""
    d = lp_ref - lp
    return torch.exp(d) - d - 1


def token_loss(lp, lp_old, lp_ref, adv, clip_eps: float, beta: float) -> torch.Tensor:
    """Per-token clipped surrogate plus the KL penalty (to be minimised)."""
    ratio = torch.exp(lp - lp_old)
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    return -surrogate + beta * k3(lp, lp_ref)


# --- rewards --------------------------------------------------------------------------------------------


def bilevel_reward(rqa: list[float], verdicts: list[bool], max_rounds: int) -> tuple[float, float]:
    """Paper B.2 for a trajectory of K images: ``R_Gen = sum_{k<K} R_k + (T - K + 1) R_K``,
    ``R_Comp = T/K sum_{k<=K} (1 - |R_k - SE_k|)``."""
    k = len(rqa)
    if not 1 <= k <= max_rounds or len(verdicts) != k:
        raise ValueError(f"a trajectory has 1..{max_rounds} images, each judged (got {k} and {len(verdicts)})")
    r_gen = sum(rqa[:-1]) + (max_rounds - k + 1) * rqa[-1]
    r_comp = sum(1.0 - abs(r - float(v)) for r, v in zip(rqa, verdicts)) * max_rounds / k
    return r_gen, r_comp


@dataclass
class Trajectory:
    result: SampleResult
    group: int
    prompt_ids: list[int]
    rqa: list[float] = field(default_factory=list)  # R_QA of each attempt
    rewards: list[float] = field(default_factory=list)  # [R] or [r1, r2, r3]
    source_codes: list[int] | None = None  # editing input
    reencoded: dict[int, list[int]] = field(default_factory=dict)  # round -> codes of its re-encoded image (R2)

    def history_codes(self, m: int) -> list[int]:
        """The codes attempt ``m`` enters a regeneration context with: its own, or (``reencode``) the VQ codes
        of its 8-bit image, as the rollout used them -- computed once, with the rollout (:func:`rollout`)."""
        return self.reencoded.get(m, self.result.attempts[m - 1].codes)

    @property
    def verdicts(self) -> list[bool]:
        return [a.judgement.verdict == "Yes" for a in self.result.attempts if a.judgement is not None]


@dataclass
class Segment:
    traj: int
    kind: str  # image | text | edit
    round: int  # 1-based attempt index
    stream: int = 0  # 0 = the trajectory's advantage; 1..3 = the code's streams
    mask: list[int] | None = None


def rollout(j: tasks.Janus, prompts: list[str], cfg, seed: int) -> list[Trajectory]:
    """G introspective trajectories per prompt through the engine (groups contiguous)."""
    results = tasks.introspect(
        j, prompts, num_images=cfg.group_size, max_rounds=cfg.max_rounds, cfg=cfg.cfg,
        image_sampling=Sampling(cfg.temperature, cfg.image_top_k), text_sampling=Sampling(cfg.temperature, cfg.text_top_k),
        max_reflection=cfg.max_reflection, seed=seed, reencode=cfg.reencode,
        judge_final=cfg.advantage == "trajectory", max_prompt_tokens=cfg.max_prompt_tokens,
    )
    ids = {p: j.prompt_ids(p, cfg.max_prompt_tokens) for p in prompts}
    trajs = [Trajectory(r, n // cfg.group_size, ids[r.prompt]) for n, r in enumerate(results)]
    if cfg.reencode:  # the released scripts' lossy round trip (R2): the judged 8-bit image, re-encoded once here
        todo = [(t, m) for t in trajs for m, a in enumerate(t.result.attempts[:-1], 1) if a.source == "generated"]
        if todo:
            new = j.encode_images([t.result.attempts[m - 1].image for t, m in todo]).tolist()
            for (t, m), c in zip(todo, new):
                t.reencoded[m] = c
    return trajs


def edit_rollout(j: tasks.Janus, pics, instructions: list[str], cfg, seed: int) -> list[Trajectory]:
    results = tasks.edit(j, pics, instructions, num_images=cfg.group_size, cfg=cfg.cfg,
                         sampling=Sampling(cfg.temperature, cfg.image_top_k), seed=seed)
    return [Trajectory(r, n // cfg.group_size, j.vocab.encode_continuation(r.prompt.strip()),
                       source_codes=r.attempts[0].codes) for n, r in enumerate(results)]


def _checked(scores, n: int, what: str) -> list[float]:
    scores = list(scores)
    if len(scores) != n:
        raise JanusR1Error(f"the reward model returned {len(scores)} {what} for {n} images")
    for s in scores:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= float(s) <= 1.0:
            raise JanusR1Error(f"the reward model returned {s!r}; R_QA must be a number in [0, 1]")
    return [float(s) for s in scores]


def score_trajectories(trajs: list[Trajectory], reward, cfg, image_size: int = 384) -> None:
    """Fill ``rqa`` (one reward-model call for every image) and ``rewards`` of each trajectory."""
    if cfg.task == "edit":
        srcs = [imgs.center_crop_arr(t.result.attempts[0].image, image_size) for t in trajs]
        outs = [t.result.attempts[1].image for t in trajs]
        pairs = list(reward.score_edit(srcs, outs, [t.result.prompt for t in trajs]))
        if len(pairs) != len(trajs):
            raise JanusR1Error(f"the reward model returned {len(pairs)} edit scores for {len(trajs)} edits")
        w_flw, w_psv = cfg.edit_weights
        for t, pair in zip(trajs, pairs):
            flw, psv = _checked(pair, 2, "scores")
            t.rqa = [flw, psv]
            t.rewards = [w_flw * flw + w_psv * psv]
        return
    flat = [(t, a.image) for t in trajs for a in t.result.attempts]
    scores = _checked(reward.score([im for _, im in flat], [t.result.prompt for t, _ in flat]), len(flat), "scores")
    pos = 0
    for t in trajs:
        k = len(t.result.attempts)
        t.rqa, pos = scores[pos : pos + k], pos + k
        if cfg.advantage == "segments":
            r1, se1 = t.rqa[0], float(t.verdicts[0])
            t.rewards = [r1, 1.0 - abs(r1 - se1), t.rqa[t.result.final % k]]
        else:
            t.rewards = [sum(bilevel_reward(t.rqa, t.verdicts, cfg.max_rounds))]


def segments(trajs: list[Trajectory], cfg) -> list[Segment]:
    out: list[Segment] = []
    seg_mode = cfg.advantage == "segments"
    for i, t in enumerate(trajs):
        if cfg.task == "edit":
            out.append(Segment(i, "edit", 1))
            continue
        for k, a in enumerate(t.result.attempts, 1):
            out.append(Segment(i, "image", k, stream=(1 if k == 1 else 3) if seg_mode else 0))
            if a.judgement is not None and not (seg_mode and k > 1):
                mask = [1] * len(a.judgement.ids) if cfg.loss_on_eos else list(a.judgement.mask)
                out.append(Segment(i, "text", k, stream=2 if seg_mode else 0, mask=mask))
    return out


# --- log-probabilities ----------------------------------------------------------------------------------


def segment_logprobs(model, j: tasks.Janus, trajs: list[Trajectory], segs: list[Segment], cfg) -> list[torch.Tensor]:
    """Per segment, log p of its sampled tokens (n,) under ``model`` -- differentiable. All segments go through
    one :class:`~janus_r1.training.sequences.Pass` (one call of each module: what ZeRO-3 needs)."""
    ids = j.vocab.ids
    p = Pass(model, ids.pad)
    und: dict[tuple[int, int], object] = {}

    def read(i: int, m: int):
        if (i, m) not in und:
            und[(i, m)] = p.read(trajs[i].result.attempts[m - 1].image)
        return und[(i, m)]

    img = [n for n, s in enumerate(segs) if s.kind in ("image", "edit")]
    txt = [n for n, s in enumerate(segs) if s.kind == "text"]
    img_rows, codes = [], []
    for n in img:
        s, t = segs[n], trajs[segs[n].traj]
        if s.kind == "edit":
            img_rows.append(edit_row(j, p.draw_after(t.source_codes), t.prompt_ids))
        elif s.round == 1:
            img_rows.append([j.prompt_piece(t.prompt_ids)])
        else:
            hist = [(p.draw_after(t.history_codes(m)), t.result.attempts[m - 1].judgement) for m in range(1, s.round)]
            img_rows.append(templates.regen_context(j, t.prompt_ids, hist))
        codes.append(t.result.attempts[-1 if s.kind == "edit" else s.round - 1].codes)
    txt_rows, targets, masks = [], [], []
    for n in txt:
        s, t = segs[n], trajs[segs[n].traj]
        hist = [(read(s.traj, m), t.result.attempts[m - 1].judgement) for m in range(1, s.round)]
        txt_rows.append(templates.judge_context(j, t.prompt_ids, hist, read(s.traj, s.round)))
        jd = t.result.attempts[s.round - 1].judgement
        targets.append(jd.ids)
        masks.append(jd.mask)
    dev = first_param(model.lm_head).device
    code_t = torch.tensor(codes, device=dev) if codes else None
    out: list[torch.Tensor | None] = [None] * len(segs)
    lg = p.logits(img_rows, code_t, txt_rows, targets, masks, cfg=cfg.cfg)
    if img:
        cond, unc = lg.image
        if cfg.logprob == "code":
            lp = code_merged_logprobs(cond, unc, code_t, cfg.cfg)
        else:
            lp = sampled_logprobs(guided(cond, unc, cfg.cfg), code_t, cfg.temperature, cfg.image_top_k)
        for q, n in enumerate(img):
            out[n] = lp[q]
    for q, n in enumerate(txt):
        x, tgt = lg.text[q], torch.tensor(targets[q], device=dev)
        if cfg.logprob == "code":
            out[n] = torch.log_softmax(x, -1).gather(-1, tgt[:, None])[:, 0]
            continue
        x = torch.cat([force_tokens(x[:1], [ids.yes, ids.no]), x[1:]])
        out[n] = sampled_logprobs(x, tgt, cfg.temperature, cfg.text_top_k)
    return out  # type: ignore[return-value]


# --- the loss -------------------------------------------------------------------------------------------


def advantages(trajs: list[Trajectory], group_size: int) -> torch.Tensor:
    """(n_traj, n_streams) group-normalised advantages, one column per reward stream."""
    r = torch.tensor([t.rewards for t in trajs], dtype=torch.float64)
    return torch.stack([group_advantages(r[:, c], group_size) for c in range(r.shape[1])], dim=1)


def micro_batches(segs: list[Segment], n_traj: int, size: int) -> list[list[int]]:
    """Segment indices by chunks of ``size`` whole trajectories (0: one chunk). Every process holds the same number
    of trajectories, so every process runs the same number of forwards and backwards (FSDP needs that)."""
    size = size or max(n_traj, 1)
    return [[n for n, s in enumerate(segs) if lo <= s.traj < lo + size] for lo in range(0, n_traj, size)]


def _mask(s: Segment, lp: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(lp) if s.mask is None else torch.tensor(s.mask, dtype=lp.dtype, device=lp.device)


def old_logprobs_needed(cfg) -> bool:
    """With mu = 1 the policy is still the rollout policy when the loss is computed: ratio 1, and the current
    log-probs (detached) are the old ones -- no separate forward."""
    return cfg.inner_iterations > 1


def stream_rows(segs: list[Segment]) -> torch.Tensor:
    """(1, 3): this process's rows of the code's streams 1..3 (segments mode); stream 1's rows are its
    trajectories (every trajectory has an image 1)."""
    rows = {(s.stream, s.traj) for s in segs if s.stream}
    return torch.tensor([[sum(1 for st, _ in rows if st == k) for k in (1, 2, 3)]], dtype=torch.float64)


def global_rows(segs: list[Segment], gather) -> dict:
    """Rows per stream over every process and the number of processes (``gather``: collective, rows stacked):
    segments-mode normalisation must use global counts, or ranks with fewer trajectories weight theirs more."""
    g = gather(stream_rows(segs))
    return {"rows": {k: float(g[:, k - 1].sum()) for k in (1, 2, 3)}, "world": g.shape[0]}


STREAMS = 3  # the released loss is (loss_1 + loss_2 + loss_3) / 3 whatever the verdicts


def loss_coefficients(segs: list[Segment], lps: list[torch.Tensor], glob: dict | None = None) -> list[float]:
    """Each segment's factor on its summed per-token loss, computed once over the whole update so micro-batches
    sum to exactly the one-shot loss.

    * Paper (``advantage: trajectory``): 1 / (its trajectory's token count) / (number of trajectories).
    * Released code (``segments``): ``loss_k = mean over the batch's rows of (row's token mean)``, then
      ``(loss_1 + loss_2 + loss_3) / 3``. Every row of the code's batch has a stream-3 segment (a "Yes" row's is
      image 1 again, R8, which we train once), so stream 3 is divided by the number of trajectories -- not by the
      number of regenerations, which would weigh it 1 / regeneration-rate times more (8x at one "No" in 8).
      With ``glob`` (:func:`global_rows`) the trajectories are counted over every process, times the number of
      processes (their gradients are averaged)."""
    keys = [(s.traj, None) if not s.stream else (s.stream, s.traj) for s in segs]
    count: dict = {}
    for k, s, x in zip(keys, segs, lps):
        count[k] = count.get(k, 0.0) + float(_mask(s, x).sum())
    n_traj = len({s.traj for s in segs})
    if not any(k[1] is not None for k in keys):
        return [1.0 / max(count[k], 1.0) / n_traj for k in keys]
    per_traj = glob["world"] / glob["rows"][1] if glob is not None else 1.0 / n_traj
    return [per_traj / max(count[k], 1.0) / STREAMS for k in keys]


def grpo_terms(lp, lp_old, lp_ref, segs: list[Segment], adv: torch.Tensor, cfg,
               coef: list[float]) -> tuple[torch.Tensor, dict]:
    """The loss of some of an update's segments (their share of the total) and token sums for the statistics."""
    dev = lp[0].device
    total = lp[0].new_zeros(())
    kl = clipped = ntok = 0.0
    for s, a, b, c, w in zip(segs, lp, lp_old, lp_ref, coef):
        m = _mask(s, a)
        A = adv[s.traj, s.stream - 1 if s.stream else 0].to(device=dev, dtype=a.dtype)
        total = total + (token_loss(a, b, c, A, cfg.clip_eps, cfg.beta) * m).sum() * w
        ratio = torch.exp(a - b).detach()
        clip = ((ratio > 1 + cfg.clip_eps) & (A > 0)) | ((ratio < 1 - cfg.clip_eps) & (A < 0))
        kl += float((k3(a, c).detach() * m).sum())
        clipped += float((clip.float() * m).sum())
        ntok += float(m.sum())
    return total, {"kl_sum": kl, "clip_sum": clipped, "tokens": ntok}


def token_stats(sums: dict) -> dict:
    """Per-token means of :func:`grpo_terms`' sums."""
    n = max(sums.get("tokens", 0.0), 1.0)
    return {"kl": sums.get("kl_sum", 0.0) / n, "clip_frac": sums.get("clip_sum", 0.0) / n}


def grpo_loss(lp, lp_old, lp_ref, segs: list[Segment], adv: torch.Tensor, cfg) -> tuple[torch.Tensor, dict]:
    """Paper: per-trajectory token mean over all its segments, then the mean over trajectories.
    Segments mode (code): per stream, the row's token mean summed over rows / trajectories; the mean of the
    three streams (:func:`loss_coefficients`)."""
    total, sums = grpo_terms(lp, lp_old, lp_ref, segs, adv, cfg, loss_coefficients(segs, lp))
    return total, token_stats(sums)


def rollout_stats(trajs: list[Trajectory], cfg) -> dict:
    """Rewards, verdict rates and the "Aha" rate (a "No" followed by a better image)."""
    if cfg.task == "edit":
        return {"reward": sum(t.rewards[0] for t in trajs) / len(trajs),
                "s_flw": sum(t.rqa[0] for t in trajs) / len(trajs), "s_psv": sum(t.rqa[1] for t in trajs) / len(trajs)}
    first_yes = [t.verdicts[0] for t in trajs if t.verdicts]
    correct = [v == (r >= 0.5) for t in trajs for v, r in zip(t.verdicts, t.rqa)]
    aha = [t.rqa[k + 1] > t.rqa[k] for t in trajs for k in range(len(t.rqa) - 1)]
    return {
        "reward": sum(sum(t.rewards) for t in trajs) / len(trajs),
        "rqa_first": sum(t.rqa[0] for t in trajs) / len(trajs),
        "rqa_final": sum(t.rqa[t.result.final % len(t.rqa)] for t in trajs) / len(trajs),
        "yes_rate": sum(first_yes) / max(len(first_yes), 1),
        "verdict_acc": sum(correct) / max(len(correct), 1),
        "regen_rate": sum(len(t.rqa) > 1 for t in trajs) / len(trajs),
        "aha_rate": sum(aha) / len(aha) if aha else float("nan"),
        "rounds": sum(len(t.rqa) for t in trajs) / len(trajs),
    }
