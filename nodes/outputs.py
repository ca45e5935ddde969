"""Node outputs built from engine results: the contact sheet, and the outputs CoT Generate and Regenerate share."""

from __future__ import annotations

from comfy_api.latest import io, ui

from . import text
from .engine import engine_module
from .images import as_drawn, to_image


def sheet_output() -> io.Image.Output:
    return io.Image.Output(
        "sheet",
        display_name="sheet",
        tooltip="Every attempt side by side, captioned with its round, verdict and S; the chosen one framed.",
    )


def contact_sheet(results) -> object:
    """One IMAGE: the engine's contact sheet, one row per sample."""
    return to_image([engine_module("generation.sheet").contact_sheet_grid(results)])


def introspection(results, size: int, header: str, with_rounds: bool) -> io.NodeOutput:
    """image, attempts, reasoning, score, [rounds,] sheet of an introspective run; the reasoning shown on the
    node. Input images come back as the model saw them (``size`` square) so they stack with the redraws."""
    shown = text.reasoning(results, header)
    scores = [r.final_attempt.score for r in results if r.final_attempt.score is not None]
    score = float(sum(scores) / len(scores)) if scores else 0.0
    finals = to_image(as_drawn([r.image for r in results], size))
    attempts = to_image(as_drawn([a.image for r in results for a in r.attempts], size))
    rounds = [max(r.rounds for r in results)] if with_rounds else []
    return io.NodeOutput(
        finals, attempts, shown, score, *rounds, contact_sheet(results), ui=ui.PreviewText(shown)
    )
