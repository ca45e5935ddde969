"""What travels on a JANUS_R1_MODEL socket: the engine object and the patcher ComfyUI loads and offloads."""

from __future__ import annotations

import dataclasses

import torch

from ..janus_r1 import JanusR1


class _Holder(torch.nn.Module):
    """A plain module around the transformers model: ModelPatcher assigns ``.device`` on what it wraps, which a
    transformers ``PreTrainedModel`` (read-only ``device`` property) does not allow."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net
        self.device = next(net.parameters()).device


@dataclasses.dataclass
class JanusModelHandle:
    jr: JanusR1
    patcher: object  # comfy.model_patcher.ModelPatcher (CoreModelPatcher where present)
    name: str
    dtype: torch.dtype

    def ready(self, task: str, **need) -> JanusR1:
        """Load the weights onto the compute device with room for ``task`` (the engine's own
        ``JanusR1.memory_needed(task, **need)``: batch, rounds, reflection, prompt_tokens; for ``ask``: batch,
        images, max_new_tokens, question); returns the engine object, whose methods the node then calls."""
        import comfy.model_management as mm

        extra = self.jr.memory_needed(task, **need)
        mm.load_models_gpu([self.patcher], memory_required=extra, force_full_load=True)
        return self.jr

    def __repr__(self) -> str:  # shown by Preview Any and in errors
        return f"JanusR1Model({self.name}, {str(self.dtype).removeprefix('torch.')})"


def make_patcher(model: torch.nn.Module):
    import comfy.model_management as mm
    import comfy.model_patcher as mp

    patcher_cls = getattr(mp, "CoreModelPatcher", None) or mp.ModelPatcher
    return patcher_cls(
        _Holder(model), load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
    )
