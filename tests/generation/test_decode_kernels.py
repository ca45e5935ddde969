"""Decode stage 2: fewer, larger kernels -- fused q/k/v and gate/up weights (float and int4) under the fast numerics,
transformers' own GEMMs under the exact ones, the kernel count of one step, attention buckets of the fixed-shape
step, and the sort-free top-k threshold.

A concatenated GEMM has another shape than transformers' separate ones, and a BLAS may pick another kernel for it
(1 ulp on AVX-512 CPUs): fused outputs are bounded against the separate ones, never compared bit for bit."""

from __future__ import annotations

import functools
import os
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file, save_file

from janus_r1.errors import JanusR1Error
from janus_r1.generation import graphs, runners
from janus_r1.generation.context import build, cfg_rows
from janus_r1.generation.decode import decode_image, decode_text
from janus_r1.generation.fused import adjacent_rows, fused_linear
from janus_r1.generation.logit_check import _forced_logits, teacher_forced
from janus_r1.generation.numerics import NUMERICS_ENV, fast_numerics, numerics
from janus_r1.generation.oplog import logged, step_kernels
from janus_r1.generation.sampling import Sampling, draw, filter_top_k, sample
from janus_r1.model.tiny import build_tiny_model

PROMPTS = ["a red cat", "two green apples and a yellow banana on a wooden table"]


def _ctx(model, vocab, janus, prompts=PROMPTS):
    rows = cfg_rows([[janus.prompt_piece(janus.prompt_ids(p))] for p in prompts], vocab.ids.pad)
    return build(rows, model.get_input_embeddings(), vocab.ids.pad)


@pytest.fixture
def own(micro):
    """A private copy of the micro model (these tests re-point and re-pack its weights)."""
    model, tok = build_tiny_model("micro", seed=0)
    return model, micro.vocab, micro.janus


TOP8 = Sampling(top_k=8)


def _codes(model, ctx, runner, n=16, sampling=TOP8):
    return decode_image(model, ctx, n, 5.0, sampling, torch.Generator().manual_seed(0), runner=runner)


# --- kernel count ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, dtype, per_layer", [("exact", torch.float32, 21), ("exact", torch.bfloat16, 23),
                                                     ("fast", torch.float32, 15), ("fast", torch.bfloat16, 15)])
def test_a_step_is_at_most_15_to_23_kernels_per_layer_and_30_per_step(own, mode, dtype, per_layer):
    model, vocab, janus = own
    model = model.to(dtype)
    with numerics(mode):
        counts = step_kernels(model, _ctx(model, vocab, janus), Sampling(top_k=8),
                              lambda: torch.Generator().manual_seed(0))
    # 39 per layer + 33 per step before (fp32, micro); exact runs transformers' 7 GEMMs (+ 2 concatenations) and in
    # bf16 the two norm-weight products after the cast; fast (CUDA's default) concatenates the GEMMs (4), puts the
    # norm weight inside rms_norm and RoPE's product and sum into one addcmul
    assert counts["per_layer"] == per_layer and counts["per_step"] <= 30, counts
    assert counts["total"] == counts["per_step"] + counts["layers"] * counts["per_layer"]


@pytest.mark.parametrize("mode, gemms", [("fast", 4), ("exact", 7)])
def test_a_layer_is_four_gemms_fast_or_transformers_seven_exact_and_one_cache_write(own, mode, gemms):
    model, vocab, janus = own
    lm = model.model.language_model
    with numerics(mode):
        run = runners.StaticRunner(model, _ctx(model, vocab, janus), 4, fixed=True)
    run.prefill()
    at = torch.zeros(1, dtype=torch.long)
    with logged() as log:
        run.set_bits(at, None)
        run.step(torch.randn(4, 1, lm.config.hidden_size), at)
    ops = Counter(log.kernels())
    layers = len(lm.layers)
    assert ops["aten.mm.default"] == gemms * layers and ops["aten.index_copy_.default"] == layers
    assert ops["aten.index_fill_.int_Scalar"] == 1 and ops["fused.rms_norm"] == 2 * layers + 1
    assert ops["aten._scaled_dot_product_flash_attention_for_cpu.default"] == layers  # the mask: no per-layer work


@pytest.mark.parametrize("dtype, max_dlogit, agreement", [(torch.float32, 1e-4, 1.0), (torch.bfloat16, 0.1, 0.9)])
def test_fast_numerics_stay_within_a_rounding_of_transformers(micro, dtype, max_dlogit, agreement):
    """Teacher-forced over a whole image (what device_check prints on a GPU): the fast path's logits against
    transformers' forward, next to the exact path's own distance."""
    model, tok = build_tiny_model("micro", seed=0)
    model = model.to(dtype)
    ctx = _ctx(model, micro.vocab, micro.janus)
    codes = _codes(model, ctx, "dynamic")
    with numerics("exact"):
        exact = teacher_forced(model, ctx, codes)
        exact_logits = _forced_logits(model, ctx, codes, "fixed")
        assert torch.equal(_codes(model, ctx, "fixed"), codes)  # the exact path: the same tokens
    with numerics("fast"):
        fast = teacher_forced(model, ctx, codes)
        assert not torch.equal(_forced_logits(model, ctx, codes, "fixed"), exact_logits)  # the fusions really ran
    assert fast["tokens"] == codes.numel() == 2 * 16
    assert fast["max_abs_dlogit"] <= max_dlogit and fast["greedy_agreement"] >= agreement, (fast, exact)
    assert exact["max_abs_dlogit"] <= max_dlogit


GEMMS = ("aten.mm.", "aten.addmm.", "aten.bmm.")


def test_exact_numerics_run_transformers_own_gemms_at_its_shapes(own):
    """What makes the exact path exact on every CPU: a step calls the very GEMMs transformers' forward calls (the
    same weights at the same shapes, so any BLAS picks the same kernel), not a concatenation of them. Teacher-forced
    over an image, the exact eager runner's logits then equal transformers' (measured 0.0 in fp32 and bf16 here;
    bounded, as the bucketed fixed-shape runner, which attends over a longer masked row, is)."""
    model, vocab, janus = own
    lm = model.model.language_model
    ctx = _ctx(model, vocab, janus)
    theirs = runners.TransformersRunner(model, ctx, 4)
    with numerics("exact"):
        ours = runners.StaticRunner(model, ctx, 4)
    theirs.prefill(), ours.prefill()
    x = torch.randn(ctx.embeds.shape[0], 1, lm.config.hidden_size)
    # the weight GEMMs only: transformers 4.x also multiplies RoPE's inv_freq by the positions in every forward
    weights = {tuple(m.weight.shape[::-1]) for m in lm.modules() if isinstance(m, torch.nn.Linear)}
    logs = []
    for run in (theirs, ours):
        with logged() as log, torch.no_grad():
            run.set_bits(0, None)
            run.step(x, 0)
        logs.append([(op, shapes) for op, shapes, _ in log.ops if op.startswith(GEMMS) and tuple(shapes[-1]) in weights])
    assert logs[1] == logs[0] and len(logs[0]) == 7 * len(lm.layers), logs
    codes = _codes(model, ctx, "dynamic")
    with numerics("exact"):
        delta = (_forced_logits(model, ctx, codes, "eager") - _forced_logits(model, ctx, codes, "dynamic")).abs()
    assert delta.max().item() <= 1e-6


def test_numerics_default_is_fast_on_cuda_only_and_a_bad_choice_is_refused(monkeypatch):
    monkeypatch.delenv(NUMERICS_ENV, raising=False)
    assert fast_numerics(torch.device("cuda", 1)) and not fast_numerics(torch.device("cpu"))
    monkeypatch.setenv(NUMERICS_ENV, "Exact")
    assert not fast_numerics(torch.device("cuda"))
    monkeypatch.setenv(NUMERICS_ENV, "fast")
    assert fast_numerics(torch.device("cpu"))
    monkeypatch.setenv(NUMERICS_ENV, "quick")
    with pytest.raises(JanusR1Error, match="JANUS_R1_NUMERICS must be 'exact' or 'fast' \\(got 'quick'\\)"):
        fast_numerics(torch.device("cpu"))
    with numerics("exact"):
        assert os.environ[NUMERICS_ENV] == "exact"
    assert os.environ[NUMERICS_ENV] == "quick"  # restored


# --- fused weights ----------------------------------------------------------------------------------------------

def _close_to_transformers(model, ctx, codes, runner: str, atol: float = 1e-4) -> torch.Tensor:
    """Teacher-forced logits of ``runner`` (fast numerics: fused GEMMs) within ``atol`` of transformers' forward."""
    with numerics("fast"):
        ours = _forced_logits(model, ctx, codes, runner)
    theirs = _forced_logits(model, ctx, codes, "dynamic")
    assert (ours - theirs).abs().max().item() <= atol, runner
    return theirs


def test_fused_weights_share_storage_and_keep_transformers_outputs(own, tmp_path):
    model, vocab, janus = own
    lm = model.model.language_model
    ctx = _ctx(model, vocab, janus)
    before = lm(inputs_embeds=ctx.embeds, attention_mask=ctx.mask).last_hidden_state
    sd_before = {k: v.clone() for k, v in model.state_dict().items()}
    codes = _codes(model, ctx, "dynamic")
    with numerics("exact"):  # transformers' own GEMMs: nothing fused, nothing re-pointed
        assert torch.equal(_codes(model, ctx, "eager"), codes)
        a = lm.layers[0].self_attn
        assert adjacent_rows([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]) is None
    expected = _close_to_transformers(model, ctx, codes, "eager")
    _close_to_transformers(model, ctx, codes, "fixed")
    for layer in lm.layers:  # every projection now views its rows of one storage: no second copy
        a, m = layer.self_attn, layer.mlp
        assert adjacent_rows([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]) is not None
        assert adjacent_rows([m.gate_proj.weight, m.up_proj.weight]) is not None
    assert torch.equal(lm(inputs_embeds=ctx.embeds, attention_mask=ctx.mask).last_hidden_state, before)
    sd = model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in sd_before.items())
    save_file({k: v for k, v in sd.items() if "language_model" in k}, str(tmp_path / "lm.safetensors"))
    assert all(torch.equal(v, sd[k]) for k, v in load_file(str(tmp_path / "lm.safetensors")).items())
    with torch.no_grad():  # an in-place update (optimizer step, LoRA patch) reaches the fused GEMM
        lm.layers[0].self_attn.k_proj.weight.mul_(-1)
    changed = _close_to_transformers(model, ctx, codes, "eager")
    assert (changed - expected).abs().max().item() > 1e-2  # the update really changed the logits
    model.double().float()  # a cast replaces every parameter's data: the next runner fuses again
    _close_to_transformers(model, ctx, codes, "fixed")
    assert adjacent_rows([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]) is not None


def _needs_int4_cpu():
    from janus_r1.model.int4 import fast_kernel

    if fast_kernel(torch.device("cpu")) is None:
        pytest.skip("this torch has no CPU int4 kernel")


def test_int4_fused_gemm_is_the_concatenation_with_the_same_tokens(own):
    from janus_r1.model.int4 import Int4Linear
    from janus_r1.model.quantize import quantize_language_model

    _needs_int4_cpu()
    model, vocab, janus = own
    model = quantize_language_model(model, "int4", "cpu")
    attn = model.model.language_model.layers[0].self_attn
    parts = [attn.q_proj, attn.k_proj, attn.v_proj]
    x = torch.randn(4, 1, attn.q_proj.in_features)
    separate = torch.cat([p(x) for p in parts], -1)
    before = [p.weight_packed for p in parts]
    fused = fused_linear(parts)
    if isinstance(fused, Int4Linear):  # one GEMM, the projections' buffers views of its rows
        assert fused.kernel == "cpu" == parts[0].kernel
        assert fused.out_features == sum(p.out_features for p in parts)
        storage = fused.weight_packed.untyped_storage().data_ptr()
        assert all(p.weight_packed.untyped_storage().data_ptr() == storage for p in parts)
        torch.testing.assert_close(fused(x), separate, rtol=1e-5, atol=1e-5)  # another GEMM shape: bounded
    else:  # micro's 32-row projections do not split by rows in the CPU kernel's layout: one by one, untouched
        assert all(p.weight_packed is b for p, b in zip(parts, before)) and torch.equal(fused(x), separate)
    ctx = _ctx(model, vocab, janus)
    codes = _codes(model, ctx, "dynamic")
    with numerics("exact"):  # each Int4Linear's own GEMM, as transformers' forward calls it: the same tokens
        assert torch.equal(_codes(model, ctx, "eager"), codes)
    _close_to_transformers(model, ctx, codes, "eager", atol=1e-3)
    _close_to_transformers(model, ctx, codes, "fixed", atol=1e-3)


def test_int4_projections_become_views_of_the_fused_packed_weights():
    from janus_r1.model.int4 import Int4Linear

    _needs_int4_cpu()
    torch.manual_seed(0)
    parts = [Int4Linear.from_linear(torch.nn.Linear(128, 64, bias=False), "cpu", 32) for _ in range(3)]
    x = torch.randn(2, 128)
    separate = torch.cat([p(x) for p in parts], -1)
    fused = fused_linear(parts)
    storage = fused.weight_packed.untyped_storage().data_ptr()
    assert all(p.weight_packed.untyped_storage().data_ptr() == storage for p in parts)  # no second copy
    torch.testing.assert_close(fused(x), separate, rtol=1e-5, atol=1e-5)  # another GEMM shape: bounded
    assert torch.equal(torch.cat([p(x) for p in parts], -1), separate)  # the views: the same GEMMs, same bytes
    assert fused_linear(parts) is fused  # cached ...
    parts[1].repack(torch.device("cpu"), torch.float32, kernel="reference")
    again = fused_linear(parts)  # ... until a projection is re-packed
    assert again is not fused and again is not None and torch.allclose(again(x), separate, atol=1e-5)


# --- attention buckets ------------------------------------------------------------------------------------------

def test_the_fixed_step_attends_over_buckets_with_the_same_tokens(own, monkeypatch):
    model, vocab, janus = own
    ctx = _ctx(model, vocab, janus)
    expected = _codes(model, ctx, "eager")
    made = []
    monkeypatch.setattr(runners, "BUCKET", 8)
    real = runners.Buckets.__call__

    def spy(self, t):
        real(self, t)
        made.append((t, self.run.span, self.run.bucket(t)))

    monkeypatch.setattr(runners.Buckets, "__call__", spy)
    monkeypatch.setattr(graphs, "can_capture", lambda device: True)  # each bucket's stepper captures (fake graph)
    monkeypatch.setattr(graphs, "capture", lambda fn, generator: type("G", (), {"replay": staticmethod(fn)})())
    for runner in ("fixed", "graph"):
        made.clear()
        assert torch.equal(_codes(model, ctx, runner), expected), runner
        length = ctx.embeds.shape[1]
        assert [s for _, s, _ in made] == [min(-(-(length + t + 1) // 8) * 8, -(-(length + 16) // 16) * 16)
                                           for t, _, _ in made]
        assert len({s for _, s, _ in made}) >= 2  # the phase crossed buckets
    ids = vocab.ids
    texts = [decode_text(model, ctx, 12, Sampling(top_k=50), torch.Generator().manual_seed(1), ids.eos, ids.pad,
                         runner=r) for r in ("eager", "fixed")]
    assert torch.equal(texts[0].ids, texts[1].ids) and torch.equal(texts[0].mask, texts[1].mask)


# --- sampler ----------------------------------------------------------------------------------------------------

def _sorted_top_k(logits, k):  # the previous threshold: the last of a sorted top-k
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


@pytest.mark.parametrize("k", [1, 4, 50, 4096])
def test_unsorted_top_k_threshold_gives_the_same_tokens(k):
    gen = torch.Generator().manual_seed(k)
    logits = torch.randn(6, 8192, generator=gen)
    logits[0, :100] = logits[0, 0]  # ties at the threshold are kept by both
    logits[1] = torch.round(logits[1] * 4) / 4
    assert torch.equal(filter_top_k(logits, k), _sorted_top_k(logits, k))
    for s in (Sampling(top_k=k), Sampling(top_k=k, temperature=0.7, top_p=0.9), Sampling(top_k=k, greedy=True)):
        a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        ours = sample(logits, s, a)
        ref = _sorted_top_k(logits, s.top_k)
        if s.greedy:
            theirs = torch.argmax(ref, dim=-1)
        else:
            probs = torch.softmax(ref / s.temperature, dim=-1)
            if s.top_p < 1.0:
                sp, order = torch.sort(probs, dim=-1, descending=True)
                sp = sp.masked_fill(torch.cumsum(sp, -1) - sp > s.top_p, 0.0)
                theirs = torch.gather(order, -1, draw(sp / sp.sum(-1, keepdim=True), b)).squeeze(-1)
            else:
                theirs = torch.multinomial(probs, 1, generator=b).squeeze(-1)
        assert torch.equal(ours, theirs) and torch.equal(a.get_state(), b.get_state()), s


def test_each_bucket_is_told_the_steps_it_will_run(own, monkeypatch):
    """A bucket's stepper learns how many steps it runs, so the capture rule (enough steps left to win) counts
    the bucket's steps, not the phase's: the counts are consecutive ranges that add up to the phase."""
    from janus_r1.generation import decode

    model, vocab, janus = own
    ctx = _ctx(model, vocab, janus)
    monkeypatch.setattr(runners, "BUCKET", 8)
    told = []

    class Recording(graphs.Stepper):
        def __init__(self, *args, steps: int = 1 << 30, **kwargs) -> None:
            told.append(steps)
            super().__init__(*args, steps=steps, **kwargs)

    monkeypatch.setattr(decode, "Stepper", Recording)
    codes = _codes(model, ctx, "fixed")
    length, n_steps = ctx.embeds.shape[1], codes.shape[1] - 1
    ends = [min(-(-(length + 1) // 8) * 8 - length, n_steps)]
    while ends[-1] < n_steps:
        ends.append(min(ends[-1] + 8, n_steps))
    assert told == [b - a for a, b in zip([0, *ends[:-1]], ends)] and sum(told) == n_steps and len(told) >= 2
    told.clear()
    _codes(model, ctx, "eager")  # no buckets: one stepper for the whole phase
    assert told == [n_steps]


def test_weights_a_sharding_engine_owns_are_never_re_pointed():
    """Under FSDP2/ZeRO the engine owns the weights' storage (the training rollouts decode on its all-gathered
    copies): fused_linear must not re-point them, or the next training forward reads stale weights. Already
    adjacent weights still fuse; others are called one by one, with the same outputs."""
    from janus_r1.generation.fused import sharded_by_an_engine

    torch.manual_seed(0)
    parts = [torch.nn.Linear(8, n, bias=False) for n in (8, 4, 4)]
    before = [p.weight.untyped_storage().data_ptr() for p in parts]
    x = torch.randn(3, 8)
    separate = torch.cat([p(x) for p in parts], -1)
    fused = fused_linear(parts, inplace=False)
    assert torch.equal(fused(x), separate)  # called one by one: the very same GEMMs
    assert [p.weight.untyped_storage().data_ptr() for p in parts] == before  # untouched
    fused_linear(parts)  # the default (a model of our own) re-points into one storage ...
    again = fused_linear(parts, inplace=False)  # ... which is then adjacent: one GEMM without re-pointing
    assert isinstance(again, functools.partial) and again.keywords["weight"].shape == (16, 8)
    # one GEMM of another shape than the three: a BLAS may pick another kernel (1 ulp on AVX-512), so bounded
    torch.testing.assert_close(again(x), separate, rtol=1e-5, atol=1e-6)

    layer = torch.nn.Sequential(*parts)
    assert not sharded_by_an_engine(layer)
    parts[0].weight.ds_id = 7  # DeepSpeed ZeRO marks its parameters
    assert sharded_by_an_engine(layer)
    del parts[0].weight.ds_id
    layer.__class__ = type("FSDPSequential", (torch.nn.Sequential,), {})  # what fully_shard makes of a module
    assert sharded_by_an_engine(layer)


def test_a_trainers_rollouts_borrow_the_weights(own):
    """Inside ``borrowed_weights`` (a trainer's rollouts: its optimizer or ZeRO's flat buffers own the storage)
    the static runner re-points nothing and gives the same tokens; outside, the model's own weights fuse."""
    from janus_r1.generation.fused import borrowed_weights

    model, vocab, janus = own
    ctx = _ctx(model, vocab, janus)
    expected = _codes(model, ctx, "dynamic")
    fresh = build_tiny_model("micro", seed=0)[0].eval()
    ptrs = {n: p.untyped_storage().data_ptr() for n, p in fresh.named_parameters()}
    with borrowed_weights(fresh):  # the fast numerics would fuse in place: borrowed, they call one by one
        _close_to_transformers(fresh, ctx, expected, "eager")
    assert {n: p.untyped_storage().data_ptr() for n, p in fresh.named_parameters()} == ptrs
    assert not fresh._janus_r1_borrowed_weights
    with numerics("exact"):  # transformers' own GEMMs: nothing to re-point either
        assert torch.equal(_codes(fresh, ctx, "eager"), expected)
    assert {n: p.untyped_storage().data_ptr() for n, p in fresh.named_parameters()} == ptrs
    _close_to_transformers(fresh, ctx, expected, "eager")  # the fast numerics fuse the model's own weights ...
    assert {n: p.untyped_storage().data_ptr() for n, p in fresh.named_parameters()} != ptrs  # ... in place


def test_rms_norm_counts_as_one_kernel_only_on_a_torch_that_fuses_it(own, monkeypatch):
    """Before ``aten._fused_rms_norm`` (torch 2.8) CUDA runs ``F.rms_norm`` as its decomposition too: each of its
    operators is a kernel there, and the count says so."""
    from janus_r1.generation import oplog

    model, vocab, janus = own
    assert oplog.rms_norm_is_one_kernel() == hasattr(torch.ops.aten, "_fused_rms_norm")
    ctx = _ctx(model, vocab, janus)
    counts = {}
    for fused in (True, False):
        monkeypatch.setattr(oplog, "rms_norm_is_one_kernel", lambda fused=fused: fused)
        with numerics("fast"):
            counts[fused] = step_kernels(model, ctx, TOP8, lambda: torch.Generator().manual_seed(0))
    # two norms per layer, each several operators when not fused; the CPU's own count is the same either way
    assert counts[False]["per_layer"] >= counts[True]["per_layer"] + 2 * 2, counts
    assert counts[False]["cpu_ops"] == counts[True]["cpu_ops"]


def test_int4_fusion_falls_back_to_the_projections_when_the_fused_layout_is_not_their_weights(monkeypatch):
    """A fused int4 buffer that does not unpack to the concatenated weights (a kernel layout that does not split
    by rows) is never used, nor kept beside the projections: they run one by one, unchanged, and the outcome is
    cached (no second pack)."""
    from janus_r1.model import int4 as q4
    from janus_r1.model.int4 import Int4Linear

    _needs_int4_cpu()
    torch.manual_seed(0)
    parts = [Int4Linear.from_linear(torch.nn.Linear(128, 64, bias=False), "cpu", 32) for _ in range(3)]
    before = [p.weight_packed for p in parts]
    x = torch.randn(2, 128)
    separate = torch.cat([p(x) for p in parts], -1)
    real, packs = q4.pack, []

    def scrambled(q, kernel):  # the fused shape packs into a layout whose rows are not the projections' rows
        packs.append(q.shape)
        return real(q.flip(0) if q.shape[0] == 3 * 64 else q, kernel)

    monkeypatch.setattr(q4, "pack", scrambled)
    fused = fused_linear(parts)
    assert not isinstance(fused, Int4Linear) and torch.equal(fused(x), separate)  # the very same GEMMs
    assert all(p.weight_packed is b for p, b in zip(parts, before))  # untouched: no view, no second copy
    assert not isinstance(fused_linear(parts), Int4Linear) and len(packs) == 1  # cached: checked once
