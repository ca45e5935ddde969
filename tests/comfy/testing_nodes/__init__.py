"""A test-only ComfyUI pack (linked into the test ComfyUI's custom_nodes by harness.make_base, never shipped):
one node that emits IMAGE tensors no well-behaved core node produces, so the bad-input tests can feed them to
the Janus-R1 nodes on the real executor."""

import torch

SHAPES = {
    "two channels": (1, 8, 8, 2),
    "five dims": (1, 1, 8, 8, 3),
    "empty batch": (0, 8, 8, 3),
    "zero width": (1, 8, 0, 3),
    "one pixel": (1, 1, 1, 3),
}


class JanusR1TestOddImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"kind": (list(SHAPES),)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, kind):
        return (torch.full(SHAPES[kind], 0.5),)


NODE_CLASS_MAPPINGS = {"JanusR1TestOddImage": JanusR1TestOddImage}
