"""The sync-free sampler draws exactly what ``torch.multinomial`` draws and leaves the generator where it would;
CFG mixing and the forced first token, each written once."""

from __future__ import annotations

import pytest
import torch

from janus_r1.generation.sampling import Sampling, cfg_mix, draw, filter_top_k, force_tokens, sample


def _reference(logits: torch.Tensor, s: Sampling, gen: torch.Generator) -> torch.Tensor:
    """The sampler as it was written before: the same filters, then ``torch.multinomial`` itself."""
    logits = filter_top_k(logits.float(), s.top_k)
    probs = torch.softmax(logits / s.temperature, dim=-1)
    if s.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        preceding = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(preceding > s.top_p, 0.0)
        sorted_probs = sorted_probs / sorted_probs.sum(dim=-1, keepdim=True)
        return torch.gather(order, -1, torch.multinomial(sorted_probs, 1, generator=gen)).squeeze(-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


SETTINGS = [Sampling(), Sampling(top_k=4096), Sampling(top_k=50), Sampling(top_k=50, top_p=0.9),
            Sampling(temperature=0.7, top_p=0.5), Sampling(temperature=1.3, top_k=3), Sampling(top_k=1)]


@pytest.mark.parametrize("rows, vocab", [(1, 7), (2, 50), (3, 1000), (2, 16384), (4, 4099)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_draws_what_multinomial_draws_and_leaves_the_generator_in_the_same_state(rows, vocab, dtype):
    for seed in range(6 if vocab < 4096 else 2):
        logits = (torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * (1 + seed)).to(dtype)
        for s in SETTINGS:
            ours, theirs = torch.Generator().manual_seed(seed + 100), torch.Generator().manual_seed(seed + 100)
            for _ in range(3):  # consecutive draws keep agreeing: the generator advanced identically
                assert torch.equal(sample(logits, s, ours), _reference(logits, s, theirs)), (seed, s)
            assert torch.equal(ours.get_state(), theirs.get_state())


def test_draw_matches_multinomial_on_peaked_and_tied_distributions():
    probs = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.0, 0.5, 0.0]])
    for seed in range(50):
        a, b = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        assert torch.equal(draw(probs, a), torch.multinomial(probs, 1, generator=b))
        assert torch.equal(a.get_state(), b.get_state())


def test_greedy_is_the_argmax_and_draws_nothing():
    logits = torch.tensor([[0.1, 3.0, -1.0], [2.0, 2.0, 1.0]])
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert sample(logits, Sampling(greedy=True), gen).tolist() == [1, 0]
    assert torch.equal(gen.get_state(), state)


def test_cfg_mix_is_u_plus_w_times_c_minus_u():
    c, u = torch.tensor([[1.0, 4.0]]), torch.tensor([[3.0, 2.0]])
    assert cfg_mix(c, u, 5.0).tolist() == [[3.0 + 5.0 * (1.0 - 3.0), 2.0 + 5.0 * (4.0 - 2.0)]]
    assert torch.equal(cfg_mix(c, u, 1.0), c) and torch.equal(cfg_mix(c, u, 0.0), u)


def test_force_tokens_keeps_only_the_allowed_ids():
    logits = torch.tensor([[0.5, 9.0, 1.5, 2.5], [3.0, 1.0, -2.0, 0.0]])
    out = force_tokens(logits, [2, 3])
    inf = float("-inf")
    assert out.tolist() == [[inf, inf, 1.5, 2.5], [inf, inf, -2.0, 0.0]]
    assert force_tokens(logits, torch.tensor([0])).tolist() == [[0.5, inf, inf, inf], [3.0, inf, inf, inf]]
    gen = torch.Generator().manual_seed(0)
    assert set(sample(out, Sampling(), gen).tolist()) <= {2, 3}
