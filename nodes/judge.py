"""Judge (the semantic scorer, for images from any source) and Regenerate (judge, reflect, redraw)."""

from __future__ import annotations

from comfy_api.latest import io, ui

from . import text, widgets
from .images import to_intermediate, to_pils
from .outputs import introspection, introspection_outputs, record_for_png
from .run import running, sampling, text_sampling
from .work import Work


def judge_outputs() -> list:
    """Judge's outputs in slot order; ``best`` and ``best_index`` were appended (saved links address slots)."""
    return [
        io.Image.Output(
            "ranked",
            display_name="ranked",
            tooltip="The input images sorted by score, best first (letterboxed to one size when a list of "
            "images mixes sizes).",
        ),
        io.Float.Output(
            "scores",
            display_name="scores",
            is_output_list=True,
            tooltip="Score S in [0, 1] per image, input order (exact; the report rounds them).",
        ),
        io.String.Output(
            "verdicts",
            display_name="verdicts",
            is_output_list=True,
            tooltip="'Yes' or 'No' per image, input order: the answer the model wrote (sampled when "
            "max_reflection > 0, so it can disagree with S; with 0 it is Yes iff S >= 0.5).",
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
        io.Image.Output("best", display_name="best", tooltip="The highest-scoring image (first on ties)."),
        io.Int.Output(
            "best_index",
            display_name="best_index",
            tooltip="Its position among the input images, from 0 (as Image From Batch counts; a list is "
            "counted through, batch by batch).",
        ),
    ]


def as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def one(value):
    """A widget's value under ``is_input_list`` (a one-item list; a default stays as it is)."""
    return value[0] if isinstance(value, list) and value else value


def prompts_per_image(prompts: list[str], counts: list[int]) -> str | list[str]:
    """One prompt for every image, one per image (e.g. Ask's descriptions, a STRING list), or one per item of
    the image list (repeated over that item's batch)."""
    if len(prompts) == 1:
        return prompts[0]
    if len(prompts) == sum(counts):
        return prompts
    if len(prompts) != len(counts):
        raise ValueError(
            f"Janus-R1: Judge got {len(prompts)} prompts for {sum(counts)} images in {len(counts)} input(s); "
            "give one prompt, one per image, or one per item of the image list."
        )
    return [p for p, n in zip(prompts, counts) for _ in range(n)]


def stack(images: list) -> object:
    """[1, H, W, C] images as one batch; sizes that differ are letterboxed (centred on black) to the largest
    width and height, since a ComfyUI batch has one size."""
    import torch

    h = max(int(t.shape[1]) for t in images)
    w = max(int(t.shape[2]) for t in images)
    if all(t.shape[1] == h and t.shape[2] == w for t in images):
        return torch.cat(images)
    out = images[0].new_zeros((len(images), h, w, images[0].shape[3]))
    for k, t in enumerate(images):
        y, x = (h - t.shape[1]) // 2, (w - t.shape[2]) // 2
        out[k, y : y + t.shape[1], x : x + t.shape[2]] = t[0]
    return out


class Judge(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return widgets.schema(
            node_id="JanusR1Judge",
            display_name="Janus-R1 Judge",
            category=widgets.CATEGORY_JUDGE,
            description="Ask the model whether each image matches the prompt: score S = P(Yes) / (P(Yes) + "
            "P(No)) in [0, 1], the Yes/No verdict and the written reason. Works on images from any "
            "model, any size (shown to the model letterboxed to a square).",
            search_aliases=["janus score", "image score", "vqa score", "rank images", "semantic score"],
            is_output_node=True,
            is_input_list=True,  # a list of images of mixed sizes is judged and ranked as one set
            inputs=[
                widgets.JanusModel.Input("model"),
                io.Image.Input(
                    "images",
                    tooltip="One image, a batch, or a list of images of any sizes; all are judged and "
                    "ranked together.",
                ),
                widgets.prompt_input(tooltip="The prompt the images should match."),
                widgets.seed_input("Seed for the written reflection (the score itself is deterministic)."),
                io.Int.Input(
                    "max_reflection",
                    default=widgets.DEFAULTS.MAX_REFLECTION,
                    min=0,
                    max=1024,
                    tooltip="Most tokens of the written reason. 0 = score only (fast, deterministic).",
                ),
                io.Int.Input(
                    "text_top_k",
                    default=widgets.DEFAULTS.TEXT_TOP_K,
                    min=1,
                    max=1000,
                    tooltip="Top-k for the written reason (paper: 50).",
                ),
                widgets.max_prompt_tokens_input(),
            ],
            outputs=judge_outputs(),
            hidden=[io.Hidden.unique_id, io.Hidden.extra_pnginfo],
        )

    @classmethod
    def validate_inputs(cls, prompt=None):
        for p in prompt if isinstance(prompt, (list, tuple)) else [prompt]:  # lists: the node takes input lists
            if msg := widgets.require_text("prompt", p):
                return msg
        return True

    @classmethod
    def execute(
        cls,
        model,
        images,
        prompt,
        seed,
        max_reflection,
        text_top_k,
        max_prompt_tokens=widgets.DEFAULTS.MAX_PROMPT_TOKENS,
    ) -> io.NodeOutput:
        """Every input arrives as a list (``is_input_list``): ``images`` holds each IMAGE of an upstream list
        (one batch when nothing upstream is a list), so images of different sizes are ranked against each other
        instead of the node running once per image."""
        model, seed, max_reflection, text_top_k, max_prompt_tokens = (
            one(v) for v in (model, seed, max_reflection, text_top_k, max_prompt_tokens)
        )
        batches = [t if t.ndim == 4 else t.unsqueeze(0) for t in as_list(images)]
        pils = [p for t in batches for p in to_pils(t, "images")]
        prompts = prompts_per_image(as_list(prompt), [int(t.shape[0]) for t in batches])
        jr = model.ready("judge", batch=len(pils), reflection=max_reflection, prompt_tokens=max_prompt_tokens)
        with running(cls, jr, Work(texts=1, text_steps=max_reflection)) as hooks:
            judgements = jr.judge(
                pils,
                prompts,
                max_reflection=max_reflection,
                seed=seed,
                hooks=hooks,
                max_prompt_tokens=max_prompt_tokens,
                text_sampling=text_sampling(text_top_k),
            )
        scores = [float(j.score) for j in judgements]
        order = text.ranking(scores)
        report = text.judge_report(judgements, with_reason=max_reflection > 0)
        flat = [to_intermediate(t[i : i + 1]) for t in batches for i in range(t.shape[0])]
        best = order[0]
        record_for_png(
            cls,
            "judge",
            [dict(j.to_dict(), image=i, rank=order.index(i) + 1) for i, j in enumerate(judgements)],
        )
        return io.NodeOutput(
            stack([flat[i] for i in order]),
            scores,
            [j.verdict for j in judgements],
            [j.reflection for j in judgements],
            report,
            flat[best],  # untouched, its own size
            best,
            ui=ui.PreviewText(report),
        )


class Regenerate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return widgets.schema(
            node_id="JanusR1Regenerate",
            display_name="Janus-R1 Regenerate",
            category=widgets.CATEGORY_GENERATE,
            description="Improve an image made elsewhere: the model judges it against the prompt (or takes your "
            "critique), writes what is wrong and redraws, up to max_rounds images. An image it "
            "accepts comes back unchanged unless always_redraw is on.",
            search_aliases=["janus refine", "reflect and redraw", "fix image"],
            is_output_node=True,
            inputs=[
                widgets.JanusModel.Input("model"),
                io.Image.Input(
                    "image",
                    tooltip="Image(s) from any source. The model sees their centre square; an image it "
                    "accepts comes back untouched (its own size).",
                ),
                widgets.prompt_input(tooltip="What the image should show."),
                io.String.Input(
                    "critique",
                    multiline=True,
                    default="",
                    optional=True,
                    tooltip="Optional: what is wrong with the image, in your words. Empty = the "
                    "model writes its own.",
                ),
                widgets.seed_input(),
                io.Int.Input(
                    "max_rounds",
                    default=widgets.DEFAULTS.REGEN_MAX_ROUNDS,
                    min=2,
                    max=10,
                    tooltip="Most images per input, the input counting as the first (2 = one redraw).",
                ),
                io.Boolean.Input(
                    "always_redraw",
                    default=False,
                    tooltip="Redraw even when the model judges the input image as matching.",
                ),
                *widgets.sampling_inputs(),
                *widgets.reflection_inputs(),
                widgets.final_input(),
                widgets.max_prompt_tokens_input(),
                widgets.output_size_input("redrawn images"),
                *widgets.decoding_inputs(),
            ],
            outputs=introspection_outputs(
                "final_image",  # "image" is the input's id
                "The final image per input: the input itself, untouched, if the model accepted it; else the "
                "redraw (see output_size).",
                "Every image: the input (as the model sees it) and the redraws.",
                with_rounds=False,
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
        final="last",
        max_prompt_tokens=widgets.DEFAULTS.MAX_PROMPT_TOKENS,
        output_size=widgets.MODEL_SIZE,
        decoding="ar",
        jacobi_window=16,
    ) -> io.NodeOutput:
        pils = to_pils(image)
        critiques = critique if isinstance(critique, str) and critique.strip() else None
        final = widgets.final_rule(final)
        jr = model.ready(
            "regenerate", batch=len(pils), rounds=max_rounds, reflection=max_reflection, prompt_tokens=max_prompt_tokens
        )
        # the input is image 1: max_rounds - 1 redraws, each image judged
        work = Work(images=max_rounds - 1, texts=max_rounds, text_steps=max_reflection)
        with running(cls, jr, work) as hooks:
            results = jr.regenerate(
                pils,
                prompt,
                critiques=critiques,
                max_rounds=max_rounds,
                seed=seed,
                redraw_if_accepted=bool(always_redraw),
                hooks=hooks,
                final=final,
                max_reflection=max_reflection,
                max_prompt_tokens=max_prompt_tokens,
                text_sampling=text_sampling(text_top_k),
                **sampling(cfg, temperature, top_k, top_p, decoding, jacobi_window),
            )
        return introspection(
            cls,
            results,
            jr.image_size,
            header="image",
            with_rounds=False,
            inputs=image,
            output_size=widgets.choice("output_size", output_size, widgets.OUTPUT_SIZES),
        )


NODES = [Judge, Regenerate]
