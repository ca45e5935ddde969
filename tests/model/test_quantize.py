"""Quantised language model: int4 on torch's own kernels (the CPU one here), NF4 / 8-bit through bitsandbytes.

Only the decoder's linears are quantised; everything else must stay bit-identical to the unquantised load.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from janus_r1 import JanusR1, JanusR1Error
from janus_r1.model import int4, quantize
from janus_r1.model.int4 import Int4Linear

CPU_INT4 = int4.fast_kernel(torch.device("cpu")) == "cpu"
needs_cpu_kernel = pytest.mark.skipif(not CPU_INT4, reason="this torch has no CPU int4 kernel")


@pytest.fixture(scope="module")
def micro_dir(tmp_path_factory):
    from janus_r1.model.tiny_files import write_tiny

    return write_tiny(tmp_path_factory.mktemp("q") / "micro", geometry="micro", seed=0)


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory):
    from janus_r1.model.tiny_files import write_tiny

    # the real-geometry tiny model: decoder widths 128/256, multiples of the default int4 group (128)
    return write_tiny(tmp_path_factory.mktemp("q") / "real", geometry="real", seed=2)


def _linear(n: int, k: int, dtype: torch.dtype, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(k, n, bias=False)
    nn.init.normal_(lin.weight, 0.0, 0.02)
    return lin.to(dtype)


# --- the int4 linear itself ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n, k, kernel", [(256, 128, "cpu"), (80, 64, "cpu"), (40, 32, "reference")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int4_linear_matches_its_dequantised_weights(n, k, kernel, dtype):
    """The fused kernel multiplies by exactly the weights the quantiser stored (rows of 80 end in a partial
    block of the CPU layout; 40 rows are not a multiple of 16, so that layer falls back to the reference)."""
    lin = _linear(n, k, dtype)
    layer = Int4Linear.from_linear(lin, "cpu")
    assert layer.kernel == (kernel if CPU_INT4 else "reference") and layer.group_size == min(128, k)
    w = lin.weight.float()
    wq = layer.dequantized()
    # round to nearest: every weight is within half a step (scale / 2) of its group's grid
    step = layer.scales_and_zeros[..., 0].T.float().repeat_interleave(layer.group_size, 1)
    assert ((wq - w).abs() <= step / 2 + 1e-6).all()
    x = torch.randn(3, 5, k, generator=torch.Generator().manual_seed(1)).to(dtype)
    y = layer(x)
    ref = x.float() @ wq.T
    assert y.shape == (3, 5, n) and y.dtype == dtype
    # fp32: the same math to float rounding; bf16: one rounding of the output (8 mantissa bits)
    bound = 1e-5 if dtype == torch.float32 else 2 ** -7
    assert (y.float() - ref).abs().max().item() <= bound * ref.abs().max().item()


@pytest.mark.parametrize("n, k", [(256, 128), (80, 64), (16, 64), (4096 + 48, 256)])
def test_packing_round_trip(n, k):
    """pack -> unpack gives back the canonical bytes (the CPU layout is learned, then checked)."""
    w = _linear(n, k, torch.float32, seed=n).weight.data
    q, _ = int4.quantize_weight(w, int4.pick_group_size(k), torch.float32)
    assert q.shape == (n, k // 2) and q.dtype == torch.uint8
    values = int4.unpack_values(q)
    assert torch.equal((values[:, ::2] << 4) | values[:, 1::2], q) and int(values.max()) <= 15
    for kernel in ("reference", "cpu") if CPU_INT4 else ("reference",):
        packed = int4.pack(q, kernel)
        assert torch.equal(int4.unpack(packed, kernel, n, k), q), kernel


@needs_cpu_kernel
def test_dtype_casts_keep_the_kernel_working():
    """A model-wide ``.to(dtype)`` must not break the kernel's fixed scale dtype."""
    layer = Int4Linear.from_linear(_linear(64, 64, torch.float32), "cpu")
    x = torch.randn(2, 64)
    y = layer(x)
    layer.to(torch.bfloat16)
    assert layer.scales_and_zeros.dtype == torch.float32 and layer.kernel == "cpu"
    assert torch.allclose(layer(x.bfloat16()).float(), y, atol=0.05)


@needs_cpu_kernel
def test_repacking_for_another_kernel_keeps_the_weights():
    """What a device move does (unpack, move, pack for the new device's kernel), between the two CPU kernels."""
    layer = Int4Linear.from_linear(_linear(80, 128, torch.float32), "cpu")
    x = torch.randn(2, 128)
    y, q = layer(x), layer.canonical()
    layer.repack(torch.device("cpu"), torch.float32, kernel="reference")
    assert layer.kernel == "reference" and torch.equal(layer.weight_packed, q)
    assert torch.allclose(layer(x), y, rtol=1e-5, atol=1e-6)  # same math, another summation order
    layer.repack(torch.device("cpu"), torch.float32)
    assert layer.kernel == "cpu" and torch.equal(layer.canonical(), q) and torch.equal(layer(x), y)


@needs_cpu_kernel
def test_a_cpu_layout_it_cannot_read_is_refused(monkeypatch):
    """If a future torch packed differently, moving off the CPU must fail clearly, never misread the weights."""
    learned = int4._learn_cpu_layout(48)
    monkeypatch.setattr(int4, "_learn_cpu_layout", lambda n: (learned[0], learned[1].flip(0), learned[2]))
    int4._cpu_layout.cache_clear()
    try:
        with pytest.raises(JanusR1Error, match=r"packs int4 weights for the CPU in a layout janus_r1 cannot read "
                                               r"back, so the model cannot be moved off the CPU"):
            int4.unpack(int4.pack(torch.zeros(48, 32, dtype=torch.uint8), "cpu"), "cpu", 48, 64)
    finally:
        int4._cpu_layout.cache_clear()


@pytest.mark.parametrize("n, k, tiles", [(11008, 4096, 8), (4096, 11008, 8), (64, 32, 2)])
def test_cuda_packing_meets_tinygemms_contract(n, k, tiles):
    """No GPU in CI: torch's meta kernel for the CUDA packer checks what it is given (since torch 2.5 only
    ``uint8 [N, K/2]``) and returns the tiled layout ``[N/8, K/(16 tiles), 32, tiles/2]`` int32."""
    assert int4.layer_kernel(torch.device("meta"), k, n) == "reference"  # no fused kernel off CPU/CUDA
    packed = int4.pack(torch.empty(n, k // 2, dtype=torch.uint8, device="meta"), "cuda")
    assert packed.dtype == torch.int32 and tuple(packed.shape) == (n // 8, k // (16 * tiles), 32, tiles // 2)


def test_group_size_must_fit_the_width():
    assert int4.pick_group_size(4096) == 128 and int4.pick_group_size(11008) == 128
    assert int4.pick_group_size(96) == 32 and int4.pick_group_size(5632, 256) == 256
    with pytest.raises(JanusR1Error, match=r"int4 needs input widths divisible by 32; this layer has 100 inputs"):
        int4.pick_group_size(100)
    with pytest.raises(JanusR1Error, match=r"int4 group_size must be one of \(256, 128, 64, 32\), got 100"):
        int4.pick_group_size(128, 100)


# --- which backend "4bit" means ------------------------------------------------------------------------------


def test_4bit_picks_int4_where_a_fused_kernel_exists(monkeypatch):
    assert quantize.resolve_mode("4bit", "cpu") == "int4"
    assert quantize.resolve_mode("nf4", "cpu") == "nf4" and quantize.resolve_mode(None, "cpu") == "none"
    monkeypatch.setattr(quantize, "fast_kernel", lambda device: "cuda")  # an sm80+ GPU
    assert quantize.resolve_mode("4bit", "cuda") == "int4"
    monkeypatch.setattr(quantize, "fast_kernel", lambda device: None)  # an older GPU, or a torch without it
    assert quantize.resolve_mode("4bit", "cuda") == "nf4"
    assert quantize.resolve_mode("4bit", "cpu") == "int4"  # reference kernel: bitsandbytes is no better there
    assert quantize.resolve_mode("INT4", "cuda") == "int4"


def test_bad_quantize_mode(real_dir):
    with pytest.raises(JanusR1Error, match=r"quantize must be one of none, 4bit, int4, nf4, 8bit \(got '3bit'\)"):
        JanusR1.from_pretrained(str(real_dir), device="cpu", quantize="3bit")


# --- the quantised model -------------------------------------------------------------------------------------


def _linear_bytes(jr) -> int:
    layers = jr.model.model.language_model.layers
    mods = [m for m in layers.modules() if isinstance(m, (nn.Linear, Int4Linear))]
    return sum(t.numel() * t.element_size() for m in mods for t in [*m.parameters(), *m.buffers()])


@needs_cpu_kernel
def test_4bit_real_geometry_model_quantises_only_the_decoder_linears(real_dir):
    ref = JanusR1.from_pretrained(str(real_dir), device="cpu", dtype="bf16", progress=False)
    q = JanusR1.from_pretrained(str(real_dir), device="cpu", dtype="bf16", quantize="4bit", progress=False)
    assert q.model.config.janus_r1_quantization == "int4"
    lm = q.model.model.language_model
    layers = [m for m in lm.modules() if isinstance(m, (nn.Linear, Int4Linear))]
    assert len(layers) == 2 * 7 and all(isinstance(m, Int4Linear) and m.kernel == "cpu" for m in layers)
    # everything else -- heads, embeddings, norms, aligners, SigLIP, VQ -- is bit-identical to the bf16 load
    qsd, rsd = q.model.state_dict(), ref.model.state_dict()
    kept = [k for k in rsd if k in qsd]
    assert len(kept) == len(rsd) - 14 and "lm_head.weight" in kept and "model.vqmodel.quantize.embedding.weight" in kept
    for key in kept:
        assert qsd[key].dtype == rsd[key].dtype and torch.equal(qsd[key], rsd[key]), key
    # 4 bits per weight plus a bf16 scale and zero per group of 128: 4.25 / 16 of the bf16 bytes
    ratio = _linear_bytes(q) / _linear_bytes(ref)
    assert 0.25 < ratio <= 4.25 / 16 + 1e-9
    x = torch.randn(1, 7, 128, generator=torch.Generator().manual_seed(0)).bfloat16()
    with torch.no_grad():
        h0 = ref.model.model.language_model(inputs_embeds=x).last_hidden_state.float()
        h1 = lm(inputs_embeds=x).last_hidden_state.float()
    # random Gaussian weights: a 4-bit step is ~0.37 sigma, ~11% rms error per linear, compounding over layers
    assert 0 < ((h1 - h0).norm() / h0.norm()).item() < 0.25
    from PIL import Image

    [jd] = q.judge(Image.new("RGB", (50, 40), (200, 0, 0)), "a red cat", max_reflection=3, seed=0)
    assert jd.verdict in ("Yes", "No") and 0 <= jd.score <= 1 and len(jd.ids) >= 1


@needs_cpu_kernel
def test_4bit_on_a_cpu_only_machine_draws_what_the_reference_math_draws(micro_dir):
    """Issue 9: ``--quantize 4bit`` on the CPU crashed in bitsandbytes (``shape '[32, 0]'``) on width-32 layers.
    Now it runs int4; in fp32 the CPU kernel and dequantise-then-matmul are the same math: same seed, same tokens."""
    q = JanusR1.from_pretrained(str(micro_dir), device="cpu", dtype="fp32", quantize="4bit", progress=False)
    assert {m.group_size for m in q.model.modules() if isinstance(m, Int4Linear)} == {32, 64}
    fused = [r.attempts[0].codes for r in q.text_to_image(["a red cat", "two green apples"], seed=3)]
    assert [len(c) for c in fused] == [16, 16]
    for m in q.model.modules():
        if isinstance(m, Int4Linear):
            assert m.kernel == "cpu"
            m.weight_packed, m.kernel = m.canonical(), "reference"
    assert [r.attempts[0].codes for r in q.text_to_image(["a red cat", "two green apples"], seed=3)] == fused


# --- bitsandbytes (optional) ---------------------------------------------------------------------------------


def test_nf4_on_the_cpu_refuses_narrow_layers_up_front(micro_dir):
    pytest.importorskip("bitsandbytes")
    with pytest.raises(JanusR1Error, match=r"quantize='nf4' on the CPU \(bitsandbytes\) needs every language-model "
                                           r"input width to be a multiple of 64; this model has \[32, 64\]"):
        JanusR1.from_pretrained(str(micro_dir), device="cpu", quantize="nf4", progress=False)


def test_nf4_without_bitsandbytes_says_what_to_install(real_dir, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if it were not installed
    with pytest.raises(JanusR1Error, match=r"quantize='nf4' needs bitsandbytes: `pip install bitsandbytes`"):
        JanusR1.from_pretrained(str(real_dir), device="cpu", quantize="nf4", progress=False)


@pytest.mark.parametrize("mode, cls, max_rel", [("nf4", "Linear4bit", 0.35), ("8bit", "Linear8bitLt", 0.08)])
def test_bitsandbytes_modes_quantise_only_the_language_model(real_dir, mode, cls, max_rel):
    pytest.importorskip("bitsandbytes")
    ref = JanusR1.from_pretrained(str(real_dir), device="cpu", dtype="bf16", progress=False)
    q = JanusR1.from_pretrained(str(real_dir), device="cpu", dtype="bf16", quantize=mode, progress=False)
    layer = q.model.model.language_model.layers[0]
    assert type(layer.self_attn.q_proj).__name__ == cls and type(layer.mlp.down_proj).__name__ == cls
    for name in ("lm_head.weight", "model.generation_head.vision_head.weight", "model.generation_aligner.fc1.weight",
                 "model.vqmodel.quantize.embedding.weight", "model.aligner.fc1.weight",
                 "model.language_model.embed_tokens.weight"):
        a, b = ref.model.get_parameter(name), q.model.get_parameter(name)
        assert b.dtype == torch.bfloat16 and torch.equal(a, b), name
    assert _linear_bytes(q) < _linear_bytes(ref) * (0.3 if mode == "nf4" else 0.55)
    x = torch.randn(1, 7, 128, generator=torch.Generator().manual_seed(0)).bfloat16()
    with torch.no_grad():
        h0 = ref.model.model.language_model(inputs_embeds=x).last_hidden_state.float()
        h1 = q.model.model.language_model(inputs_embeds=x).last_hidden_state.float()
    assert 0 < ((h1 - h0).norm() / h0.norm()).item() < max_rel
    from PIL import Image

    [jd] = q.judge(Image.new("RGB", (50, 40), (200, 0, 0)), "a red cat", max_reflection=3, seed=0)
    assert jd.verdict in ("Yes", "No") and 0 <= jd.score <= 1 and len(jd.ids) >= 1
