"""Ask: a question about each image -> the model's answer as text, one STRING per image (Janus's understanding).

Pipeline builders caption an image into another model's prompt with it; ``image_b`` shows a second image with
each question, to compare two. By default each answer is kept to a Janus-R1 prompt's 200-token budget
(``prompt_budget``), so Ask -> CoT Generate runs with the widgets as they come.
"""

from __future__ import annotations

from comfy_api.latest import io, ui

from . import text, widgets
from .images import to_pils
from .run import running
from .work import Work


class Ask(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return widgets.schema(
            node_id="JanusR1Ask",
            display_name="Janus-R1 Ask",
            category=widgets.CATEGORY_ASK,
            description="Ask the model a question about each image -- by default it describes the image in "
            "detail -- and get its answer as text, one per image (a list: nodes fed by it run once per "
            "answer). With image_b, both images are shown with the question, to compare them. A long answer "
            "is kept to prompt_budget (200 tokens, what Text to Image, CoT Generate and Judge accept as a "
            "prompt): it stops at that length and ends at its last whole sentence; the node's text says "
            "when. Set prompt_budget to 0 for answers up to max_new_tokens.",
            search_aliases=["janus describe", "caption", "image to text", "interrogate", "vqa", "understanding"],
            is_output_node=True,
            inputs=[
                widgets.JanusModel.Input("model"),
                io.Image.Input("image", tooltip="One image or a batch, any size; one answer per image."),
                io.Image.Input(
                    "image_b",
                    optional=True,
                    tooltip="Optional second image, shown after the first with every question (compare two): "
                    "one image for the whole batch, or one per image.",
                ),
                *widgets.ask_inputs(),
                widgets.prompt_budget_input(),
            ],
            outputs=[
                io.String.Output(
                    "text",
                    display_name="text",
                    is_output_list=True,
                    tooltip="The answer per image, in batch order.",
                )
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, question=None):
        return widgets.require_text("question", question) or True

    @classmethod
    def execute(
        cls,
        model,
        image,
        question,
        seed,
        max_new_tokens,
        temperature,
        top_p,
        image_b=None,
        prompt_budget=widgets.DEFAULTS.MAX_PROMPT_TOKENS,
    ) -> io.NodeOutput:
        pils = to_pils(image)
        second = None if image_b is None else to_pils(image_b, "image_b")
        if second is not None and len(second) not in (1, len(pils)):  # named as the node's inputs are
            raise ValueError(
                f"Janus-R1: image_b has {len(second)} images but image has {len(pils)}; give one image_b for "
                "all, or one per image."
            )
        jr = model.ready(
            "ask",
            batch=len(pils),
            images=1 if second is None else 2,
            max_new_tokens=max_new_tokens,
            question=question,
        )
        most = min(max_new_tokens, prompt_budget) if prompt_budget else max_new_tokens
        with running(cls, jr, Work(texts=1, text_steps=most)) as hooks:
            answers = jr.ask(
                pils,
                question,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                seed=seed,
                hooks=hooks,
                images_b=second,
                prompt_budget=prompt_budget,
            )
        texts = [a.text for a in answers]
        return io.NodeOutput(texts, ui=ui.PreviewText(text.answers(answers, prompt_budget)))


NODES = [Ask]
