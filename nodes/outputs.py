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


def introspection_outputs(image_id: str, image_tip: str, attempts_tip: str, with_rounds: bool) -> list:
    """The outputs of CoT Generate and Regenerate, in slot order (links in saved workflows address slots):
    image, attempts, reasoning, score, [rounds,] sheet."""
    rounds = [
        io.Int.Output("rounds", display_name="rounds", tooltip="Images drawn (the most over the batch).")
    ]
    return [
        io.Image.Output(image_id, display_name="image", tooltip=image_tip),
        io.Image.Output("attempts", display_name="attempts", tooltip=attempts_tip),
        io.String.Output(
            "reasoning",
            display_name="reasoning",
            tooltip="Each attempt's verdict, score and reflection, and which image was chosen and why.",
        ),
        io.Float.Output(
            "score",
            display_name="score",
            tooltip="Self-evaluation score S in [0, 1] of the final image (mean over the batch; exact).",
        ),
        *(rounds if with_rounds else []),
        sheet_output(),
    ]


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
