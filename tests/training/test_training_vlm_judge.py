"""The `vlm:PATH` reward end to end on a real transformers vision-language model saved to disk.

The VLM is transformers' own Janus (an ``AutoModelForImageTextToText``) with random micro weights and a
``JanusProcessor`` with a chat template -- any VLM with a processor and a chat template goes the same way.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from janus_r1.model import vocabulary as V
from janus_r1.model.tiny import build_tiny_model
from janus_r1.training.rewards import QUESTION_WITH_CAPTION, VLMJudge, make_reward

TEMPLATE = (
    "{% for m in messages %}<|User|>: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image_placeholder>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n\n{% endfor %}<|Assistant|>:"
)


def build_tiny_vlm(d):
    """Save transformers' Janus (micro random weights) with a ``JanusProcessor`` and chat template to ``d``."""
    from transformers import JanusProcessor, PreTrainedTokenizerFast

    try:  # transformers 5.x: the PIL backend; 4.5x: the one image processor
        from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil
    except ImportError:
        from transformers import JanusImageProcessor as JanusImageProcessorPil

    import inspect

    # transformers 4.5x's JanusProcessor hard-codes 576 image tokens: there the judge is the tiny model of the real
    # 576-token geometry (384 px), elsewhere the micro one (16 tokens, 64 px).
    legacy = "num_image_tokens" not in inspect.signature(JanusProcessor.__init__).parameters
    model, tok = build_tiny_model("real" if legacy else "micro", seed=5)
    size, n = model.config.vision_config.image_size, model.config.vision_config.num_image_tokens
    images = JanusImageProcessorPil(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    kw = dict(
        tokenizer_object=tok.backend_tokenizer, bos_token=V.BOS, eos_token=V.EOS, pad_token=V.PAD,
        padding_side="left",
        extra_special_tokens={"image_token": V.IMAGE_PLACEHOLDER, "boi_token": V.BOI, "eoi_token": V.EOI},
    )
    if legacy:  # and insists on the LLaMA tokenizer class
        from transformers import LlamaTokenizerFast

        proc = JanusProcessor(image_processor=images, tokenizer=LlamaTokenizerFast(**kw, add_bos_token=False),
                              chat_template=TEMPLATE)
    else:
        proc = JanusProcessor(image_processor=images, tokenizer=PreTrainedTokenizerFast(**kw),
                              chat_template=TEMPLATE, num_image_tokens=n)
    model.save_pretrained(d)
    proc.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    return build_tiny_vlm(tmp_path_factory.mktemp("vlm"))


def test_vlm_reward_is_p_yes_over_p_yes_plus_no_of_the_first_answer_token(vlm_dir):
    judge = make_reward(f"vlm:{vlm_dir}")
    assert isinstance(judge, VLMJudge)
    img = Image.new("RGB", (50, 40), (255, 0, 0))
    [s] = judge.score([img], ["a red square"])
    # independent recomputation with the model and processor
    q = QUESTION_WITH_CAPTION.format(caption="a red square")
    text = judge.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}], add_generation_prompt=True
    )
    inputs = judge.processor(images=[img], text=text, return_tensors="pt")
    n_image = judge.model.config.vision_config.num_image_tokens  # 16, or 576 on transformers 4.5x (see above)
    assert int((inputs["input_ids"] == judge.processor.tokenizer.convert_tokens_to_ids(V.IMAGE_PLACEHOLDER)).sum()) == n_image
    with torch.no_grad():
        probs = torch.softmax(judge.model(**inputs).logits[0, -1].float(), -1)
    p_yes, p_no = probs[judge.yes].sum(), probs[judge.no].sum()
    assert s == pytest.approx(float(p_yes / (p_yes + p_no)), abs=1e-5) and 0 < s < 1
    # question decomposition: the mean over the sub-questions
    judge.decompose = lambda p: [f"Is there {p}?", "Is it red?"]
    [s2] = judge.score([img], ["a red square"])
    assert s2 != s and 0 < s2 < 1
    [(flw, psv)] = judge.score_edit([img], [Image.new("RGB", (50, 40), (0, 0, 255))], ["make it blue"])
    assert 0 < flw < 1 and 0 < psv < 1
