"""Argument checks shared by every entry point (tasks, the Python API, the CLI, the ComfyUI nodes).

Each check accepts what a caller naturally has (a ``str`` or ``pathlib.Path``, NumPy scalars from an array, a
single item or a list) and otherwise raises one :class:`JanusR1Error` that names the argument and says what it
accepts -- so no raw ``TypeError`` from deep inside the model ever reaches a user.
"""

from __future__ import annotations

import math
import numbers
import operator
import os
import secrets
from pathlib import Path

from PIL import Image

from ..errors import JanusR1Error
from . import images as imgs

SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes 0 .. 2^64-1 (negative seeds wrap); ComfyUI's range too
DRAWN_SEED_BITS = 53  # a drawn default seed stays exact in any JSON reader (JavaScript numbers included)
FINAL_RULES = ("last", "best")


def _as_int(value) -> int | None:
    """Python or NumPy integer -> int; None for anything else (bools included: True is not a count)."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def check_int(name: str, value, low: int, high: int | None = None) -> int:
    """An integer (NumPy integers accepted) in ``[low, high]``."""
    n = _as_int(value)
    if n is None or n < low or (high is not None and n > high):
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise JanusR1Error(f"{name} must be an integer {rng} (got {value!r}).")
    return n


def check_float(name: str, value, low: float = 0.0, hint: str = "") -> float:
    """A finite real number >= ``low`` (ints and NumPy floats accepted)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) \
            or float(value) < low:
        raise JanusR1Error(f"{name} must be a finite number >= {low:g} (got {value!r}){hint}.")
    return float(value)


def check_cfg(value) -> float:
    return check_float("cfg", value, 0.0, "; the paper uses 5 (4 for editing)")


def check_seed(seed) -> int | None:
    """None (draw one) or an integer in [0, 2^64-1]."""
    if seed is None:
        return None
    n = _as_int(seed)
    if n is None or not 0 <= n <= SEED_MAX:
        raise JanusR1Error(f"seed must be an integer in [0, 2^64-1 = {SEED_MAX}] or None for a random one "
                           f"(got {seed!r}).")
    return n


def resolve_seed(seed) -> int:
    """The checked seed, or a freshly drawn one: every run records the seed it used, so it can be repeated."""
    n = check_seed(seed)
    return secrets.randbits(DRAWN_SEED_BITS) if n is None else n


def check_bool(name: str, value) -> bool:
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise JanusR1Error(f"{name} must be True or False (got {value!r}).")


def check_choice(name: str, value, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise JanusR1Error(f"{name} must be one of {', '.join(repr(c) for c in choices)} (got {value!r}).")
    return value


def check_hooks(hooks):
    """``None`` means no hooks; anything else must be a :class:`janus_r1.Hooks`."""
    from .decode import NO_HOOKS, Hooks

    if hooks is None:
        return NO_HOOKS
    if not isinstance(hooks, Hooks):
        raise JanusR1Error(f"hooks must be a janus_r1.Hooks or None (got {type(hooks).__name__}).")
    return hooks


def check_prompts(prompts, name: str = "prompts") -> list[str]:
    """One text or a list of texts, none empty."""
    if isinstance(prompts, str):
        prompts = [prompts]
    elif isinstance(prompts, (bytes, bytearray)):
        raise JanusR1Error(f"{name} must be text (str) or a list of str, not bytes; decode it first "
                           "(e.g. data.decode('utf-8')).")
    elif prompts is None or not hasattr(prompts, "__iter__") or isinstance(prompts, dict):
        raise JanusR1Error(f"{name} must be text (str) or a list of str (got {type(prompts).__name__}).")
    prompts = list(prompts)
    if not prompts:
        raise JanusR1Error(f"{name}: no prompt given; pass at least one non-empty text.")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise JanusR1Error(f"{name}[{i}] is a {type(p).__name__}; each must be text (str).")
        if not p.strip():
            raise JanusR1Error(f"{name}[{i}] is empty or whitespace; describe the image you want.")
    return prompts


def check_critiques(critiques, n_images: int) -> list[str | None]:
    """None (the model judges), one critique for every image, or one (or None) per image."""
    if critiques is None:
        return [None] * n_images
    if isinstance(critiques, str):
        critiques = [critiques]
    elif isinstance(critiques, (bytes, bytearray)) or not isinstance(critiques, (list, tuple)):
        raise JanusR1Error(f"critiques must be None, a str, or a list of str/None (got {type(critiques).__name__}).")
    crits = list(critiques)
    for i, c in enumerate(crits):
        if c is not None and not isinstance(c, str):
            raise JanusR1Error(f"critiques[{i}] is a {type(c).__name__}; each must be a str or None.")
        if isinstance(c, str) and not c.strip():
            raise JanusR1Error(f"critiques[{i}] is empty; pass None to let the model write its own.")
    if len(crits) == 1 and n_images > 1:
        crits = crits * n_images
    if len(crits) != n_images:
        raise JanusR1Error(f"got {len(crits)} critiques for {n_images} images; give one or one per image.")
    return crits


def not_regular(path: Path) -> str | None:
    """What ``path`` is when it exists but is neither a regular file nor a directory (a FIFO would block the
    reader forever, a device could be endless), else None. Symbolic links to regular files are fine."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # missing or unreadable: the reader's own error names it
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")


def read_regular_file(path: Path, what: str) -> bytes:
    """The bytes of a regular file; anything else (a FIFO, socket or device) is refused before it is opened."""
    kind = not_regular(path)
    if kind:
        raise JanusR1Error(f"{what} {path} is {kind}; only regular files are read (save the data to a file).")
    try:
        return path.read_bytes()
    except OSError as e:
        raise JanusR1Error(f"{what} {path}: cannot read it ({e.strerror or e}).") from None


def _open(i: int, path: Path, where: str | None = None) -> Image.Image:
    where = where or f"images[{i}]"
    kind = not_regular(path)
    if kind:
        raise JanusR1Error(f"{where}: {str(path)!r} is {kind}; only regular image files are read (save the image "
                           "to a file).")
    try:
        with Image.open(path) as f:
            f.load()
            return f.copy()
    except FileNotFoundError:
        raise JanusR1Error(f"{where}: no such file {str(path)!r}") from None
    except IsADirectoryError:
        raise JanusR1Error(f"{where}: {str(path)!r} is a directory, not an image file") from None
    except Exception as e:  # PIL raises many types for corrupt files
        raise JanusR1Error(f"{where}: cannot read {str(path)!r} as an image ({e})") from None


def open_image(path, where: str) -> Image.Image:
    """One image file as RGB; errors name the file and ``where`` it was given (e.g. a CLI option)."""
    return imgs.to_rgb(_open(0, Path(path), where))


def load_images(images, name: str = "images") -> list[Image.Image]:
    """PIL images or paths (``str`` / ``pathlib.Path``), one or a list -> RGB PIL images."""
    what = f"{name} must be a PIL image, a path (str or pathlib.Path) or a list of them"
    if isinstance(images, (Image.Image, str, os.PathLike)):
        images = [images]
    elif images is None or not isinstance(images, (list, tuple)):
        raise JanusR1Error(f"{what} (got {type(images).__name__}).")
    out = []
    for i, im in enumerate(images):
        if isinstance(im, (str, os.PathLike)):
            im = _open(i, Path(im))
        elif not isinstance(im, Image.Image):
            raise JanusR1Error(f"{name}[{i}] is a {type(im).__name__}; {what}.")
        out.append(imgs.to_rgb(im))
    if not out:
        raise JanusR1Error(f"{name}: no image given; {what}.")
    return out


def pair(prompts: list[str], items: list, what: str) -> tuple[list[str], list]:
    """Broadcast one prompt over many images (or one image over many prompts)."""
    if len(prompts) == 1 and len(items) > 1:
        prompts = prompts * len(items)
    if len(items) == 1 and len(prompts) > 1:
        items = items * len(prompts)
    if len(prompts) != len(items):
        raise JanusR1Error(f"got {len(items)} {what} but {len(prompts)} prompts; give one prompt or one per image.")
    return prompts, items


# --- asking about images --------------------------------------------------------------------------------------

IMAGE_TAGS = ("<image_placeholder>", "<begin_of_image>", "<end_of_image>")  # read by the tokenizer as image tokens


def check_questions(questions, name: str = "question") -> list[str]:
    """One question or a list, none empty, none holding an image tag (each image gets its own placeholder)."""
    if isinstance(questions, str):
        questions = [questions]
    elif isinstance(questions, (bytes, bytearray)):
        raise JanusR1Error(f"{name} must be text (str), not bytes; decode it first (e.g. data.decode('utf-8')).")
    elif not isinstance(questions, (list, tuple)):
        raise JanusR1Error(f"{name} must be text (str) or a list of str (got {type(questions).__name__}).")
    out = list(questions)
    if not out:
        raise JanusR1Error(f"{name}: no question given; pass at least one non-empty text.")
    for i, q in enumerate(out):
        where = name if len(out) == 1 else f"{name}[{i}]"
        if not isinstance(q, str):
            raise JanusR1Error(f"{where} is a {type(q).__name__}; each question must be text (str).")
        if not q.strip():
            raise JanusR1Error(f"{where} is empty; ask something, e.g. 'Describe this image in detail.'")
        tags = [t for t in IMAGE_TAGS if t in q]
        if tags:
            raise JanusR1Error(f"{where} contains {tags[0]!r}; leave image tags out, each image gets its own.")
    return out


def load_image_groups(images, name: str = "images") -> list[list[Image.Image]]:
    """The images of each question: one image or path, or a list whose items are an image or path (one question
    each) or a list/tuple of them (several images shown in one question)."""
    if not isinstance(images, (list, tuple)):
        return [load_images(images, name)]
    if not images:
        raise JanusR1Error(f"{name}: no image given; pass a PIL image, a path, or a list of them.")
    groups = []
    for i, item in enumerate(images):
        many = isinstance(item, (list, tuple))
        if many and not item:
            raise JanusR1Error(f"{name}[{i}] is an empty list; give the images of that question.")
        group = []
        for k, im in enumerate(item if many else [item]):
            where = f"{name}[{i}][{k}]" if many else f"{name}[{i}]"
            if isinstance(im, (str, os.PathLike)):
                im = _open(i, Path(im), where)
            elif not isinstance(im, Image.Image):
                raise JanusR1Error(f"{where} is a {type(im).__name__}; each image must be a PIL image or a path "
                                   "(str or pathlib.Path).")
            group.append(imgs.to_rgb(im))
        groups.append(group)
    return groups


def pair_questions(questions: list[str], groups: list[list[Image.Image]]) -> tuple[list[str], list]:
    """One question for every image, one image for every question, or one question per image."""
    if len(questions) == 1 and len(groups) > 1:
        questions = questions * len(groups)
    if len(groups) == 1 and len(questions) > 1:
        groups = groups * len(questions)
    if len(questions) != len(groups):
        raise JanusR1Error(f"got {len(groups)} images but {len(questions)} questions; give one question, or one "
                           "per image.")
    return questions, groups


def add_second_images(groups: list[list[Image.Image]], images_b, name: str = "images_b") -> list:
    """Each question's images plus its second image (``images_b``: one for all, or one per image), for asking
    about two images at once (compare them)."""
    if images_b is None:
        return groups
    second = load_images(images_b, name)
    if len(second) == 1:
        second = second * len(groups)
    if len(second) != len(groups):
        raise JanusR1Error(f"got {len(second)} {name} for {len(groups)} images; give one, or one per image.")
    return [[*g, b] for g, b in zip(groups, second)]


def check_answer_sampling(temperature, top_p, top_k) -> tuple[float, float, int]:
    """Temperature >= 0 (0 = greedy), top-p in (0, 1] (1 = off), top-k >= 0 (0 = off)."""
    t = check_float("temperature", temperature, 0.0, "; 0 answers greedily")
    p = top_p
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not math.isfinite(float(p)) or not 0 < p <= 1:
        raise JanusR1Error(f"top_p must be a number in (0, 1] (got {p!r}); 1 switches it off.")
    return t, float(p), check_int("top_k", top_k, 0)
