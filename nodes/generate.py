"""Text to Image, CoT Generate (the paper's introspective text-to-image) and Best of N."""

from __future__ import annotations

from comfy_api.latest import io, ui

from . import glue


def _sampling_kwargs(cfg, temperature, top_k, top_p) -> dict:
    return dict(cfg=float(cfg), temperature=float(temperature), top_k=int(top_k), top_p=float(top_p))


class TextToImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return glue.schema(
            node_id="JanusR1TextToImage",
            display_name="Janus-R1 Text to Image",
            description="Plain Janus-Pro generation: one pass of image tokens per picture, no self-check.",
            search_aliases=["janus generate", "janus t2i"],
            inputs=[
                glue.JanusModel.Input("model"),
                glue.prompt_input(),
                glue.seed_input(),
                *glue.sampling_inputs(),
                io.Int.Input(
                    "batch_size",
                    default=1,
                    min=1,
                    max=16,
                    tooltip="Images to draw for the prompt (each pair of CFG rows costs memory).",
                ),
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
        return glue.require_text("prompt", prompt) or True

    @classmethod
    def execute(cls, model, prompt, seed, cfg, temperature, top_k, top_p, batch_size) -> io.NodeOutput:
        jr = model.ready(
            rows=2 * batch_size,
            context_tokens=256,
            new_tokens=model.jr.num_image_tokens,
            images_out=batch_size,
        )
        hooks = glue.RunHooks(jr, glue.node_id(cls))
        results = hooks.run(
            jr.text_to_image,
            prompt,
            num_images=batch_size,
            seed=seed,
            **_sampling_kwargs(cfg, temperature, top_k, top_p),
        )
        return io.NodeOutput(glue.to_image([r.image for r in results]))


class CoTGenerate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return glue.schema(
            node_id="JanusR1CoTGenerate",
            display_name="Janus-R1 CoT Generate",
            description="Janus-Pro-R1's introspective text-to-image: draw, judge the picture against the prompt, "
            "write why it fails and redraw, until the model answers Yes or max_rounds images exist.",
            search_aliases=["janus r1", "introspective", "reflect", "chain of thought", "cot"],
            is_output_node=True,
            inputs=[
                glue.JanusModel.Input("model"),
                glue.prompt_input(),
                glue.seed_input(),
                io.Int.Input(
                    "max_rounds",
                    default=glue.DEFAULT_MAX_ROUNDS,
                    min=1,
                    max=10,
                    tooltip="Most images per prompt, the first included (paper: 3). 1 = draw and judge once.",
                ),
                *glue.sampling_inputs(),
                *glue.reflection_inputs(),
                io.Int.Input(
                    "batch_size",
                    default=1,
                    min=1,
                    max=8,
                    tooltip="Independent samples of the prompt, each with its own rounds.",
                ),
            ],
            outputs=[
                io.Image.Output(
                    "image",
                    display_name="image",
                    tooltip="The final image of each sample (the one the model accepted, else the last).",
                ),
                io.Image.Output(
                    "attempts", display_name="attempts", tooltip="Every image drawn, in order, all samples."
                ),
                io.String.Output(
                    "reasoning",
                    display_name="reasoning",
                    tooltip="Each attempt's verdict, score and reflection.",
                ),
                io.Float.Output(
                    "score",
                    display_name="score",
                    tooltip="Self-evaluation score S in [0, 1] of the final image (mean over the batch).",
                ),
                io.Int.Output(
                    "rounds", display_name="rounds", tooltip="Images drawn (the most over the batch)."
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
    ) -> io.NodeOutput:
        jr0 = model.jr
        jr = model.ready(
            rows=2 * batch_size,
            context_tokens=glue.context_budget(jr0, max_rounds, max_reflection),
            new_tokens=0,  # the budget already counts the last phase's image or reflection
            images_out=batch_size,
        )
        hooks = glue.RunHooks(jr, glue.node_id(cls))
        results = hooks.run(
            jr.generate,
            prompt,
            num_images=batch_size,
            max_rounds=max_rounds,
            seed=seed,
            text_top_k=text_top_k,
            max_reflection=max_reflection,
            **_sampling_kwargs(cfg, temperature, top_k, top_p),
        )
        reasoning = _reasoning(results)
        scores = [r.final_attempt.score for r in results if r.final_attempt.score is not None]
        score = float(sum(scores) / len(scores)) if scores else 0.0
        rounds = max(r.rounds for r in results)
        return io.NodeOutput(
            glue.to_image([r.image for r in results]),
            glue.to_image([a.image for r in results for a in r.attempts]),
            reasoning,
            score,
            rounds,
            ui=ui.PreviewText(reasoning),
        )


def _reasoning(results) -> str:
    if len(results) == 1:
        r = results[0]
        return f"{r.reasoning()}\n=> final: image {r.final_attempt.round} of {len(r.attempts)}"
    parts = []
    for n, r in enumerate(results, 1):
        parts.append(
            f"== sample {n} ==\n{r.reasoning()}\n=> final: image {r.final_attempt.round} of {len(r.attempts)}"
        )
    return "\n\n".join(parts)


class BestOfN(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return glue.schema(
            node_id="JanusR1BestOfN",
            display_name="Janus-R1 Best of N",
            description="Inference-time scaling: draw N candidates and rank them by the model's own "
            "image-prompt consistency score S = P(Yes) / (P(Yes) + P(No)).",
            search_aliases=["janus rank", "best of n", "rerank"],
            is_output_node=True,
            inputs=[
                glue.JanusModel.Input("model"),
                glue.prompt_input(),
                glue.seed_input(),
                io.Int.Input("n", default=4, min=1, max=32, tooltip="Candidates to draw and score."),
                *glue.sampling_inputs(),
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
                    tooltip="Scores S in [0, 1], best first.",
                ),
                io.String.Output(
                    "report", display_name="report", tooltip="One line per candidate: rank and score."
                ),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, prompt=None):
        return glue.require_text("prompt", prompt) or True

    @classmethod
    def execute(cls, model, prompt, seed, n, cfg, temperature, top_k, top_p) -> io.NodeOutput:
        jr = model.ready(rows=2 * n, context_tokens=256, new_tokens=model.jr.num_image_tokens, images_out=n)
        hooks = glue.RunHooks(jr, glue.node_id(cls))
        results, scores = hooks.run(
            jr.best_of_n, prompt, n=n, seed=seed, **_sampling_kwargs(cfg, temperature, top_k, top_p)
        )
        report = "\n".join(
            f"#{k}: S={s:.3f} (candidate {r.index + 1})" for k, (r, s) in enumerate(zip(results, scores), 1)
        )
        images = glue.to_image([r.image for r in results])
        return io.NodeOutput(
            images[:1], images, [float(s) for s in scores], report, ui=ui.PreviewText(report)
        )


NODES = [TextToImage, CoTGenerate, BestOfN]
