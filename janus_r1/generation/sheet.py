"""Contact sheets: every attempt of a run side by side, captioned, the chosen one framed -- people would rather
look than read a trace. The CLI writes ``NNN_sheet.png``; the ComfyUI nodes output the same image.

Layout of :func:`contact_sheet`: ``MARGIN`` px around and between thumbnails of ``thumb`` x ``thumb`` px, so the
width is ``n * thumb + (n + 1) * MARGIN``; a non-square image sits whole in its tile, letterboxed on the
background; under each thumbnail a caption (round and source, verdict and S to 3 decimals, "chosen"); the chosen
attempt is framed by a ``BORDER`` px ``CHOSEN`` rectangle drawn in the margin just outside its thumbnail.
"""

from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

from ..errors import JanusR1Error
from .checks import check_int
from .trace import Attempt, SampleResult

MARGIN = 8
BORDER = 4  # < MARGIN: the frame sits in the margin and never covers a pixel of the image
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
CHOSEN = (46, 204, 64)  # the frame and the "chosen" label


def _font(thumb: int):
    """PIL's built-in font, scaled with the thumbnail where Pillow >= 10.1 allows a size."""
    size = max(10, thumb // 18)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def _line_height(font) -> int:
    box = font.getbbox("Ag|")
    return box[3] - box[1] + 4


def _tile(image: Image.Image, thumb: int) -> Image.Image:
    """``image`` whole in a ``thumb`` x ``thumb`` tile, its aspect ratio kept: a non-square input (a 300x500
    portrait given to Regenerate) is letterboxed on the sheet's background, never squashed into the square."""
    image = image.convert("RGB")
    if image.width == image.height:
        return image.resize((thumb, thumb), Image.BICUBIC)
    scale = thumb / max(image.width, image.height)
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    tile = Image.new("RGB", (thumb, thumb), BACKGROUND)
    tile.paste(image.resize((w, h), Image.BICUBIC), ((thumb - w) // 2, (thumb - h) // 2))
    return tile


def _caption(a: Attempt) -> list[str]:
    src = "input" if a.source == "input" else "generated"
    if a.judgement is None:
        judged = "not judged"
    else:
        judged = a.verdict + (" (critique given)" if a.score is None else f"  S {a.score:.3f}")
    return [f"round {a.round} · {src}", judged]


def _caption_height(font) -> int:
    return 3 * _line_height(font) + MARGIN // 2


def _row(result: SampleResult, thumb: int, font, mark: bool) -> Image.Image:
    n = len(result.attempts)
    line = _line_height(font)
    cap = _caption_height(font)
    sheet = Image.new("RGB", (n * thumb + (n + 1) * MARGIN, thumb + cap + 2 * MARGIN), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    chosen = result.final % n if mark else -1
    for k, a in enumerate(result.attempts):
        x = MARGIN + k * (thumb + MARGIN)
        sheet.paste(_tile(a.image, thumb), (x, MARGIN))
        if k == chosen:
            draw.rectangle([x - BORDER, MARGIN - BORDER, x + thumb + BORDER - 1, MARGIN + thumb + BORDER - 1],
                           outline=CHOSEN, width=BORDER)
        # each caption is drawn on its own strip, so long text is clipped to its column
        strip = Image.new("RGB", (thumb, cap), BACKGROUND)
        sd = ImageDraw.Draw(strip)
        lines = _caption(a) + (["chosen"] if k == chosen else [])
        for i, text in enumerate(lines):
            sd.text((0, i * line + 2), text, fill=CHOSEN if text == "chosen" else TEXT, font=font)
        sheet.paste(strip, (x, MARGIN + thumb + MARGIN // 2))
    return sheet


def contact_sheet(result: SampleResult, thumb: int = 256) -> Image.Image:
    """Every attempt of ``result`` left to right (round order), the chosen one (``result.final``) framed."""
    if not isinstance(result, SampleResult) or not result.attempts:
        raise JanusR1Error("result must be a SampleResult with at least one attempt.")
    thumb = check_int("thumb", thumb, 16, 4096)
    return _row(result, thumb, _font(thumb), mark=True)


def _best_row(results: list[SampleResult]) -> int:
    """Best of N: the row whose (only) attempt scored highest; ties to the earlier row (ranked lists)."""
    scores = [r.final_attempt.score for r in results]
    known = [(s, -i) for i, s in enumerate(scores) if s is not None]
    return -max(known)[1] if known else 0


def contact_sheet_grid(results: list[SampleResult], thumb: int = 256, chosen: int | None = None) -> Image.Image:
    """Several results as rows (left-aligned, each row a :func:`contact_sheet`).

    Which attempts are framed: with ``chosen`` given, only that row's final attempt. Otherwise, if every result
    has a single attempt (Best of N), only the highest-scored row -- the pick; else each row's own final."""
    if not results or not all(isinstance(r, SampleResult) and r.attempts for r in results):
        raise JanusR1Error("results must be a non-empty list of SampleResult, each with at least one attempt.")
    thumb = check_int("thumb", thumb, 16, 4096)
    if chosen is not None:
        chosen = check_int("chosen", chosen, 0, len(results) - 1)
    font = _font(thumb)
    if chosen is None and all(len(r.attempts) == 1 for r in results):
        chosen = _best_row(results)
    rows = [_row(r, thumb, font, mark=chosen is None or i == chosen) for i, r in enumerate(results)]
    grid = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), BACKGROUND)
    y = 0
    for r in rows:
        grid.paste(r, (0, y))
        y += r.height
    return grid


def ranked_sheet(results: list[SampleResult], thumb: int = 256, columns: int | None = None) -> Image.Image:
    """Ranked candidates (Best of N: best first) as a near-square grid, row by row, each captioned with its rank
    and S ("#1  S 0.912", "candidate 3"); #1 -- the pick -- framed. A grid rather than one column, so a Preview
    node shows every candidate at a readable size (``columns`` defaults to ceil(sqrt(n)))."""
    if not results or not all(isinstance(r, SampleResult) and r.attempts for r in results):
        raise JanusR1Error("results must be a non-empty list of SampleResult, each with at least one attempt.")
    thumb = check_int("thumb", thumb, 16, 4096)
    n = len(results)
    cols = check_int("columns", columns, 1) if columns is not None else max(1, math.ceil(math.sqrt(n)))
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    font = _font(thumb)
    line, cap = _line_height(font), _caption_height(font)
    cell_h = thumb + cap + MARGIN
    sheet = Image.new("RGB", (cols * thumb + (cols + 1) * MARGIN, rows * cell_h + MARGIN), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for rank, r in enumerate(results, 1):
        a = r.final_attempt
        x = MARGIN + ((rank - 1) % cols) * (thumb + MARGIN)
        y = MARGIN + ((rank - 1) // cols) * cell_h
        sheet.paste(_tile(a.image, thumb), (x, y))
        if rank == 1:
            draw.rectangle([x - BORDER, y - BORDER, x + thumb + BORDER - 1, y + thumb + BORDER - 1],
                           outline=CHOSEN, width=BORDER)
        strip = Image.new("RGB", (thumb, cap), BACKGROUND)
        sd = ImageDraw.Draw(strip)
        score = "S n/a" if a.score is None else f"S {a.score:.3f}"
        lines = [f"#{rank}  {score}", f"candidate {r.index + 1}"] + (["chosen"] if rank == 1 else [])
        for i, text in enumerate(lines):
            sd.text((0, i * line + 2), text, fill=CHOSEN if text == "chosen" else TEXT, font=font)
        sheet.paste(strip, (x, y + thumb + MARGIN // 2))
    return sheet


__all__ = ["contact_sheet", "contact_sheet_grid", "ranked_sheet", "MARGIN", "BORDER", "CHOSEN"]
