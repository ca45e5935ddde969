"""The one error type every user-facing entry point raises for bad input or a bad model directory.

Callers (the CLI, the ComfyUI nodes, pipelines) catch a single class and show its message; the message always
says what was wrong and what to do about it.
"""

from __future__ import annotations


class JanusR1Error(ValueError):
    """Bad input, bad parameters or an unusable model directory; the message says how to fix it."""


class Cancelled(RuntimeError):
    """Raised between two decode steps when the caller's cancel hook asked to stop.

    Nothing is cached across calls, so the model stays loaded and usable after a cancellation.
    """
