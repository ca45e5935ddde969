"""Text to Image, CoT Generate (the paper's introspective text-to-image) and Best of N."""

from __future__ import annotations

from comfy_api.latest import io

from . import text, widgets
from .images import to_image
from .outputs import introspection, introspection_outputs, ranked_sheet, record_for_png, sample_record, shown
from .run import running, sampling, text_sampling
from .work import Work


class TextToImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return widgets.schema(
            node_id="JanusR1TextToImage",
            display_name="Janus-R1 Text to Image",
            category=widgets.CATEGORY_GENERATE,
            description="Plain Janus-Pro generation: one pass of image tokens per picture, no self-check.",
            search_aliases=["janus generate", "janus t2i"],
            inputs=[
                widgets.JanusModel.Input("model"),
                widgets.prompt_input(),
                widgets.seed_input(),
                *widgets.sampling_inputs(),
                io.Int.Input(
                    "batch_size",
                    default=1,
                    min=1,
                    max=16,
                    tooltip="Images to draw for the prompt (each pair of CFG rows costs memory).",
                ),
                widgets.max_prompt_tokens_input(),
                *widgets.decoding_inputs(),
            ],
            outputs=[
                io.Image.Output(
                    "image", display_name="image", tooltip="The generated images (384x384 for Janus-Pro)."
                )
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, prompt=None):
        return widgets.require_text("prompt", prompt) or True

    @classmethod
    def execute(
        cls,
        model,
        prompt,
        seed,
        cfg,
        temperature,
        top_k,
        top_p,
        batch_size,
        max_prompt_tokens=widgets.DEFAULTS.MAX_PROMPT_TOKENS,
        decoding="ar",
        jacobi_window=16,
    ) -> io.NodeOutput:
        jr = model.ready("text_to_image", batch=batch_size, prompt_tokens=max_prompt_tokens)
        with running(cls, jr, Work(images=1)) as hooks:
            results = jr.text_to_image(
                prompt,
                num_images=batch_size,
                seed=seed,
                hooks=hooks,
                max_prompt_tokens=max_prompt_tokens,
                **sampling(cfg, temperature, top_k, top_p, decoding, jacobi_window),
            )
        images = to_image([r.image for r in results])
        return io.NodeOutput(images, ui=shown(cls, images))


class CoTGenerate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return widgets.schema(
            node_id="JanusR1CoTGenerate",
            display_name="Janus-R1 CoT Generate",
            category=widgets.CATEGORY_GENERATE,
            description="Janus-Pro-R1's introspective text-to-image: draw, judge the picture against the prompt, "
            "write why it fails and redraw, until the model answers Yes or max_rounds images exist.",
            search_aliases=["janus r1", "introspective", "reflect", "chain of thought", "cot"],
            is_output_node=True,
            inputs=[
                widgets.JanusModel.Input("model"),
                widgets.prompt_input(),
                widgets.seed_input(),
                io.Int.Input(
                    "max_rounds",
                    default=widgets.DEFAULTS.MAX_ROUNDS,
                    min=1,
                    max=10,
                    tooltip="Most images per prompt, the first included (paper: 3). 1 = draw and judge once.",
                ),
                *widgets.sampling_inputs(),
                *widgets.reflection_inputs(),
                io.Int.Input(
                    "batch_size",
                    default=1,
                    min=1,
                    max=8,
                    tooltip="Independent samples of the prompt, each with its own rounds.",
                ),
                widgets.final_input(),
                widgets.max_prompt_tokens_input(),
                *widgets.decoding_inputs(),
            ],
            outputs=introspection_outputs(
                "image",
                "The final image of each sample: the one the model accepted, else by the final rule.",
                "Every image drawn, in order, all samples.",
                with_rounds=True,
            ),
            hidden=[io.Hidden.unique_id, io.Hidden.extra_pnginfo],
        )

    @classmethod
    def validate_inputs(cls, prompt=None):
        return widgets.require_text("prompt", prompt) or True

    @classmethod
    def execute(
        cls,
        model,
        prompt,
        seed,
        max_rounds,
        cfg,
        temperature,
        top_k,
        top_p,
        text_top_k,
        max_reflection,
        batch_size,
        final="last",
        max_prompt_tokens=widgets.DEFAULTS.MAX_PROMPT_TOKENS,
        decoding="ar",
        jacobi_window=16,
    ) -> io.NodeOutput:
        final = widgets.final_rule(final)
        jr = model.ready(
            "generate", batch=batch_size, rounds=max_rounds, reflection=max_reflection, prompt_tokens=max_prompt_tokens
        )
        # every round draws an image and judges it
        with running(cls, jr, Work(images=max_rounds, texts=max_rounds, text_steps=max_reflection)) as hooks:
            results = jr.generate(
                prompt,
                num_images=batch_size,
                max_rounds=max_rounds,
                seed=seed,
                hooks=hooks,
                final=final,
                max_reflection=max_reflection,
                max_prompt_tokens=max_prompt_tokens,
                text_sampling=text_sampling(text_top_k),
                **sampling(cfg, temperature, top_k, top_p, decoding, jacobi_window),
            )
        return introspection(cls, results, jr.image_size, header="sample", with_rounds=True)


class BestOfN(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return widgets.schema(
            node_id="JanusR1BestOfN",
            display_name="Janus-R1 Best of N",
            category=widgets.CATEGORY_GENERATE,
            description="Inference-time scaling: draw N candidates and rank them by the model's own "
            "image-prompt consistency score S = P(Yes) / (P(Yes) + P(No)).",
            search_aliases=["janus rank", "best of n", "rerank"],
            is_output_node=True,
            inputs=[
                widgets.JanusModel.Input("model"),
                widgets.prompt_input(),
                widgets.seed_input(),
                io.Int.Input("n", default=widgets.DEFAULTS.BEST_OF_N, min=1, max=32, tooltip="Candidates to draw and score."),
                *widgets.sampling_inputs(),
                widgets.max_prompt_tokens_input(),
                *widgets.decoding_inputs(),
            ],
            outputs=[
                io.Image.Output("best", display_name="best", tooltip="The highest-scoring candidate."),
                io.Image.Output(
                    "candidates", display_name="candidates", tooltip="All candidates, best first."
                ),
                io.Float.Output(
                    "scores",
                    display_name="scores",
                    is_output_list=True,
                    tooltip="Scores S in [0, 1], best first (exact; the report rounds them).",
                ),
                io.String.Output(
                    "report", display_name="report", tooltip="One line per candidate: rank and score."
                ),
                io.Image.Output(
                    "sheet",
                    display_name="sheet",
                    tooltip="Every candidate in a grid, best first, captioned with its rank and S; #1 framed.",
                ),
            ],
            hidden=[io.Hidden.unique_id, io.Hidden.extra_pnginfo],
        )

    @classmethod
    def validate_inputs(cls, prompt=None):
        return widgets.require_text("prompt", prompt) or True

    @classmethod
    def execute(
        cls,
        model,
        prompt,
        seed,
        n,
        cfg,
        temperature,
        top_k,
        top_p,
        max_prompt_tokens=widgets.DEFAULTS.MAX_PROMPT_TOKENS,
        decoding="ar",
        jacobi_window=16,
    ) -> io.NodeOutput:
        jr = model.ready("best_of_n", batch=n, prompt_tokens=max_prompt_tokens)
        with running(cls, jr, Work(images=1)) as hooks:  # the n candidates in one batch, then S (no tokens)
            results, scores = jr.best_of_n(
                prompt,
                n=n,
                seed=seed,
                hooks=hooks,
                max_prompt_tokens=max_prompt_tokens,
                **sampling(cfg, temperature, top_k, top_p, decoding, jacobi_window),
            )
        report = "\n".join(
            f"#{k}: S={text.score(s)} (candidate {r.index + 1})"
            for k, (r, s) in enumerate(zip(results, scores), 1)
        )
        images = to_image([r.image for r in results])
        record_for_png(cls, "best_of_n", [dict(sample_record(r), rank=k) for k, r in enumerate(results, 1)])
        return io.NodeOutput(
            images[:1],
            images,
            [float(s) for s in scores],
            report,
            ranked_sheet(results),
            ui=shown(cls, images[:1], report),  # the pick, as returned: not the last row's live preview
        )


NODES = [TextToImage, CoTGenerate, BestOfN]
