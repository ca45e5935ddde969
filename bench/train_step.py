"""One SFT step and one GRPO step at a real geometry with random weights on one card: seconds and peak memory.

    python bench/train_step.py --geometry 7b --device cuda              # the device check of issue 10
    python bench/train_step.py --geometry micro --device cpu --steps 1  # the CPU smoke run

SFT: one update of Task-III rows (the longest context: prompt, a failed attempt through the VQ path with its
critique, then the 576 target codes), ``--batch`` rows per card, through the trainer's own ``sft_loss``. GRPO: one
introspective rollout of ``--group-size`` G images with T = ``--rounds`` (the verdict is biased to "No", so every
trajectory regenerates: the worst case), a random judge, then the trainer's own update (old/reference log-probs,
``inner_iterations`` micro-batched updates). Prints JSON lines: phase, seconds, peak GiB.

``--precision mixed`` is the recipes' setting (fp32 master weights and AdamW states, bf16 autocast): 16 bytes per
trained parameter, ~118 GB for 7B, beyond one 80 GB card -- which is why the recipes shard (FSDP) over 8 cards.
``--precision bf16`` (pure bf16 weights and states, 8 bytes per parameter) fits one card and gives the activation
and time figures. An out-of-memory is reported, not raised.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from types import SimpleNamespace

import torch
from device_figures import build  # bench/ is on sys.path when a bench script runs; janus_r1 is pip-installed

from janus_r1.training import grpo as G
from janus_r1.training import sft as S
from janus_r1.training import trainer as T
from janus_r1.training.config import GRPOConfig
from janus_r1.training.rewards import CallableJudge


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak(device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def setup(args):
    """The trainer's policy, optimizer and a stand-in for its ``Run`` (one process, no accelerate)."""
    device = torch.device(args.device)
    dtype = torch.float32 if args.precision == "mixed" else torch.bfloat16
    j, _ = build(args.geometry, device, dtype)
    model = j.model
    model.requires_grad_(True)
    T.freeze_encoders(model)
    ref = T.make_reference(GRPOConfig(mixed_precision="bf16" if args.precision == "mixed" else "no",
                                      dtype="fp32" if args.precision == "mixed" else "bf16"), model, device)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    policy = T.Policy(model)
    opt = torch.optim.AdamW(T.param_groups(model, 0.05), lr=1e-6, betas=(0.9, 0.95), eps=1e-6)
    trainable = [p for p in model.parameters() if p.requires_grad]
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.precision == "mixed" \
        else contextlib.nullcontext

    def optimizer_step() -> float:
        norm = torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(norm)

    acc = SimpleNamespace(autocast=autocast, backward=lambda loss: loss.backward())
    ref_handle = SimpleNamespace(model=ref, root=T.Policy(ref), full_params=contextlib.nullcontext)
    run = SimpleNamespace(acc=acc, j=j, model=model, policy=policy, sync=lambda last: contextlib.nullcontext(),
                          backward=lambda loss, last: loss.backward(), optimizer_step=optimizer_step,
                          ref=ref_handle, gather=lambda t: t)
    return run, ref, device


def sft_step(run, device, batch: int) -> None:
    j = run.j
    n = j.num_image_tokens
    cache = S.ImageCache(j)
    gen = torch.Generator().manual_seed(0)
    for k in range(2 * batch):  # random codes stand in for VQ-encoded label images
        cache.codes[f"img{k}"] = torch.randint(0, j.model.config.vq_config.num_embeddings, (n,), generator=gen)
    reason = "No, the image does not match the prompt. Reason: " + "the object is missing. " * 8
    samples = [S.Sample("regen", "a photo of a red cat sitting on a blue chair next to a green apple",
                        target=f"img{2 * k}", history=[(f"img{2 * k + 1}", reason)]) for k in range(batch)]
    T.set_train(run.model, True)
    with run.acc.autocast():
        loss = run.policy(S.sft_loss, j, samples, cache)
    loss.backward()
    run.optimizer_step()
    _sync(device)


def grpo_step(run, ref, device, cfg) -> dict:
    from janus_r1.generation.tasks import Janus

    j = run.j
    no = j.vocab.ids.no

    def bias(_m, _i, out):
        out[..., no] += 20.0
        return out

    T.set_train(run.model, False)
    hook = j.model.lm_head.register_forward_hook(bias)
    t = time.perf_counter()
    with torch.no_grad():
        trajs = G.rollout(j, ["a photo of a red cat sitting on a blue chair"], cfg, seed=0)
    _sync(device)
    rollout = time.perf_counter() - t
    hook.remove()
    gen = torch.Generator().manual_seed(0)
    G.score_trajectories(trajs, CallableJudge(lambda ims, ps: torch.rand(len(ims), generator=gen).tolist()), cfg)
    t = time.perf_counter()
    T._grpo_update(run, cfg, trajs, Janus(ref, j.vocab))
    _sync(device)
    return {"rollout_s": rollout, "update_s": time.perf_counter() - t,
            "rounds": sum(len(x.result.attempts) for x in trajs) / len(trajs)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--geometry", default="7b", help="7b | 1b (DeepSeek geometry, random weights) | micro | real")
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", choices=["bf16", "mixed"], default="bf16")
    p.add_argument("--batch", type=int, default=4, help="SFT rows per card (paper: 4)")
    p.add_argument("--group-size", type=int, default=7)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--micro-batch", type=int, default=1, help="trajectories per GRPO forward/backward")
    p.add_argument("--steps", type=int, default=2, help="timed steps of each kind (the first one warms up)")
    p.add_argument("--mu", type=int, default=2, help="GRPO inner iterations (1: the old log-probs are skipped)")
    args = p.parse_args(argv)
    run, ref, device = setup(args)
    cfg = GRPOConfig(group_size=args.group_size, max_rounds=args.rounds, micro_batch=args.micro_batch,
                     max_reflection=64, inner_iterations=args.mu)
    base = {"geometry": args.geometry, "device": str(device), "precision": args.precision, "mu": args.mu}
    for phase, fn in (("sft", lambda: sft_step(run, device, args.batch)),
                      ("grpo", lambda: grpo_step(run, ref, device, cfg))):
        for k in range(args.steps):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t = time.perf_counter()
            try:
                extra = fn() or {}
            except torch.OutOfMemoryError as e:
                print(json.dumps({**base, "phase": phase, "oom": str(e).splitlines()[0]}), flush=True)
                break
            rec = {**base, "phase": phase, "step": k, "seconds": round(time.perf_counter() - t, 3),
                   "peak_gib": _peak(device), **{a: round(b, 3) for a, b in extra.items()}}
            print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
