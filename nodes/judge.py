"""Judge (the semantic scorer, for images from any source) and Regenerate (judge, reflect, redraw)."""

from __future__ import annotations

from comfy_api.latest import io, ui

from . import glue


class Judge(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return glue.schema(
            node_id="JanusR1Judge",
            display_name="Janus-R1 Judge",
            description="Ask the model whether each image matches the prompt: score S = P(Yes) / (P(Yes) + "
            "P(No)) in [0, 1], the Yes/No verdict and the written reason. Works on images from any "
            "model, any size (shown to the model letterboxed to a square).",
            search_aliases=["janus score", "image score", "vqa score", "rank images", "semantic score"],
            is_output_node=True,
            inputs=[
                glue.JanusModel.Input("model"),
                io.Image.Input("images", tooltip="One image or a batch; each is judged on its own."),
                glue.prompt_input(tooltip="The prompt the images should match."),
                glue.seed_input("Seed for the written reflection (the score itself is deterministic)."),
                io.Int.Input(
                    "max_reflection",
                    default=glue.DEFAULT_MAX_REFLECTION,
                    min=0,
                    max=1024,
                    tooltip="Most tokens of the written reason. 0 = score only (fast, deterministic).",
                ),
                io.Int.Input(
                    "text_top_k",
                    default=glue.DEFAULT_TEXT_TOP_K,
                    min=1,
                    max=1000,
                    tooltip="Top-k for the written reason (paper: 50).",
                ),
            ],
            outputs=[
                io.Image.Output(
                    "ranked", display_name="ranked", tooltip="The input images sorted by score, best first."
                ),
                io.Float.Output(
                    "scores",
                    display_name="scores",
                    is_output_list=True,
                    tooltip="Score S in [0, 1] per image, input order.",
                ),
                io.String.Output(
                    "verdicts",
                    display_name="verdicts",
                    is_output_list=True,
                    tooltip="'Yes' or 'No' per image, input order.",
                ),
                io.String.Output(
                    "reflections",
                    display_name="reflections",
                    is_output_list=True,
                    tooltip="The model's reason per image.",
                ),
                io.String.Output(
                    "report", display_name="report", tooltip="All of the above as text, one line per image."
                ),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, prompt=None):
        return glue.require_text("prompt", prompt) or True

    @classmethod
    def execute(cls, model, images, prompt, seed, max_reflection, text_top_k) -> io.NodeOutput:
        pils = glue.to_pils(images)
        jr0 = model.jr
        jr = model.ready(
            rows=len(pils), context_tokens=256 + jr0.num_image_tokens, new_tokens=max(max_reflection, 1)
        )
        hooks = glue.RunHooks(jr, glue.node_id(cls))
        judgements = hooks.run(
            jr.judge, pils, prompt, max_reflection=max_reflection, text_top_k=text_top_k, seed=seed
        )
        scores = [float(j.score) for j in judgements]
        order = sorted(range(len(pils)), key=lambda i: -scores[i])
        report = glue.format_scores(
            [
                (i + 1, j.score, j.verdict, j.reflection if max_reflection else "")
                for i, j in enumerate(judgements)
            ]
        )
        if len(order) > 1:
            report += "\nranking (best first): " + ", ".join(f"image {i + 1}" for i in order)
        batch = images if images.ndim == 4 else images.unsqueeze(0)
        return io.NodeOutput(
            glue.to_intermediate(batch[order]),
            scores,
            [j.verdict for j in judgements],
            [j.reflection for j in judgements],
            report,
            ui=ui.PreviewText(report),
        )


class Regenerate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return glue.schema(
            node_id="JanusR1Regenerate",
            display_name="Janus-R1 Regenerate",
            description="Improve an image made elsewhere: the model judges it against the prompt (or takes your "
            "critique), writes what is wrong and redraws, up to max_rounds images. An image it "
            "accepts comes back unchanged unless always_redraw is on.",
            search_aliases=["janus refine", "reflect and redraw", "fix image"],
            is_output_node=True,
            inputs=[
                glue.JanusModel.Input("model"),
                io.Image.Input(
                    "image",
                    tooltip="Image(s) from any source; centre-cropped to a square for the "
                    "model's image tokens.",
                ),
                glue.prompt_input(tooltip="What the image should show."),
                io.String.Input(
                    "critique",
                    multiline=True,
                    default="",
                    optional=True,
                    tooltip="Optional: what is wrong with the image, in your words. Empty = the "
                    "model writes its own.",
                ),
                glue.seed_input(),
                io.Int.Input(
                    "max_rounds",
                    default=2,
                    min=2,
                    max=10,
                    tooltip="Most images per input, the input counting as the first (2 = one redraw).",
                ),
                io.Boolean.Input(
                    "always_redraw",
                    default=False,
                    tooltip="Redraw even when the model judges the input image as matching.",
                ),
                *glue.sampling_inputs(),
                *glue.reflection_inputs(),
            ],
            outputs=[
                io.Image.Output(
                    "final",
                    display_name="image",
                    tooltip="The final image per input (the input itself if accepted).",
                ),
                io.Image.Output(
                    "attempts",
                    display_name="attempts",
                    tooltip="Every image: the input (as the model sees it) and the redraws.",
                ),
                io.String.Output(
                    "reasoning",
                    display_name="reasoning",
                    tooltip="Each attempt's verdict, score and reflection.",
                ),
                io.Float.Output(
                    "score",
                    display_name="score",
                    tooltip="Score S in [0, 1] of the final image (mean over the batch).",
                ),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, prompt=None):
        return glue.require_text("prompt", prompt) or True

    @classmethod
    def execute(
        cls,
        model,
        image,
        prompt,
        seed,
        max_rounds,
        always_redraw,
        cfg,
        temperature,
        top_k,
        top_p,
        text_top_k,
        max_reflection,
        critique="",
    ) -> io.NodeOutput:
        pils = glue.to_pils(image)
        jr0 = model.jr
        jr = model.ready(
            rows=2 * len(pils),
            context_tokens=glue.context_budget(jr0, max_rounds, max_reflection),
            new_tokens=0,  # the budget already counts the last phase's image or reflection
            images_out=len(pils),
        )
        hooks = glue.RunHooks(jr, glue.node_id(cls))
        critiques = critique if isinstance(critique, str) and critique.strip() else None
        results = hooks.run(
            jr.regenerate,
            pils,
            prompt,
            critiques=critiques,
            max_rounds=max_rounds,
            seed=seed,
            cfg=float(cfg),
            temperature=float(temperature),
            top_k=int(top_k),
            top_p=float(top_p),
            text_top_k=text_top_k,
            max_reflection=max_reflection,
            redraw_if_accepted=bool(always_redraw),
        )
        size = jr.image_size
        finals = [_square(r.image, size) for r in results]
        attempts = [_square(a.image, size) for r in results for a in r.attempts]
        reasoning = "\n\n".join(
            (f"== image {n} ==\n" if len(results) > 1 else "")
            + r.reasoning()
            + f"\n=> final: image {r.final_attempt.round}{' (the input, accepted)' if r.final == 0 else ''}"
            for n, r in enumerate(results, 1)
        )
        scores = [r.final_attempt.score for r in results if r.final_attempt.score is not None]
        score = float(sum(scores) / len(scores)) if scores else 0.0
        return io.NodeOutput(
            glue.to_image(finals), glue.to_image(attempts), reasoning, score, ui=ui.PreviewText(reasoning)
        )


def _square(img, size: int):
    """Inputs come back as the model saw them for drawing (centre crop to a square of the model's size), so the
    input and the redraws stack into one IMAGE batch."""
    from PIL import Image

    if img.size == (size, size):
        return img
    w, h = img.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return img.crop(box).resize((size, size), Image.BICUBIC)


NODES = [Judge, Regenerate]
