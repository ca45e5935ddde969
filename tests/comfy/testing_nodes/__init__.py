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


class JanusR1TestImageList:
    """A LIST of IMAGEs of different sizes (what list-producing packs emit): 96x64 red, 40x120 blue (batch of
    two: blue and green), 33x33 grey."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("IMAGE",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self):
        def solid(h, w, rgb):
            return torch.tensor(rgb, dtype=torch.float32).view(1, 1, 1, 3).expand(1, h, w, 3).clone()

        tall = torch.cat([solid(120, 40, (0.1, 0.2, 0.9)), solid(120, 40, (0.1, 0.8, 0.2))])
        return ([solid(64, 96, (0.9, 0.1, 0.1)), tall, solid(33, 33, (0.5, 0.5, 0.5))],)


NODE_CLASS_MAPPINGS = {"JanusR1TestOddImage": JanusR1TestOddImage, "JanusR1TestImageList": JanusR1TestImageList}
