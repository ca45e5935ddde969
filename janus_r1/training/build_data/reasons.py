"""build-data's reasons: a short reason per image from the judge that scored it, in the released data's
form and agreeing with S, and the released ``state`` codes."""

from __future__ import annotations

import re

from .prompts import chat_text

REASON_QUESTION = ('Does this image match the description "{caption}"? The answer is {answer}. '
                   "Give the reason in one short sentence.")
YES_DEFAULT = "the image matches the description."
NO_PREFIX = "the image does not match the description. Reason: "
NO_DEFAULT = "it does not show what the description asks for."


# --- scores, reasons, states ---------------------------------------------------------------------------------

_LEAD = re.compile(r"^\s*(yes|no)\b[\s,.:;!-]*", re.IGNORECASE)


def released_reason(yes: bool, text: str) -> str:
    """The released data's form: ``"Yes, <why>"`` or ``"No, the image does not match ... Reason: <why>"``."""
    body = " ".join((text or "").split())
    body = _LEAD.sub("", body)
    if yes:
        return "Yes, " + (body or YES_DEFAULT)
    if "reason:" in body.lower():
        return "No, " + body
    return "No, " + NO_PREFIX + (body or NO_DEFAULT)


def state_code(yes: bool, prob: float, thre: float) -> int:
    """The released codes (spec §3.1): 4 Yes & S >= thre, 3 Yes & S < thre, 1 No & S >= thre, 0 No & S < thre."""
    return (4 if prob >= thre else 3) if yes else (1 if prob >= thre else 0)


def explain(judge, images: list, prompts: list[str], scores: list[float], seed: int = 0) -> list[str]:
    """A short reason per image from the same judge, in the released form, agreeing with S (yes iff S >= 0.5)."""
    yes = [s >= 0.5 for s in scores]
    own, pairs = getattr(judge, "explain", None), getattr(judge, "judge", None)
    if callable(own):
        texts = list(own(images, prompts, scores))
    elif callable(pairs):  # a rule judge's (S, reason) per image
        texts = [reason for _, reason in pairs(images, prompts)]
    else:
        from ..judges import JanusJudge
        from ..rewards import VLMJudge
        from ..served_judge import OpenAIJudge

        if isinstance(judge, OpenAIJudge):
            texts = _explain_openai(judge, images, prompts, yes)
        elif isinstance(judge, VLMJudge):
            texts = [_explain_vlm(judge, im, p, y) for im, p, y in zip(images, prompts, yes)]
        elif isinstance(judge, JanusJudge):
            texts = _explain_janus(judge, images, prompts, yes, seed)
        else:
            texts = [""] * len(images)
    return [released_reason(y, t) for y, t in zip(yes, texts)]


def _reason_question(prompt: str, yes: bool) -> str:
    return REASON_QUESTION.format(caption=prompt, answer="yes" if yes else "no")


def _explain_openai(judge, images, prompts, yes) -> list[str]:
    from concurrent.futures import ThreadPoolExecutor

    from ..served_judge import png_data_url

    def one(job):
        im, p, y = job
        content = [{"type": "image_url", "image_url": {"url": png_data_url(im)}},
                   {"type": "text", "text": _reason_question(p, y)}]
        return chat_text(judge, content, 64)

    judge.served_model()
    with ThreadPoolExecutor(max(1, min(judge.concurrency, len(images)))) as pool:
        return list(pool.map(one, zip(images, prompts, yes)))


def _explain_vlm(judge, image, prompt: str, yes: bool) -> str:
    import torch

    content = [{"type": "image"}, {"type": "text", "text": _reason_question(prompt, yes)}]
    text = judge.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    inputs = judge.processor(images=[image], text=text, return_tensors="pt").to(judge.model.device)
    with torch.no_grad():
        ids = judge.model.generate(**inputs, max_new_tokens=48, do_sample=False)
    tok = getattr(judge.processor, "tokenizer", judge.processor)
    return tok.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def _explain_janus(judge, images, prompts, yes, seed: int, tries: int = 3) -> list[str]:
    """The Janus judge's own reflection (spec §2.2); its first token is sampled, so rows whose sampled verdict
    disagrees with S are drawn again (other seeds), and left to the default wording if they never agree."""
    from ...generation import tasks

    texts = [""] * len(images)
    todo = list(range(len(images)))
    for t in range(tries):
        if not todo:
            break
        js = tasks.judge(judge.janus, [images[i] for i in todo], [prompts[i] for i in todo], max_reflection=64,
                         seed=seed + t)
        left = []
        for i, jd in zip(todo, js):
            if (jd.verdict == "Yes") == yes[i]:
                texts[i] = jd.reflection
            else:
                left.append(i)
        todo = left
    return texts
