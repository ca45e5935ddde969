"""4-bit / 8-bit language model through bitsandbytes (CPU backend here): only the decoder is quantised."""

from __future__ import annotations

import pytest
import torch

from janus_r1 import JanusR1, JanusR1Error

bnb = pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory):
    from janus_r1.model.tiny_files import write_tiny

    # the real-geometry tiny model: its decoder widths (128/256) are multiples of the NF4 block size
    return write_tiny(tmp_path_factory.mktemp("q") / "real", geometry="real", seed=2)


@pytest.mark.parametrize("mode, cls, max_rel", [("4bit", "Linear4bit", 0.35), ("8bit", "Linear8bitLt", 0.08)])
def test_only_the_language_model_is_quantised_and_it_still_generates(real_dir, mode, cls, max_rel):
    ref = JanusR1.from_pretrained(str(real_dir), device="cpu", dtype="bf16")
    q = JanusR1.from_pretrained(str(real_dir), device="cpu", dtype="bf16", quantize=mode)
    layer = q.model.model.language_model.layers[0]
    assert type(layer.self_attn.q_proj).__name__ == cls and type(layer.mlp.down_proj).__name__ == cls
    # heads, embeddings, aligners, SigLIP and VQ stay in the compute dtype, bit-identical to the bf16 load
    for name in ("lm_head.weight", "model.generation_head.vision_head.weight", "model.generation_aligner.fc1.weight",
                 "model.vqmodel.quantize.embedding.weight", "model.aligner.fc1.weight",
                 "model.language_model.embed_tokens.weight"):
        a, b = ref.model.get_parameter(name), q.model.get_parameter(name)
        assert b.dtype == torch.bfloat16 and torch.equal(a, b), name
    lm_bytes = [sum(t.numel() * t.element_size() for t in m.model.model.language_model.layers.parameters())
                for m in (ref, q)]
    assert lm_bytes[1] < lm_bytes[0] * (0.3 if mode == "4bit" else 0.55)
    x = torch.randn(1, 7, 128, generator=torch.Generator().manual_seed(0)).bfloat16()
    with torch.no_grad():
        h0 = ref.model.model.language_model(inputs_embeds=x).last_hidden_state.float()
        h1 = q.model.model.language_model(inputs_embeds=x).last_hidden_state.float()
    assert 0 < ((h1 - h0).norm() / h0.norm()).item() < max_rel
    from PIL import Image

    [jd] = q.judge(Image.new("RGB", (50, 40), (200, 0, 0)), "a red cat", max_reflection=3, seed=0)
    assert jd.verdict in ("Yes", "No") and 0 <= jd.score <= 1 and len(jd.ids) >= 1


def test_bad_quantize_mode(real_dir):
    with pytest.raises(JanusR1Error, match="quantize must be one of"):
        JanusR1.from_pretrained(str(real_dir), device="cpu", quantize="3bit")
