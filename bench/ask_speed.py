"""Ask speed, measured against transformers' own understanding path in the same run (a benchmark, not a test).

On one tiny random model of the real geometry (576 image tokens per image), a batch of images each asked a
question, greedy, ``--tokens`` answer tokens (or fewer where a row writes EOS: both stop there alike):
  (a) ``JanusR1.ask`` -- our prompt, SigLIP rows and THE decode loop (static KV cache on the CPU);
  (b) ``JanusForConditionalGeneration.generate`` on ``JanusProcessor`` inputs (same prompt ids, same pixels).
Both include the SigLIP encoder and the prefill. The last line printed is one JSON object with ``ours_s``,
``transformers_s`` (best of ``--repeats``), ``ratio`` (= a/b) and ``same_tokens`` (the answers are equal).
"""

from __future__ import annotations

import argparse
import inspect
import json
import time

import numpy as np
import torch
from PIL import Image

from janus_r1 import JanusR1
from janus_r1.model import vocabulary as V
from janus_r1.model.tiny import build_tiny_model
from janus_r1.model.vocabulary import Vocabulary

QUESTION = "Describe this image in detail."


def best(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def processor(tok, n_tokens: int, size: int):
    """transformers' JanusProcessor with its default system prompt (the understanding prompt DeepSeek builds)."""
    from transformers import JanusProcessor

    try:
        from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil as Images
    except ImportError:
        from transformers import JanusImageProcessor as Images
    pixels = Images(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    kw = dict(tokenizer_object=tok.backend_tokenizer, bos_token=V.BOS, eos_token=V.EOS, pad_token=V.PAD,
              padding_side="left",
              extra_special_tokens={"image_token": V.IMAGE_PLACEHOLDER, "boi_token": V.BOI, "eoi_token": V.EOI})
    if "num_image_tokens" in inspect.signature(JanusProcessor.__init__).parameters:
        from transformers import PreTrainedTokenizerFast

        return JanusProcessor(pixels, PreTrainedTokenizerFast(**kw), use_default_system_prompt=True,
                              num_image_tokens=n_tokens)
    from transformers import LlamaTokenizerFast  # 4.5x: 576 image tokens, the LLaMA tokenizer class

    return JanusProcessor(pixels, LlamaTokenizerFast(**kw, add_bos_token=True), use_default_system_prompt=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=4, help="images asked about together (default 4)")
    ap.add_argument("--tokens", type=int, default=32, help="answer tokens per image (default 32)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = build_tiny_model("real", seed=0)
    jr = JanusR1(model, Vocabulary(tok), runner="eager")
    size, n = jr.image_size, jr.num_image_tokens
    rng = np.random.default_rng(0)
    pics = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(args.images)]
    proc = processor(tok, n, size)
    ids = jr.vocab.ids

    def ours():
        return [a.ids for a in jr.ask(pics, QUESTION, max_new_tokens=args.tokens)]

    def theirs():
        inputs = proc(text=[f"<|User|>: <image_placeholder>\n{QUESTION}\n\n<|Assistant|>:"] * len(pics),
                      images=pics, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=args.tokens,
                                 do_sample=False, eos_token_id=ids.eos, pad_token_id=ids.pad)
        return out[:, inputs["input_ids"].shape[1]:].tolist()

    ours_s, a = best(ours, args.repeats)
    theirs_s, b = best(theirs, args.repeats)
    print(f"ours:         {ours_s:.3f} s for {args.images} images x {args.tokens} tokens")
    print(f"transformers: {theirs_s:.3f} s")
    print(json.dumps({"ours_s": round(ours_s, 4), "transformers_s": round(theirs_s, 4),
                      "ratio": round(ours_s / theirs_s, 3), "same_tokens": a == b, "images": args.images,
                      "tokens": args.tokens}))


if __name__ == "__main__":
    main()
