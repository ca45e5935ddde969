"""Node outputs built from engine results: contact sheets, the outputs CoT Generate and Regenerate share, what a
node shows after its run (the images it returns, not the last live preview), and the reasoning a saved PNG
carries."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..janus_r1.generation import sheet
from . import text
from .images import as_drawn, fit_size, to_image, to_intermediate
from .widgets import INPUT_SIZE, MODEL_SIZE

PNG_KEY = "janus_r1"  # the PNG text chunk Save Image writes from extra_pnginfo, beside "prompt" and "workflow"


def sheet_output() -> io.Image.Output:
    return io.Image.Output(
        "sheet",
        display_name="sheet",
        tooltip="Every attempt side by side, captioned with its round, verdict and S; the chosen one framed.",
    )


def per_sample_outputs() -> list:
    """Appended after the older outputs (links in saved workflows address slots): one entry per sample, so a
    batch keeps each sample's own score, rounds and attempts."""
    return [
        io.Float.Output(
            "sample_scores",
            display_name="sample_scores",
            is_output_list=True,
            tooltip="S of each sample's final image, one per sample (exact).",
        ),
        io.Int.Output(
            "sample_rounds",
            display_name="sample_rounds",
            is_output_list=True,
            tooltip="Images each sample drew, one per sample.",
        ),
        io.Image.Output(
            "sample_attempts",
            display_name="sample_attempts",
            is_output_list=True,
            tooltip="Each sample's attempts as its own batch (a list, one batch per sample).",
        ),
    ]


def introspection_outputs(image_id: str, image_tip: str, attempts_tip: str, with_rounds: bool) -> list:
    """The outputs of CoT Generate and Regenerate, in slot order (links in saved workflows address slots):
    image, attempts, reasoning, score, [rounds,] sheet, then the per-sample lists."""
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
            tooltip="Self-evaluation score S in [0, 1] of the final image (mean over the batch; exact; "
            "sample_scores has one per sample).",
        ),
        *(rounds if with_rounds else []),
        sheet_output(),
        *per_sample_outputs(),
    ]


def contact_sheet(results) -> object:
    """One IMAGE: the engine's contact sheet, one row per sample."""
    return to_image([sheet.contact_sheet_grid(results)])


def ranked_sheet(results) -> object:
    """One IMAGE: ranked candidates as a grid captioned with rank and score (Best of N)."""
    return to_image([sheet.ranked_sheet(results)])


def shown(cls, images, report: str | None = None) -> dict:
    """The node's ``ui``: the images it returns (saved as temp previews), so after a run the node shows its
    output instead of the last live preview of a sampling row; and its text where it has one."""
    out = dict(ui.PreviewImage(images, cls=cls).as_dict())
    if report is not None:
        out.update(ui.PreviewText(report).as_dict())
    return out


def record_for_png(cls, task: str, samples: list[dict]) -> None:
    """Put this run's verdicts, scores and reflections into the prompt's ``extra_pnginfo`` (where ComfyUI keeps
    the workflow), so core Save Image nodes that run after this node write them as a ``janus_r1`` PNG text
    chunk, one entry per Janus-R1 node. Nothing happens where the prompt carries no extra_pnginfo (API calls
    without it) or where this node's result came from ComfyUI's cache."""
    extra = getattr(getattr(cls, "hidden", None), "extra_pnginfo", None)
    if not isinstance(extra, dict):
        return
    node = str(getattr(cls.hidden, "unique_id", "") or "")
    entry = extra.get(PNG_KEY)
    if not isinstance(entry, dict):
        entry = extra[PNG_KEY] = {}
    entry[node] = {"node": cls.define_schema().node_id, "task": task, "samples": samples}


def sample_record(r) -> dict:
    """One sample for the PNG chunk: the trace without VQ codes (576 numbers per attempt would swamp it)."""
    d = r.to_dict()
    for a in d["attempts"]:
        a.pop("codes", None)
        a.pop("file", None)
    d.pop("final_file", None)
    return d


def final_images(results, inputs=None, output_size: str = MODEL_SIZE):
    """The final image per sample as one IMAGE batch. Regenerate (``inputs`` given): an input the model
    accepted is returned as given, untouched; redraws are model-size squares, or stretched back to the input's
    width and height with ``input size`` -- or whenever the batch also holds an untouched input, since a ComfyUI
    batch has one size."""
    drawn = [r.image for r in results]
    if inputs is None:
        return to_image(drawn)
    inputs = inputs if inputs.ndim == 4 else inputs.unsqueeze(0)
    kept = [r.final_attempt.source == "input" for r in results]
    if all(kept):
        return to_intermediate(inputs)
    h, w = int(inputs.shape[1]), int(inputs.shape[2])
    if output_size == INPUT_SIZE or any(kept):
        drawn = [fit_size(im, (w, h)) for im in drawn]
    out = to_image(drawn)
    for i, k in enumerate(kept):
        if k:
            out[i] = to_intermediate(inputs[i])
    return out


def introspection(
    cls, results, size: int, header: str, with_rounds: bool, inputs=None, output_size: str = MODEL_SIZE
) -> io.NodeOutput:
    """image, attempts, reasoning, score, [rounds,] sheet and the per-sample lists of an introspective run; the
    node shows its final images and the reasoning. Attempts come as the model saw/drew them (``size`` square)
    so input images stack with the redraws."""
    reasoning = text.reasoning(results, header)
    scores = [r.final_attempt.score for r in results if r.final_attempt.score is not None]
    score = float(sum(scores) / len(scores)) if scores else 0.0
    finals = final_images(results, inputs, output_size)
    per_sample = [to_image(as_drawn([a.image for a in r.attempts], size)) for r in results]
    attempts = to_image(as_drawn([a.image for r in results for a in r.attempts], size))
    rounds = [max(r.rounds for r in results)] if with_rounds else []
    sample_scores = [float(r.final_attempt.score) if r.final_attempt.score is not None else 0.0 for r in results]
    record_for_png(cls, results[0].task, [sample_record(r) for r in results])
    return io.NodeOutput(
        finals,
        attempts,
        reasoning,
        score,
        *rounds,
        contact_sheet(results),
        sample_scores,
        [int(r.rounds) for r in results],
        per_sample,
        ui=shown(cls, finals, reasoning),
    )
