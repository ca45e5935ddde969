"""One end-to-end run at the real 576-token geometry (384 px, 24x24 codes): generate -> judge -> regenerate."""

from __future__ import annotations

import torch

from janus_r1 import Hooks, JanusR1
from janus_r1.model.tiny_files import write_tiny


def test_introspective_run_at_576_tokens(tmp_path):
    """Real files on disk: a DeepSeek-layout, 2-shard safetensors checkpoint converted on load."""
    path = write_tiny(tmp_path / "real", layout="deepseek", geometry="real", seed=1, shards=2)
    jr = JanusR1.from_pretrained(str(path), device="cpu", dtype="fp32")
    model = jr.model
    assert jr.num_image_tokens == 576 and jr.image_size == 384
    phases = []
    forced = {"n": 0}

    def force_no(_m, _i, out):  # every verdict "No", so both rounds run at full size
        out[..., jr.vocab.ids.no] += 100.0
        return out

    h = model.lm_head.register_forward_hook(force_no)
    try:
        [r] = jr.generate("a red cube on top of a blue sphere", max_rounds=2, seed=0, max_reflection=6,
                          hooks=Hooks(on_phase=phases.append, on_step=lambda e: forced.update(n=forced["n"] + 1)))
    finally:
        h.remove()
    assert phases == ["image 1/2", "judge 1/2", "image 2/2", "judge 2/2"]
    assert len(r.attempts) == 2 and r.final == 1
    for a in r.attempts:
        assert len(a.codes) == 576 and a.image.size == (384, 384) and a.verdict == "No"
        assert 0.0 <= a.score <= 1.0 and a.reflection.startswith("No")
    assert r.attempts[0].codes != r.attempts[1].codes
    assert forced["n"] >= 2 * 576 + 2
    # the second image was drawn from a context holding the first image's sampled codes
    codes = torch.tensor([r.attempts[0].codes])
    assert jr.janus.embed_gen(codes).shape == (1, 576, model.config.text_config.hidden_size)
