"""Decoder-layer offload through accelerate's hooks: same tokens as the resident model."""

from __future__ import annotations

import pytest

from janus_r1 import JanusR1, JanusR1Error

pytest.importorskip("accelerate")


def test_offloaded_layers_give_identical_tokens(tmp_path):
    from janus_r1.model.tiny_files import write_tiny

    path = write_tiny(tmp_path / "m", geometry="micro", seed=3)
    ref = JanusR1.from_pretrained(str(path), device="cpu", dtype="fp32")
    # on the CPU the only place to offload to is the disk: every decoder layer is read back at every step
    off = JanusR1.from_pretrained(str(path), device="cpu", dtype="fp32", max_memory_gib=0,
                                  offload_dir=str(tmp_path / "offload"))
    assert set(off.model.hf_device_map.values()) == {"cpu", "disk"}
    assert all(off.model.hf_device_map[f"model.language_model.layers.{i}"] == "disk" for i in range(2))
    assert off.model.model.language_model.layers[0].self_attn.q_proj.weight.is_meta  # not resident
    a = ref.generate(["a red cat", "two dogs"], seed=4, max_rounds=2, max_reflection=5)
    b = off.generate(["a red cat", "two dogs"], seed=4, max_rounds=2, max_reflection=5)
    assert [r.to_dict() for r in a] == [r.to_dict() for r in b]


def test_budget_keeps_the_first_layers_resident(micro):
    from janus_r1.model.offload import RESIDENT, device_map

    m = micro.model
    resident = sum(p.numel() * p.element_size() for n in RESIDENT for p in m.get_submodule(n).parameters())
    per_layer = sum(p.numel() * p.element_size() for p in m.model.language_model.layers[0].parameters())
    mapping = device_map(m, __import__("torch").device("cuda"), (resident + 1.5 * per_layer) / 2**30, None)
    assert mapping["model.language_model.layers.0"] == "cuda" and mapping["model.language_model.layers.1"] == "cpu"
    assert mapping["lm_head"] == "cuda" and mapping["model.vqmodel"] == "cuda"
    with pytest.raises(JanusR1Error, match="max_memory_gib"):
        device_map(m, __import__("torch").device("cuda"), -1, None)


def test_offload_and_quantize_are_exclusive(tmp_path):
    with pytest.raises(JanusR1Error, match="not both"):
        JanusR1.from_pretrained("tiny-random", device="cpu", quantize="4bit", max_memory_gib=1)
