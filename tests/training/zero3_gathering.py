"""Run by test_training_zero.py in its own process (DeepSpeed sets a process group up): two ZeRO-3 updates of the
micro model with every weight partitioned and nothing kept for reuse, recording which weights are gathered while
each decoder layer runs forward and while its q_proj gradient is computed. Prints one JSON line."""

from __future__ import annotations

import json

import torch
from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

from janus_r1.generation.context import Text
from janus_r1.model.tiny import build_tiny_model
from janus_r1.model.vocabulary import Vocabulary
from janus_r1.training.policy import Policy, freeze_encoders, param_groups
from janus_r1.training.sequences import Pass
from janus_r1.training.zero import Zero


def main() -> None:
    model, tok = build_tiny_model("micro", seed=0)
    freeze_encoders(model)
    pad = Vocabulary(tok).ids.pad
    codes = torch.randint(0, model.config.vq_config.num_embeddings, (1, 16), generator=torch.Generator().manual_seed(0))

    def loss(m):  # an image row and a text row, no image to read: the SigLIP/aligner call is the dummy one
        lg = Pass(m, pad).logits([[Text([5, 6, 7, 8])]], codes, [[Text([9, 10, 11])]], [[12, 13]])
        return lg.image.logsumexp(-1).mean() + lg.text[0].logsumexp(-1).mean()

    with torch.no_grad():
        plain = float(loss(model))
    z = Zero(Policy(model), torch.optim.AdamW(param_groups(model, 0.0), lr=1e-3), 3, "no", 1.0, True,
             None, persist_numel=0, live_numel=0)
    params = dict(model.named_parameters())
    events = []

    def live() -> list[str]:
        return [n for n, p in params.items() if p.ds_status != ZeroParamStatus.NOT_AVAILABLE]

    for k, layer in enumerate(model.model.language_model.layers):  # registered after DeepSpeed's own hooks
        layer.register_forward_pre_hook(lambda m, a, k=k: events.append(("forward", k, live())))
        layer.self_attn.q_proj.weight.register_hook(lambda g, k=k: events.append(("backward", k, live())))
    losses = []
    for _ in range(2):
        out = z(loss)
        losses.append(float(out))
        z.backward(out, True)
        z.step()
    print(json.dumps({"plain": plain, "losses": losses, "events": events,
                      "numel": {n: p.ds_numel for n, p in params.items()}}))


if __name__ == "__main__":
    main()
