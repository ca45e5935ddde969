"""The public Python API: one object, :class:`JanusR1`, with one method per task.

    from janus_r1 import JanusR1
    jr = JanusR1.from_pretrained("midbee/Janus-Pro-R1-7B")          # or a local dir, or "tiny-random"
    [result] = jr.generate("a red cube on a blue sphere", seed=1)  # introspective CoT, <= 3 images
    result.image.save("out.png"); print(result.reasoning())
    [answer] = jr.describe("photo.png"); print(answer.text)          # Janus's understanding side
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from PIL import Image

from . import defaults
from .errors import JanusR1Error
from .generation import ask as asking
from .generation import prompt_fit, tasks
from .generation.decode import NO_HOOKS, Hooks
from .generation.introspect import introspect
from .generation.sampling import Sampling
from .generation.trace import Judgement, SampleResult
from .model.vocabulary import Vocabulary
from .out_of_memory import translated

DEFAULT_MODEL = "midbee/Janus-Pro-R1-7B"


def _plain(value):
    """NumPy scalars (``np.int64`` seeds, ``np.float32`` cfg, ``np.bool_``) -> the Python number they hold."""
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    return value


def _given(sampling, what: str) -> Sampling:
    if not isinstance(sampling, Sampling):
        raise JanusR1Error(f"{what}_sampling must be a janus_r1.Sampling or None (got {type(sampling).__name__}).")
    return sampling.validate(what)


def _image_sampling(temperature, top_k, top_p, given: Sampling | None = None) -> Sampling:
    """``given`` (a ready :class:`Sampling`, as the nodes pass) wins over the keyword arguments."""
    if given is not None:
        return _given(given, "image")
    return Sampling(temperature=_plain(temperature), top_k=_plain(top_k), top_p=_plain(top_p)).validate("image")


def _text_sampling(text_top_k, given: Sampling | None = None) -> Sampling:
    if given is not None:
        return _given(given, "text")
    return Sampling(top_k=_plain(text_top_k)).validate("text")


class JanusR1:
    """A loaded Janus-Pro / Janus-Pro-R1 model and every task it can run.

    All methods take lists (or a single item) and return one result per output image. Defaults are the paper's:
    CFG 5 (4 for editing), temperature 1, image top-k 4096, text top-k 50, at most 3 images per prompt.
    ``hooks`` receives a callback per token and is polled for cancellation between tokens.
    """

    def __init__(self, model: torch.nn.Module, vocab: Vocabulary, source: str = "", runner: str = "auto",
                 decoding: str = "ar", jacobi_window: int = 16) -> None:
        from .generation.decode import RUNNERS

        if runner not in RUNNERS:
            raise JanusR1Error(f"runner must be one of {', '.join(RUNNERS)} (got {runner!r}).")
        # image phases: "ar" one token per step (default) | "jacobi" speculative Jacobi decoding, same distribution
        Sampling(decoding=decoding, window=jacobi_window).validate("image")
        self.decoding, self.jacobi_window = decoding, jacobi_window
        self.model = model.eval()
        self.vocab = vocab
        self.source = source
        self.janus = tasks.Janus(model, vocab, runner)

    @classmethod
    @translated
    def from_pretrained(
        cls, path_or_repo: str = DEFAULT_MODEL, device: str = "auto", dtype: str | torch.dtype = "auto",
        progress: bool = True, runner: str = "auto", quantize: str | None = None,
        max_memory_gib: float | None = None, offload_dir: str | None = None, decoding: str = "ar",
        jacobi_window: int = 16,
    ) -> JanusR1:
        """Load a local directory or hub repo id, in DeepSeek or transformers layout (``"tiny-random"`` for a
        noise-drawing tiny model). Downloads only when the id is not on disk; honours ``HF_HUB_OFFLINE``.
        ``runner``: see ``generation/decode.py`` (``auto`` replays a CUDA-graph step on a GPU); ``quantize="4bit"``
        quantises the language model only (vision, VQ and heads stay unquantised): int4 on torch's own fused kernels
        where the device has one (CUDA sm80+, CPU), else NF4; ``"int4"`` asks for int4 anywhere, ``"nf4"`` and
        ``"8bit"`` for bitsandbytes;
        ``max_memory_gib`` keeps at most that much weight on the device and streams the other decoder layers
        from CPU RAM (or ``offload_dir``) every step.
        ``decoding="jacobi"``: speculative Jacobi decoding of image tokens over ``jacobi_window`` drafts (opt-in;
        the same distribution, fewer forward passes; ``generation/jacobi.py``)."""
        from .model.loading import load_model

        model, vocab = load_model(path_or_repo, device=device, dtype=dtype, progress=progress, quantize=quantize,
                                  max_memory_gib=max_memory_gib, offload_dir=offload_dir)
        return cls(model, vocab, source=str(path_or_repo), runner=runner, decoding=decoding,
                   jacobi_window=jacobi_window)

    def _image_sampling(self, temperature, top_k, top_p, given: Sampling | None = None) -> Sampling:
        """The image sampling of a call, with this model's decoding mode unless ``given`` says its own."""
        if given is not None:
            return _image_sampling(temperature, top_k, top_p, given)
        made = _image_sampling(temperature, top_k, top_p)
        return dataclasses.replace(made, decoding=self.decoding, window=self.jacobi_window).validate("image")

    @property
    def device(self) -> torch.device:
        return self.janus.device

    @property
    def num_image_tokens(self) -> int:
        return self.janus.num_image_tokens

    @property
    def image_size(self) -> int:
        return self.janus.image_size

    def preview_image(self, codes: torch.Tensor) -> Image.Image:
        """A partly drawn image: the first row of ``codes`` (B, t) sampled so far, the positions not sampled yet
        filled with its last code, decoded by the VQ decoder (a live preview of a run in progress)."""
        row = codes[:1].detach()
        pad = row[:, -1:].expand(1, self.num_image_tokens - row.shape[1])
        return self.janus.decode_codes(torch.cat([row, pad], dim=1))[0]

    @translated
    def text_to_image(
        self, prompts: str | Sequence[str], num_images: int = defaults.NUM_IMAGES, cfg: float = defaults.CFG,
        temperature: float = defaults.TEMPERATURE, top_k: int = defaults.TOP_K, top_p: float = defaults.TOP_P,
        seed: int | None = None, hooks: Hooks | None = NO_HOOKS, max_prompt_tokens: int = defaults.MAX_PROMPT_TOKENS,
        *, image_sampling: Sampling | None = None,
    ) -> list[SampleResult]:
        """Plain Janus text-to-image (one image per sample, never judged). ``image_sampling``, when given,
        replaces temperature/top_k/top_p (every method takes it; the nodes build one and pass it)."""
        return tasks.text_to_image(
            self.janus, prompts, _plain(num_images), _plain(cfg),
            self._image_sampling(temperature, top_k, top_p, image_sampling), _plain(seed), hooks, _plain(max_prompt_tokens),
        )

    @translated
    def generate(
        self, prompts: str | Sequence[str], num_images: int = defaults.NUM_IMAGES,
        max_rounds: int = defaults.MAX_ROUNDS, cfg: float = defaults.CFG, temperature: float = defaults.TEMPERATURE,
        top_k: int = defaults.TOP_K, top_p: float = defaults.TOP_P, text_top_k: int = defaults.TEXT_TOP_K,
        max_reflection: int = defaults.MAX_REFLECTION, seed: int | None = None, reencode: bool = False,
        hooks: Hooks | None = NO_HOOKS, final: str = defaults.FINAL,
        max_prompt_tokens: int = defaults.MAX_PROMPT_TOKENS, *, image_sampling: Sampling | None = None,
        text_sampling: Sampling | None = None,
    ) -> list[SampleResult]:
        """The paper's introspective text-to-image: generate, judge, regenerate on "No", up to ``max_rounds``.
        ``final="last"`` returns the paper's image (the accepted one, else the last drawn); ``"best"`` the
        attempt with the highest S (ties to the later)."""
        return introspect(
            self.janus, prompts, num_images=_plain(num_images), max_rounds=_plain(max_rounds), cfg=_plain(cfg),
            image_sampling=self._image_sampling(temperature, top_k, top_p, image_sampling),
            text_sampling=_text_sampling(text_top_k, text_sampling),
            max_reflection=_plain(max_reflection), seed=_plain(seed), hooks=hooks, reencode=_plain(reencode),
            final=final, max_prompt_tokens=_plain(max_prompt_tokens),
        )

    @translated
    def judge(
        self, images, prompts: str | Sequence[str], max_reflection: int = defaults.MAX_REFLECTION,
        text_top_k: int = defaults.TEXT_TOP_K, seed: int | None = None, hooks: Hooks | None = NO_HOOKS,
        max_prompt_tokens: int = defaults.MAX_PROMPT_TOKENS, *, text_sampling: Sampling | None = None,
    ) -> list[Judgement]:
        """Self-evaluate images from any source (PIL images or ``str``/``Path`` paths, one or a list): verdict,
        score S and the written reflection."""
        return tasks.judge(
            self.janus, images, prompts, _text_sampling(text_top_k, text_sampling), _plain(max_reflection),
            _plain(seed), hooks, _plain(max_prompt_tokens),
        )

    @translated
    def score(self, images, prompts: str | Sequence[str],
              max_prompt_tokens: int = defaults.MAX_PROMPT_TOKENS) -> list[Judgement]:
        """Image-text consistency S = P(Yes)/(P(Yes)+P(No)) in [0, 1], deterministic, no text written."""
        return tasks.score(self.janus, images, prompts, _plain(max_prompt_tokens))

    @translated
    def regenerate(
        self, images, prompts: str | Sequence[str], critiques: str | Sequence[str | None] | None = None,
        max_rounds: int = defaults.REGEN_MAX_ROUNDS, cfg: float = defaults.CFG,
        temperature: float = defaults.TEMPERATURE, top_k: int = defaults.TOP_K, top_p: float = defaults.TOP_P,
        text_top_k: int = defaults.TEXT_TOP_K,
        max_reflection: int = defaults.MAX_REFLECTION, seed: int | None = None,
        redraw_if_accepted: bool = False, hooks: Hooks | None = NO_HOOKS, final: str = defaults.FINAL,
        max_prompt_tokens: int = defaults.MAX_PROMPT_TOKENS, *, image_sampling: Sampling | None = None,
        text_sampling: Sampling | None = None,
    ) -> list[SampleResult]:
        """Redraw images made elsewhere: the model judges each (or takes the caller's critique), and redraws
        conditioned on the image and the critique. ``max_rounds`` counts the input image as round 1."""
        if images is None:  # never fall back to drawing from scratch: that is generate()
            tasks.load_images(images)
        return introspect(
            self.janus, prompts, max_rounds=_plain(max_rounds), cfg=_plain(cfg),
            image_sampling=self._image_sampling(temperature, top_k, top_p, image_sampling),
            text_sampling=_text_sampling(text_top_k, text_sampling),
            max_reflection=_plain(max_reflection), seed=_plain(seed), hooks=hooks, start_images=images,
            critiques=critiques, redraw_if_accepted=_plain(redraw_if_accepted), final=final,
            max_prompt_tokens=_plain(max_prompt_tokens),
        )

    @translated
    def edit(
        self, images, instructions: str | Sequence[str], num_images: int = defaults.NUM_IMAGES,
        cfg: float = defaults.EDIT_CFG, temperature: float = defaults.TEMPERATURE, top_k: int = defaults.TOP_K,
        top_p: float = defaults.TOP_P, seed: int | None = None, hooks: Hooks | None = NO_HOOKS,
        *, image_sampling: Sampling | None = None,
    ) -> list[SampleResult]:
        """Edit images with text instructions (CFG 4 by default, per the paper)."""
        return tasks.edit(
            self.janus, images, instructions, _plain(num_images), _plain(cfg),
            self._image_sampling(temperature, top_k, top_p, image_sampling), _plain(seed), hooks,
        )

    @translated
    def best_of_n(
        self, prompt: str, n: int = defaults.BEST_OF_N, cfg: float = defaults.CFG, temperature: float = defaults.TEMPERATURE,
        top_k: int = defaults.TOP_K, top_p: float = defaults.TOP_P, seed: int | None = None,
        hooks: Hooks | None = NO_HOOKS, max_prompt_tokens: int = defaults.MAX_PROMPT_TOKENS,
        *, image_sampling: Sampling | None = None,
    ) -> tuple[list[SampleResult], list[float]]:
        """Inference-time scaling beyond the paper: n candidates, ranked by the model's own score S
        (best first)."""
        if not isinstance(prompt, str):
            raise JanusR1Error(f"prompt must be one text (str) (got {type(prompt).__name__}).")
        n = tasks.check_int("n", _plain(n), 1)
        results = self.text_to_image(prompt, n, cfg, temperature, top_k, top_p, seed, hooks, max_prompt_tokens,
                                     image_sampling=image_sampling)
        judgements = self.score([r.image for r in results], prompt, max_prompt_tokens)
        for r, jd in zip(results, judgements):
            r.attempts[0].judgement = jd
        order = sorted(range(len(results)), key=lambda i: -judgements[i].score)
        return [results[i] for i in order], [judgements[i].score for i in order]

    # --- understanding -------------------------------------------------------------------------------------
    @translated
    def ask(
        self, images, question: str | Sequence[str] = defaults.ASK_QUESTION,
        max_new_tokens: int = defaults.ASK_MAX_NEW_TOKENS, temperature: float = defaults.ASK_TEMPERATURE,
        top_p: float = defaults.ASK_TOP_P, top_k: int = defaults.ASK_TOP_K, seed: int | None = None,
        hooks: Hooks | None = NO_HOOKS, *, images_b=None, text_sampling: Sampling | None = None,
        prompt_budget: int | None = None,
    ) -> list[asking.Answer]:
        """Answer a question about each image (Janus-Pro's understanding, DeepSeek's chat format), one
        :class:`~janus_r1.generation.ask.Answer` per image: ``.text`` and its token ``.ids``, all images answered
        in one batch. ``images``: PIL images or paths, one or a list; a list item may be a list of images asked
        about together. ``question``: one for all, or one per image. ``images_b``: a second image per question
        (one for all, or one per image), to compare two. ``temperature=0`` answers greedily (the default, as
        DeepSeek's example); above 0 it samples with ``top_p``/``top_k``. ``text_sampling`` replaces those three.
        ``prompt_budget``: answers meant as a text-to-image prompt of at most that many tokens with its template
        (the generators' ``max_prompt_tokens``): decoding stops at about that length and an answer that would not
        fit ends at its last whole sentence that does (``Answer.shortened``); None or 0 = no budget."""
        sampling = asking.answer_sampling(_plain(temperature), _plain(top_p), _plain(top_k)) \
            if text_sampling is None else _given(text_sampling, "text")
        budget = prompt_fit.check_budget(_plain(prompt_budget))
        if budget is not None:
            max_new_tokens = prompt_fit.answer_cap(self.janus, tasks.check_int("max_new_tokens",
                                                                                _plain(max_new_tokens), 1), budget)
        answers = asking.ask(self.janus, images, question, _plain(max_new_tokens), sampling, _plain(seed), hooks,
                             images_b)
        return answers if budget is None else prompt_fit.fit_answers(self.janus, answers, budget)

    @translated
    def describe(
        self, images, max_new_tokens: int = defaults.ASK_MAX_NEW_TOKENS,
        temperature: float = defaults.ASK_TEMPERATURE, top_p: float = defaults.ASK_TOP_P,
        top_k: int = defaults.ASK_TOP_K, seed: int | None = None, hooks: Hooks | None = NO_HOOKS,
    ) -> list[asking.Answer]:
        """:meth:`ask` with the default question, "Describe this image in detail." -- a caption per image (e.g.
        for another model's prompt)."""
        return self.ask(images, defaults.ASK_QUESTION, max_new_tokens, temperature, top_p, top_k, seed, hooks)

    def memory_needed(self, task: str, **need) -> int:
        """Bytes beyond the weights one call of ``task`` needs (the ComfyUI nodes hand it to ``load_models_gpu``):
        ``ask``/``describe`` here (``batch``, ``images`` per question, ``max_new_tokens``, ``question``), every
        other task in :func:`janus_r1.model.memory.memory_needed`."""
        if task in ("ask", "describe"):
            return asking.memory_needed(self.janus, **need)
        from .model.memory import memory_needed

        return memory_needed(self.model, task, **need)
