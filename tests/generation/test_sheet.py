"""The ``final`` rule (last | best) and contact sheets: layout, captions' place, the chosen attempt's frame."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from janus_r1 import JanusR1Error
from janus_r1.generation.sheet import BORDER, CHOSEN, MARGIN, contact_sheet, contact_sheet_grid, ranked_sheet
from janus_r1.generation.trace import Attempt, Judgement, SampleResult, choose_final


def _attempt(k: int, score: float | None, colour, source: str = "generated") -> Attempt:
    jd = None if score == "unjudged" else Judgement("No", score, "No, because.")
    return Attempt(k, Image.new("RGB", (32, 32), colour), [0] * 16, source=source, judgement=jd)


@pytest.mark.parametrize("scores, best", [
    ([0.212, 0.167], 0),                 # the case: the redraw scored lower than the input
    ([0.1, 0.3, 0.3], 2),                # ties go to the later attempt
    ([None, 0.4, 0.2], 1),               # a caller's critique (no S) is not a candidate ...
    ([None, "unjudged"], 1),             # ... unless nothing has a score: then the paper's last image
    ([0.9, 0.2, "unjudged"], 0),         # an unjudged last image (judge_final=False) is not a candidate
])
def test_choose_final_best_and_last(scores, best):
    attempts = [_attempt(k + 1, s, "red") for k, s in enumerate(scores)]
    assert choose_final(attempts, "best") == best
    assert choose_final(attempts, "last") == len(scores) - 1


def test_generate_final_best_picks_highest_score_and_records_rule(micro, force_verdict):
    with force_verdict("No", boost=3.0):  # every image judged "No": all three rounds run
        last = micro.generate("a red cat", max_rounds=3, max_reflection=4, seed=11)[0]
        best = micro.generate("a red cat", max_rounds=3, max_reflection=4, seed=11, final="best")[0]
    assert [a.codes for a in best.attempts] == [a.codes for a in last.attempts]  # the rule changes no draw
    scores = [a.score for a in best.attempts]
    assert len(scores) == 3 and None not in scores
    assert last.final == 2 and last.final_rule == "last" and last.to_dict()["final_rule"] == "last"
    want = max(range(3), key=lambda i: (scores[i], i))
    assert best.final == want and best.image is best.attempts[want].image
    assert best.to_dict()["final_rule"] == "best" and best.to_dict()["final"] == want
    with pytest.raises(JanusR1Error, match="final must be one of 'last', 'best'"):
        micro.generate("a red cat", final="highest")


def test_regenerate_final_best_with_caller_critique(micro, force_verdict):
    src = Image.new("RGB", (48, 48), (10, 200, 10))
    with force_verdict("No", boost=3.0):
        [r] = micro.regenerate(src, "a red cat", critiques="no cat", max_rounds=3, max_reflection=4, seed=2,
                               final="best")
    assert r.attempts[0].score is None and r.final_rule == "best"
    judged = [i for i, a in enumerate(r.attempts) if a.score is not None]
    assert r.final == max(judged, key=lambda i: (r.attempts[i].score, i))


def _result(scores, final: int) -> SampleResult:
    colours = [(255, 0, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)]
    attempts = [_attempt(k + 1, s, colours[k], "input" if k == 0 else "generated") for k, s in enumerate(scores)]
    return SampleResult("a red cat", 0, attempts, final=final)


@pytest.mark.parametrize("thumb", [64, 256])
def test_contact_sheet_layout_and_chosen_frame(thumb):
    r = _result([0.212, 0.167, "unjudged"], final=0)
    sheet = contact_sheet(r, thumb=thumb)
    assert sheet.width == 3 * thumb + 4 * MARGIN and sheet.height > thumb + 2 * MARGIN
    px = sheet.load()
    for k, colour in enumerate([(255, 0, 0), (0, 0, 255), (255, 255, 255)]):  # thumbnails in round order
        x = MARGIN + k * (thumb + MARGIN)
        assert px[x + thumb // 2, MARGIN + thumb // 2] == colour
        frame = px[x - BORDER // 2 - 1, MARGIN + thumb // 2]  # in the margin left of the thumbnail
        assert (frame == CHOSEN) == (k == 0)
    # the frame surrounds the chosen thumbnail on all four sides and never covers the image
    x0 = MARGIN
    assert px[x0 + thumb + BORDER // 2, MARGIN + 5] == CHOSEN
    assert px[x0 + thumb // 2, MARGIN - BORDER // 2 - 1] == CHOSEN
    assert px[x0 + thumb // 2, MARGIN + thumb + BORDER // 2] == CHOSEN
    assert px[x0, MARGIN] == (255, 0, 0) and px[x0 + thumb - 1, MARGIN + thumb - 1] == (255, 0, 0)
    # captions sit under the thumbnails: some light text pixels below each one
    for k in range(3):
        x = MARGIN + k * (thumb + MARGIN)
        strip = sheet.crop((x, MARGIN + thumb + BORDER + 1, x + thumb, sheet.height))
        assert np.asarray(strip.convert("L")).max() > 150


def test_contact_sheet_moves_frame_with_final():
    r = _result([0.1, 0.5], final=1)
    px = contact_sheet(r, thumb=64).load()
    assert px[MARGIN - BORDER // 2 - 1, MARGIN + 32] != CHOSEN
    assert px[MARGIN + 64 + MARGIN - BORDER // 2 - 1, MARGIN + 32] == CHOSEN


def test_grid_best_of_n_marks_only_the_pick():
    rows = [_result([s], final=0) for s in (0.3, 0.8, 0.5)]
    one = contact_sheet(rows[0], thumb=64)
    grid = contact_sheet_grid(rows, thumb=64)
    assert grid.size == (one.width, 3 * one.height)
    px = grid.load()
    marked = [px[MARGIN - BORDER // 2 - 1, i * one.height + MARGIN + 32] == CHOSEN for i in range(3)]
    assert marked == [False, True, False]
    explicit = contact_sheet_grid(rows, thumb=64, chosen=2).load()
    assert [explicit[MARGIN - 3, i * one.height + MARGIN + 32] == CHOSEN for i in range(3)] == [False, False, True]


def test_grid_of_cot_results_marks_each_rows_final_and_left_aligns():
    a, b = _result([0.1, 0.2, 0.3], final=2), _result([0.9], final=0)
    grid = contact_sheet_grid([a, b], thumb=64)
    ha = contact_sheet(a, thumb=64).height
    assert grid.width == 3 * 64 + 4 * MARGIN
    px = grid.load()
    assert px[MARGIN + 2 * (64 + MARGIN) - 3, MARGIN + 32] == CHOSEN
    assert px[MARGIN - 3, ha + MARGIN + 32] == CHOSEN


@pytest.mark.parametrize("call, match", [
    (lambda: contact_sheet(None), "SampleResult"),
    (lambda: contact_sheet(_result([0.1], 0), thumb=0), "thumb"),
    (lambda: contact_sheet_grid([]), "non-empty list"),
    (lambda: contact_sheet_grid([_result([0.1], 0)], chosen=3), "chosen"),
])
def test_sheet_bad_input(call, match):
    with pytest.raises(JanusR1Error, match=match):
        call()


def test_ranked_sheet_is_a_grid_labelled_with_rank_and_score(monkeypatch):
    """Best of N (issue 17, finding 5): a near-square grid, best first, row by row; only #1 framed; captions
    carry the rank and S (checked on the strings drawn, since the default font has no OCR-friendly size)."""
    from janus_r1.generation import sheet as sheet_mod

    ranked = [_result([s], final=0) for s in (0.8, 0.5, 0.3, 0.2, 0.1)]
    for k, r in enumerate(ranked):
        r.index = (k + 2) % 5  # candidate numbers in drawing order, not rank order
    drawn: list[str] = []
    real_text = sheet_mod.ImageDraw.ImageDraw.text
    monkeypatch.setattr(sheet_mod.ImageDraw.ImageDraw, "text",
                        lambda self, xy, text, *a, **k: (drawn.append(text), real_text(self, xy, text, *a, **k)))
    grid = ranked_sheet(ranked, thumb=64)
    cols, rows = 3, 2  # ceil(sqrt(5)) columns
    assert grid.width == cols * 64 + (cols + 1) * MARGIN
    assert (grid.height - MARGIN) % rows == 0 and rows * 64 < grid.height < 5 * 64  # not one tall column
    px = grid.load()
    cell_h = (grid.height - MARGIN) // rows
    framed = [px[MARGIN + c * (64 + MARGIN) - BORDER // 2 - 1, MARGIN + r * cell_h + 32] == CHOSEN
              for r in range(rows) for c in range(cols)][:5]
    assert framed == [True, False, False, False, False]
    assert [t for t in drawn if t.startswith("#")] == ["#1  S 0.800", "#2  S 0.500", "#3  S 0.300", "#4  S 0.200",
                                                     "#5  S 0.100"]
    assert "candidate 3" in drawn and "chosen" in drawn
    assert ranked_sheet(ranked[:1], thumb=64).width == 64 + 2 * MARGIN
    with pytest.raises(JanusR1Error, match="non-empty list"):
        ranked_sheet([])


def test_non_square_images_are_letterboxed_never_stretched():
    """Issue 25, finding 4: a 300x500 portrait (Regenerate's input) sits whole in its tile at its own aspect
    ratio, centred on the background; a square redraw fills its tile. Same in the ranked grid."""
    from janus_r1.generation.sheet import BACKGROUND

    portrait = Image.new("RGB", (300, 500), (255, 0, 0))
    first = Attempt(1, portrait, [0] * 16, source="input", judgement=Judgement("No", 0.2, "No."))
    second = Attempt(2, Image.new("RGB", (32, 32), (0, 0, 255)), [0] * 16, judgement=Judgement("Yes", 0.7, "Yes."))
    thumb = 100
    px = contact_sheet(SampleResult("a cat", 0, [first, second], final=1), thumb=thumb).load()
    y = MARGIN + thumb // 2
    w = round(300 * thumb / 500)  # 60 px wide, 100 high
    left = MARGIN + (thumb - w) // 2
    assert px[MARGIN + 2, y] == BACKGROUND and px[MARGIN + thumb - 3, y] == BACKGROUND  # bars left and right
    assert px[left + 1, y] == (255, 0, 0) and px[left + w - 2, y] == (255, 0, 0)  # the image, not wider
    assert px[MARGIN + thumb // 2, MARGIN + 1] == (255, 0, 0)  # full height
    x2 = MARGIN + thumb + MARGIN
    assert px[x2 + 1, y] == (0, 0, 255) and px[x2 + thumb - 2, y] == (0, 0, 255)  # a square fills its tile
    grid = ranked_sheet([SampleResult("a cat", 0, [first], final=0)], thumb=thumb).load()
    assert grid[MARGIN + 2, y] == BACKGROUND and grid[left + 1, y] == (255, 0, 0)
