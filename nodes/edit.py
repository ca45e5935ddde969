"""Edit: an image and a text instruction -> the edited image (Janus-Pro-R1's editing template)."""

from __future__ import annotations

from comfy_api.latest import io

from . import glue


class Edit(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return glue.schema(
            node_id="JanusR1Edit",
            display_name="Janus-R1 Edit",
            description="Edit an image with a text instruction. The input is centre-cropped to a square and "
            "encoded into the model's image tokens; the output is the model's size (384x384).",
            search_aliases=["janus edit", "instruct edit", "image edit"],
            inputs=[
                glue.JanusModel.Input("model"),
                io.Image.Input("image", tooltip="Image(s) to edit, any size; centre-cropped to a square."),
                glue.prompt_input("instruction", tooltip="What to change, e.g. 'make the sky purple'."),
                glue.seed_input(),
                *glue.sampling_inputs(cfg=glue.DEFAULT_EDIT_CFG),
                io.Int.Input(
                    "num_images", default=1, min=1, max=8, tooltip="Edited variants per input image."
                ),
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
        return glue.require_text("instruction", instruction) or True

    @classmethod
    def execute(
        cls, model, image, instruction, seed, cfg, temperature, top_k, top_p, num_images
    ) -> io.NodeOutput:
        pils = glue.to_pils(image)
        jr0 = model.jr
        rows = 2 * len(pils) * num_images
        jr = model.ready(
            rows=rows,
            context_tokens=jr0.num_image_tokens + 160,
            new_tokens=jr0.num_image_tokens,
            images_out=len(pils) * num_images,
        )
        hooks = glue.RunHooks(jr, glue.node_id(cls))
        results = hooks.run(
            jr.edit,
            pils,
            instruction,
            num_images=num_images,
            cfg=float(cfg),
            temperature=float(temperature),
            top_k=int(top_k),
            top_p=float(top_p),
            seed=seed,
        )
        return io.NodeOutput(glue.to_image([r.image for r in results]))


NODES = [Edit]
