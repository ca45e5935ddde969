"""A faithful re-implementation of the released scripts' inference loop, written from the spec, as a baseline.

What the reference `inference/inference.py` / RL rollout does (spec §2.1–§2.4, bugs B3, B5, B9 kept on purpose):
eager ``DynamicCache`` through the full ``language_model`` call with a mask grown by ``torch.cat`` each step;
all-ones prefix masks; the first image decoded to uint8 and *re-encoded* by the VQ encoder; every row
regenerated whether judged "Yes" or not, then image 1 kept where the verdict was "Yes". One judge + one
regeneration (T = 2 images), reflections capped at 80 tokens. Sampling uses our sampler (same seeds).
"""

from __future__ import annotations

import torch

from janus_r1.generation import images as imgs
from janus_r1.generation import vq
from janus_r1.generation.decode import cache_keyword
from janus_r1.generation.sampling import Sampling, cfg_mix, force_tokens, make_generator, sample
from janus_r1.model.vocabulary import t2i_prompt


def _lm(model, embeds, mask, cache):
    kw = cache_keyword()
    out = model.model.language_model(inputs_embeds=embeds, attention_mask=mask, use_cache=True, **{kw: cache})
    return out.last_hidden_state[:, -1], getattr(out, kw)


@torch.no_grad()
def _image_loop(model, embeds, mask, n, cfg, s, gen):
    h, cache = _lm(model, embeds, mask, None)
    out = []
    for t in range(n):
        logits = model.model.generation_head(h).float()
        tok = sample(cfg_mix(logits[0::2], logits[1::2], cfg), s, gen)
        out.append(tok)
        if t + 1 < n:
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            emb = model.prepare_embeddings_for_image_generation(tok.repeat_interleave(2).unsqueeze(-1))
            h, cache = _lm(model, emb, mask, cache)
    return torch.stack(out, dim=1)


@torch.no_grad()
def _text_loop(model, embeds, mask, max_len, s, gen, ids):
    h, cache = _lm(model, embeds, mask, None)
    rows = embeds.shape[0]
    finished = torch.zeros(rows, dtype=torch.bool, device=embeds.device)
    toks, bits = [], []
    for t in range(max_len):
        logits = model.lm_head(h).float()
        if t == 0:
            logits = force_tokens(logits, [ids.yes, ids.no])
        tok = sample(logits, s, gen)
        tok = torch.where(finished, torch.full_like(tok, ids.pad), tok)
        bit = ((tok != ids.eos) & ~finished).long()
        finished |= tok == ids.eos
        toks.append(tok)
        bits.append(bit)
        if bool(finished.all()):
            break
        mask = torch.cat([mask, bit[:, None]], dim=1)
        h, cache = _lm(model, model.get_input_embeddings()(tok)[:, None], mask, cache)
    return torch.stack(toks, 1), torch.stack(bits, 1)


@torch.no_grad()
def paper_loop(j, prompts: list[str], seed: int, image_sampling: Sampling, text_sampling: Sampling,
               cfg: float = 5.0, max_reflection: int = 80):
    """Returns the final codes (P, N) and the verdicts (P,) of the reference's one-round pipeline."""
    model, v = j.model, j.vocab
    ids = v.ids
    dev = j.device
    gen = make_generator(seed, dev)  # on the model's device, as the engine's own
    emb = model.get_input_embeddings()
    n = j.num_image_tokens
    enc = v.tokenizer([t2i_prompt(p) for p in prompts], return_tensors="pt", padding=True)
    input_ids, attn = enc.input_ids.to(dev), enc.attention_mask.to(dev)
    pairs = input_ids.repeat_interleave(2, 0)
    for r in range(1, pairs.shape[0], 2):  # uncond rows: PAD strictly between BOS and the last token
        start = int((attn[r // 2] == 0).sum()) + 1  # one host read per row, before any decoding
        pairs[r, start:-1] = ids.pad
    mask2 = attn.repeat_interleave(2, 0)
    codes1 = _image_loop(model, emb(pairs), mask2, n, cfg, image_sampling, gen)
    pics = imgs.to_pil(vq.decode(model.model.vqmodel, codes1))
    und = j.embed_und(pics)
    sc = torch.tensor(v.self_check_ids, device=dev)
    ctx = torch.cat([emb(input_ids), und, emb(sc).expand(len(prompts), -1, -1)], 1)
    refl, rmask = _text_loop(model, ctx, torch.ones(ctx.shape[:2], dtype=torch.long, device=dev), max_reflection,
                             text_sampling, gen, ids)
    yes = refl[:, 0] == ids.yes
    recoded = vq.encode(model.model.vqmodel, imgs.vq_pixels(pics, j.image_size))  # B3: decode -> re-encode
    trig = torch.tensor(v.regen_trigger_ids, device=dev)
    rows = []
    for i in range(len(prompts)):
        for r in (2 * i, 2 * i + 1):
            rows.append(torch.cat([emb(pairs[r]), j.embed_gen(recoded[i : i + 1])[0], emb(sc), emb(refl[i]),
                                   emb(trig)]))
    ctx2 = torch.stack(rows)
    m = torch.ones(ctx2.shape[:2], dtype=torch.long, device=dev)  # B5: all-ones prefix mask
    lp = pairs.shape[1] + n + len(sc)
    m[:, lp : lp + refl.shape[1]] = rmask.repeat_interleave(2, 0)
    codes2 = _image_loop(model, ctx2, m, n, cfg, image_sampling, gen)  # B9: every row regenerated
    imgs.to_pil(vq.decode(model.model.vqmodel, codes2))
    final = torch.where(yes[:, None], codes1, codes2)
    return final, yes
