"""The shapes world's images for ``build-data --folder``: correct scenes, near misses and empty canvases.

Why a module of its own: the near misses are the errors an imperfect generator makes, and what the verdict learns
depends on which of them it is shown (docs/training.md, "Train your own"); :mod:`.shapes` keeps the world itself
(prompts, scenes, rendering, the rule judge).
"""

from __future__ import annotations

import random
from pathlib import Path

from .shapes import COLOURS, GRID, SHAPES, Placed, _place, judge, render, sample_scene


def near_miss(scene: list[Placed], prompt: str, rng: random.Random) -> list[Placed] | None:
    """``scene`` with one change the rule judge rejects for ``prompt`` (the errors an imperfect generator makes):
    one object recoloured, reshaped, dropped or doubled (the commonest), another added, the scene mirrored, or one
    object drawn askew (:func:`_askew`)."""
    k = rng.randrange(len(scene)) if scene else 0
    scene = list(scene)
    kind = rng.choice(["colour", "shape", "drop", "double", "add", "swap", "skew"] if scene else ["add"])
    new = None  # (colour, shape) of an object to place
    if kind == "skew":
        o = scene.pop(k)
        pieces = _askew(o, rng)
        taken = {c for x in scene for c in x.cells()}
        if any(not (0 <= r < GRID and 0 <= c < GRID) or (r, c) in taken for x in pieces for r, c in x.cells()):
            return None
        scene += pieces
    elif kind == "colour":
        o = scene[k]
        scene[k] = Placed(rng.choice([c for c in COLOURS if c != o.colour]), o.shape, o.row, o.col)
    elif kind == "shape":
        o = scene.pop(k)
        new = (o.colour, rng.choice([s for s in SHAPES if s != o.shape]))
    elif kind == "drop":
        del scene[k]
    elif kind in ("add", "double"):
        new = (scene[k].colour, scene[k].shape) if kind == "double" else (rng.choice(list(COLOURS)), rng.choice(SHAPES))
    else:
        scene = [Placed(x.colour, x.shape, x.row, GRID - 1 - x.last_col) for x in scene]
    if new:
        x = _place(scene, *new, rng)
        if x is None:  # the change drawn does not fit
            return None
        scene.append(x)
    return scene if judge(render(scene), prompt)[0] < 0.5 else None  # None: it still matches


def _askew(o: Placed, rng: random.Random) -> list[Placed]:
    """``o``'s cells out of line: a block's lower row shifted one cell sideways (a blob to the judge); a bar's right
    cell moved under its left one (a vertical pair: a blob) or one row down (two dots, diagonal); a dot doubled
    into the cell below (a blob). Why this kind: of the SFT model's own wrong images whose colours were right, most
    are one object's cells out of line (".gg. / gg.." for two bars) and its verdict accepted them at S 0.7-1; the
    other kinds change whole objects."""
    step = rng.choice((-1, 1))
    if o.shape == "block":
        return [Placed(o.colour, "bar", o.row, o.col), Placed(o.colour, "bar", o.row + 1, o.col + step)]
    if o.shape == "bar":
        return [Placed(o.colour, "dot", o.row, o.col), Placed(o.colour, "dot", o.row + 1, o.col + (step > 0))]
    return [o, Placed(o.colour, "dot", o.row + 1, o.col)]


def wrong_scene(prompt: str, rng: random.Random, like: list[Placed] | None = None) -> list[Placed]:
    """A scene that almost matches ``prompt``: a :func:`near_miss` of ``like``, or of a fresh correct scene."""
    for _ in range(100):
        scene = near_miss(like if like is not None else sample_scene(prompt, rng), prompt, rng)
        if scene is not None:
            return scene
    raise RuntimeError(f"no wrong scene found for {prompt!r}")


def write_world_folder(root, prompts: list[str], right: int = 3, wrong: int = 3, seed: int = 0,
                       empty: int = 0, pairs: bool = False) -> Path:
    """Renderings in the layout ``build-data --folder`` reads (``root/<promptid:05d>/samples/*.png``): per prompt
    ``right`` correct scenes, ``wrong`` near misses and ``empty`` empty canvases -- the shapes world's stand-in for
    another generator (one that sometimes draws nothing: the easy negatives from which the verdict starts to
    read the image at all; with near misses alone it stayed at chance, docs/training.md).

    ``pairs``: near miss k is correct scene ``k % right`` with one change (minimal pairs: a positive and a negative
    differ in what the verdict must read and little else); otherwise each near miss comes from a fresh scene."""
    root = Path(root)
    rng = random.Random(seed)
    for i, p in enumerate(prompts):
        d = root / f"{i:05d}" / "samples"
        d.mkdir(parents=True, exist_ok=True)
        good = [sample_scene(p, rng) for _ in range(right)]
        scenes = good + [wrong_scene(p, rng, good[k % right] if pairs and right else None) for k in range(wrong)]
        scenes += [[] for _ in range(empty)]
        for k, scene in enumerate(scenes):
            render(scene).save(d / f"{k:04d}.png")
    return root
