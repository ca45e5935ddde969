"""The public Python API: one object, :class:`JanusR1`, with one method per task.

    from janus_r1 import JanusR1
    jr = JanusR1.from_pretrained("midbee/Janus-Pro-R1-7B")          # or a local dir, or "tiny-random"
    [result] = jr.generate("a red cube on a blue sphere", seed=1)  # introspective CoT, <= 3 images
    result.image.save("out.png"); print(result.reasoning())
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors import JanusR1Error
from .generation import tasks
from .generation.decode import NO_HOOKS, Hooks
from .generation.sampling import IMAGE_SAMPLING, TEXT_SAMPLING, Sampling
from .generation.trace import Judgement, SampleResult
from .model.vocabulary import Vocabulary

DEFAULT_MODEL = "midbee/Janus-Pro-R1-7B"


def _image_sampling(temperature: float, top_k: int, top_p: float) -> Sampling:
    return Sampling(temperature=temperature, top_k=top_k, top_p=top_p).validate("image")


class JanusR1:
    """A loaded Janus-Pro / Janus-Pro-R1 model and every task it can run.

    All methods take lists (or a single item) and return one result per output image. Defaults are the paper's:
    CFG 5 (4 for editing), temperature 1, image top-k 4096, text top-k 50, at most 3 images per prompt.
    ``hooks`` receives a callback per token and is polled for cancellation between tokens.
    """

    def __init__(self, model: torch.nn.Module, vocab: Vocabulary, source: str = "", runner: str = "auto") -> None:
        from .generation.decode import RUNNERS

        if runner not in RUNNERS:
            raise JanusR1Error(f"runner must be one of {', '.join(RUNNERS)} (got {runner!r}).")
        self.model = model.eval()
        self.vocab = vocab
        self.source = source
        self.janus = tasks.Janus(model, vocab, runner)

    @classmethod
    def from_pretrained(
        cls, path_or_repo: str = DEFAULT_MODEL, device: str = "auto", dtype: str | torch.dtype = "auto",
        progress: bool = True, runner: str = "auto", quantize: str | None = None,
        max_memory_gib: float | None = None, offload_dir: str | None = None,
    ) -> JanusR1:
        """Load a local directory or hub repo id, in DeepSeek or transformers layout (``"tiny-random"`` for a
        noise-drawing tiny model). Downloads only when the id is not on disk; honours ``HF_HUB_OFFLINE``.
        ``runner="compiled"`` compiles the fixed-shape decode step (CUDA graphs on a GPU); ``quantize="4bit"``
        or ``"8bit"`` loads the language model through bitsandbytes (vision, VQ and heads stay unquantised);
        ``max_memory_gib`` keeps at most that much weight on the device and streams the other decoder layers
        from CPU RAM (or ``offload_dir``) every step."""
        from .model.loading import load_model

        model, vocab = load_model(path_or_repo, device=device, dtype=dtype, progress=progress, quantize=quantize,
                                  max_memory_gib=max_memory_gib, offload_dir=offload_dir)
        return cls(model, vocab, source=str(path_or_repo), runner=runner)

    @property
    def device(self) -> torch.device:
        return self.janus.device

    @property
    def num_image_tokens(self) -> int:
        return self.janus.num_image_tokens

    @property
    def image_size(self) -> int:
        return self.janus.image_size

    def text_to_image(
        self, prompts: str | Sequence[str], num_images: int = 1, cfg: float = tasks.DEFAULT_CFG,
        temperature: float = 1.0, top_k: int = IMAGE_SAMPLING.top_k, top_p: float = 1.0,
        seed: int | None = None, hooks: Hooks = NO_HOOKS,
    ) -> list[SampleResult]:
        """Plain Janus text-to-image (one image per sample, never judged)."""
        return tasks.text_to_image(
            self.janus, prompts, num_images, cfg, _image_sampling(temperature, top_k, top_p), seed, hooks
        )

    def generate(
        self, prompts: str | Sequence[str], num_images: int = 1, max_rounds: int = tasks.DEFAULT_MAX_ROUNDS,
        cfg: float = tasks.DEFAULT_CFG, temperature: float = 1.0, top_k: int = IMAGE_SAMPLING.top_k,
        top_p: float = 1.0, text_top_k: int = TEXT_SAMPLING.top_k,
        max_reflection: int = tasks.DEFAULT_MAX_REFLECTION, seed: int | None = None, reencode: bool = False,
        hooks: Hooks = NO_HOOKS,
    ) -> list[SampleResult]:
        """The paper's introspective text-to-image: generate, judge, regenerate on "No", up to ``max_rounds``."""
        return tasks.introspect(
            self.janus, prompts, num_images=num_images, max_rounds=max_rounds, cfg=cfg,
            image_sampling=_image_sampling(temperature, top_k, top_p),
            text_sampling=Sampling(top_k=text_top_k).validate("text"),
            max_reflection=max_reflection, seed=seed, hooks=hooks, reencode=reencode,
        )

    def judge(
        self, images, prompts: str | Sequence[str], max_reflection: int = tasks.DEFAULT_MAX_REFLECTION,
        text_top_k: int = TEXT_SAMPLING.top_k, seed: int | None = None, hooks: Hooks = NO_HOOKS,
    ) -> list[Judgement]:
        """Self-evaluate images from any source: verdict, score S and the written reflection."""
        return tasks.judge(
            self.janus, images, prompts, Sampling(top_k=text_top_k).validate("text"), max_reflection, seed, hooks
        )

    def score(self, images, prompts: str | Sequence[str]) -> list[Judgement]:
        """Image-text consistency S = P(Yes)/(P(Yes)+P(No)) in [0, 1], deterministic, no text written."""
        return tasks.score(self.janus, images, prompts)

    def regenerate(
        self, images, prompts: str | Sequence[str], critiques: str | Sequence[str | None] | None = None,
        max_rounds: int = 2, cfg: float = tasks.DEFAULT_CFG, temperature: float = 1.0,
        top_k: int = IMAGE_SAMPLING.top_k, top_p: float = 1.0, text_top_k: int = TEXT_SAMPLING.top_k,
        max_reflection: int = tasks.DEFAULT_MAX_REFLECTION, seed: int | None = None,
        redraw_if_accepted: bool = False, hooks: Hooks = NO_HOOKS,
    ) -> list[SampleResult]:
        """Redraw images made elsewhere: the model judges each (or takes the caller's critique), and redraws
        conditioned on the image and the critique. ``max_rounds`` counts the input image as round 1."""
        if isinstance(critiques, str):
            critiques = [critiques]
        return tasks.introspect(
            self.janus, prompts, max_rounds=max_rounds, cfg=cfg,
            image_sampling=_image_sampling(temperature, top_k, top_p),
            text_sampling=Sampling(top_k=text_top_k).validate("text"), max_reflection=max_reflection,
            seed=seed, hooks=hooks, start_images=images, critiques=critiques,
            redraw_if_accepted=redraw_if_accepted,
        )

    def edit(
        self, images, instructions: str | Sequence[str], num_images: int = 1, cfg: float = tasks.DEFAULT_EDIT_CFG,
        temperature: float = 1.0, top_k: int = IMAGE_SAMPLING.top_k, top_p: float = 1.0,
        seed: int | None = None, hooks: Hooks = NO_HOOKS,
    ) -> list[SampleResult]:
        """Edit images with text instructions (CFG 4 by default, per the paper)."""
        return tasks.edit(
            self.janus, images, instructions, num_images, cfg, _image_sampling(temperature, top_k, top_p),
            seed, hooks,
        )

    def best_of_n(
        self, prompt: str, n: int = 4, cfg: float = tasks.DEFAULT_CFG, temperature: float = 1.0,
        top_k: int = IMAGE_SAMPLING.top_k, top_p: float = 1.0, seed: int | None = None, hooks: Hooks = NO_HOOKS,
    ) -> tuple[list[SampleResult], list[float]]:
        """Inference-time scaling beyond the paper: n candidates, ranked by the model's own score S
        (best first)."""
        results = self.text_to_image(prompt, n, cfg, temperature, top_k, top_p, seed, hooks)
        judgements = self.score([r.image for r in results], prompt)
        for r, jd in zip(results, judgements):
            r.attempts[0].judgement = jd
        order = sorted(range(len(results)), key=lambda i: -judgements[i].score)
        return [results[i] for i in order], [judgements[i].score for i in order]

