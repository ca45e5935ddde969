"""Edit: an image and a text instruction -> the edited image (Janus-Pro-R1's editing template)."""

from __future__ import annotations

from comfy_api.latest import io

from . import widgets
from .images import fit_size, to_image, to_pils
from .outputs import shown
from .run import running, sampling
from .work import Work


class Edit(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return widgets.schema(
            node_id="JanusR1Edit",
            display_name="Janus-R1 Edit",
            category=widgets.CATEGORY_EDIT,
            description="Edit an image with a text instruction. The model sees the input's centre square (its "
            "image tokens) and draws a square; output_size returns it at the model's size (384x384) or "
            "stretched back to the input's width and height.",
            search_aliases=["janus edit", "instruct edit", "image edit"],
            inputs=[
                widgets.JanusModel.Input("model"),
                io.Image.Input("image", tooltip="Image(s) to edit, any size; centre-cropped to a square."),
                widgets.prompt_input("instruction", tooltip="What to change, e.g. 'make the sky purple'."),
                widgets.seed_input(),
                *widgets.sampling_inputs(cfg=widgets.DEFAULTS.EDIT_CFG),
                io.Int.Input(
                    "num_images", default=1, min=1, max=8, tooltip="Edited variants per input image."
                ),
                widgets.output_size_input("edited images"),
                *widgets.decoding_inputs(),
            ],
            outputs=[
                io.Image.Output(
                    "edited",
                    display_name="image",
                    tooltip="The edited images, num_images per input, in order.",
                )
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, instruction=None):
        return widgets.require_text("instruction", instruction) or True

    @classmethod
    def execute(
        cls,
        model,
        image,
        instruction,
        seed,
        cfg,
        temperature,
        top_k,
        top_p,
        num_images,
        output_size=widgets.MODEL_SIZE,
        decoding="ar",
        jacobi_window=16,
    ) -> io.NodeOutput:
        output_size = widgets.choice("output_size", output_size, widgets.OUTPUT_SIZES)
        pils = to_pils(image)
        jr = model.ready("edit", batch=len(pils) * num_images)
        with running(cls, jr, Work(images=1)) as hooks:
            results = jr.edit(
                pils, instruction, num_images=num_images, seed=seed, hooks=hooks, **sampling(cfg, temperature, top_k, top_p, decoding, jacobi_window)
            )
        edited = [r.image for r in results]
        if output_size == widgets.INPUT_SIZE:
            edited = [fit_size(im, pils[0].size) for im in edited]  # one IMAGE batch: one input size
        images = to_image(edited)
        return io.NodeOutput(images, ui=shown(cls, images))


NODES = [Edit]
