"""SFT on a micro model: rows equal the engine's inference contexts, label masks, loss goes down."""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn.functional as F

from janus_r1.generation import introspect as decode_phases
from janus_r1.generation import tasks
from janus_r1.generation.context import Embeds, Text, build
from janus_r1.training import data as D
from janus_r1.training import sft as S
from janus_r1.training.config import SFTConfig
from janus_r1.training.sequences import und_embeds
from janus_r1.training.toy import write_toy_edit, write_toy_t2i


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from janus_r1.model.tiny import build_tiny_model
    from janus_r1.model.vocabulary import Vocabulary

    model, tok = build_tiny_model("micro", seed=0)
    j = tasks.Janus(model, Vocabulary(tok))
    root = tmp_path_factory.mktemp("toy")
    recs, _ = D.load_t2i_labels([write_toy_t2i(root, n_prompts=2)], j.vocab)
    return j, recs, root


@pytest.fixture
def recorder(monkeypatch):
    """Every context the engine hands to the decode loop, in order."""
    seen = []
    for name in ("decode_image", "decode_text"):
        orig = getattr(decode_phases, name)

        def wrap(model, ctx, *a, _orig=orig, _name=name, **k):
            seen.append((_name, ctx))
            return _orig(model, ctx, *a, **k)

        monkeypatch.setattr(decode_phases, name, wrap)
    return seen


def _built(j, row):
    return build([row], j.model.get_input_embeddings(), j.vocab.ids.pad)


def _same(ctx_a, ctx_b, row_b=0):
    assert torch.equal(ctx_a.mask[0], ctx_b.mask[row_b])
    assert torch.allclose(ctx_a.embeds[0], ctx_b.embeds[row_b], atol=1e-6)


def test_rows_equal_the_inference_contexts(setup, recorder):
    """Task-I/II/III and editing rows are, token for token, what the engine feeds the decode loop."""
    j, recs, root = setup
    cache = S.ImageCache(j)
    prompt, img1 = recs[0].prompt, recs[0].images[4].path
    reason = "No, the image does not match the prompt. Reason: the dog is missing."
    with torch.no_grad():
        # regenerate an external image with a critique: image 2's context is Task-III's, image 2's judge Task-II's
        res = tasks.introspect(j, [prompt], max_rounds=2, start_images=[img1], critiques=[reason], seed=3,
                               max_reflection=4)
        (_, regen_ctx), (_, judge_ctx) = recorder[0], recorder[1]
        img2 = root / "img2.png"
        res[0].attempts[1].image.save(img2)
        row, _ = S.rows_for(j, j.model, [S.Sample("regen", prompt, target=img1, history=[(img1, reason)])], cache)
        _same(_built(j, row[0]), regen_ctx)
        dropped, _ = S.rows_for(j, j.model, [S.Sample("regen", prompt, target=img1, history=[(img1, reason)],
                                                      drop=True)], cache)
        _same(_built(j, dropped[0]), regen_ctx, row_b=1)  # prompt dropout == the CFG unconditional row
        row, _ = S.rows_for(j, j.model, [S.Sample("judge", prompt, current=str(img2), verdict="Yes",
                                                  history=[(img1, reason)])], cache)
        _same(_built(j, row[0]), judge_ctx)
        recorder.clear()
        tasks.text_to_image(j, [prompt], seed=0)
        row, _ = S.rows_for(j, j.model, [S.Sample("t2i", prompt, target=img1)], cache)
        _same(_built(j, row[0]), recorder[0][1])
        edit = write_toy_edit(root / "edit")
        er, _ = D.load_edit_rows([edit], j.vocab)
        recorder.clear()
        tasks.edit(j, [er[0].input], [er[0].instruction], seed=0)
        row, _ = S.rows_for(j, j.model, [S.Sample("edit", er[0].instruction, target=er[0].output,
                                                  source=er[0].input)], cache)
        _same(_built(j, row[0]), recorder[0][1])


def _independent_loss(j, row, target, kind, weight=None):
    """Standard causal-LM labels (-100 except the target span), shifted, CE over all positions."""
    model = j.model
    full = row + ([Embeds(model.prepare_embeddings_for_image_generation(target[None])[0])] if kind == "image"
                  else [Text(list(target))])
    ctx = _built(j, full)
    labels = torch.full(ctx.mask.shape, -100)
    labels[0, -len(target):] = torch.as_tensor(target)
    h = model.model.language_model(inputs_embeds=ctx.embeds, attention_mask=ctx.mask).last_hidden_state
    head = model.model.generation_head if kind == "image" else model.lm_head
    logits, lab = head(h[:, :-1]).float(), labels[:, 1:]
    ce = F.cross_entropy(logits.transpose(1, 2), lab, ignore_index=-100, reduction="none")[lab != -100]
    if weight is None:
        return ce.mean()
    return weight * ce[:1].mean() + (1 - weight) * ce[1:].mean()


@pytest.mark.parametrize("task", ["t2i", "judge", "regen", "edit"])
def test_loss_is_on_the_target_positions_only(setup, task):
    j, recs, root = setup
    cache = S.ImageCache(j)
    pools = S.Pools(recs, SFTConfig())
    if task == "edit":
        er, _ = D.load_edit_rows([write_toy_edit(root / "e2")], j.vocab)
        sample = S.draw_edit(er, random.Random(0), 0.0)
    else:
        sample = pools.draw(task, random.Random(1))
    rows, targets = S.rows_for(j, j.model, [sample], cache)
    kind = "text" if task == "judge" else "image"
    tgt = targets[0]
    with torch.no_grad():
        ours = S.sft_loss(j.model, j, [sample], cache)
        assert ours.item() == pytest.approx(_independent_loss(j, rows[0], tgt, kind).item(), rel=1e-5)
        if task == "judge":
            w = S.sft_loss(j.model, j, [sample], cache, yes_no_weight=0.8)
            assert w.item() == pytest.approx(_independent_loss(j, rows[0], tgt, kind, 0.8).item(), rel=1e-5)
            assert tgt[0] in (j.vocab.ids.yes, j.vocab.ids.no) and tgt[-1] == j.vocab.ids.eos


def test_frozen_siglip_trainable_aligner(setup):
    j, recs, _ = setup
    model = copy.deepcopy(j.model)
    from janus_r1.training.trainer import freeze_encoders

    freeze_encoders(model)
    pics = tasks.load_images([recs[0].images[0].path])
    e = und_embeds(model, pics, j.image_size)
    assert torch.allclose(e, tasks.Janus(model, j.vocab).embed_und(pics), atol=1e-6)
    e.sum().backward()
    assert model.model.aligner.fc1.weight.grad is not None
    assert all(p.grad is None for p in model.model.vision_model.parameters())


def test_a_few_steps_lower_the_loss_of_every_task(setup):
    j0, recs, _ = setup
    model = copy.deepcopy(j0.model).train()
    j = tasks.Janus(model, j0.vocab)
    cache = S.ImageCache(j)
    pools = S.Pools(recs, SFTConfig())
    rng = random.Random(0)
    batches = {t: [pools.draw(t, rng) for _ in range(2)] for t in S.TASKS}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3, betas=(0.9, 0.95))
    first = {t: S.sft_loss(model, j, b, cache).item() for t, b in batches.items()}
    for _ in range(4):
        for b in batches.values():
            S.sft_loss(model, j, b, cache, yes_no_weight=0.8).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
    last = {t: S.sft_loss(model, j, b, cache).item() for t, b in batches.items()}
    assert all(last[t] < first[t] - 0.05 for t in S.TASKS), (first, last)


def test_image_cache_encodes_a_batch_once_and_keeps_it_when_full(setup, monkeypatch):
    """One VQ call per batch of new images; a full cache keeps the batch's own codes (under ZeRO-3 a second encode
    in the same pass would differ between ranks); ``every`` runs the encoder once even when all is cached."""
    j, recs, _ = setup
    a, b, c = (recs[0].images[k].path for k in range(3))
    cache = S.ImageCache(j, max_items=2)
    calls = []
    real = j.encode_images
    monkeypatch.setattr(j, "encode_images", lambda ims: calls.append(len(ims)) or real(ims))
    first = cache.vq([a, b])
    cache.prepare([b, c])
    assert calls == [2, 1] and set(cache.codes) == {b, c}
    assert torch.equal(cache.vq([b])[0], first[1]) and calls == [2, 1]  # b kept, not re-encoded
    cache.prepare([b, c], every=True)
    assert calls == [2, 1, 1]  # the blank image: the encoder still ran once
