"""The engine's hooks bridged to ComfyUI for one node execution: progress bar, live preview, streamed text,
interrupt (:func:`run.running` is the one caller)."""

from __future__ import annotations

import logging
import re

import torch

from .. import janus_r1
from .throttle import PreviewThrottle
from .work import Work, WorkBar

log = logging.getLogger("janus_r1.comfy")


class RunHooks:
    """* one ``comfy.utils.ProgressBar`` over the node's whole run (:class:`~.work.WorkBar`: it moves forward
      through every phase -- image 1/3, judge 1/3, ... -- and never restarts);
    * the partial image (missing codes padded) as the live preview, throttled by :class:`PreviewThrottle`;
    * the reasoning so far, streamed with ``PromptServer.send_progress_text`` where the server offers it;
    * ``should_cancel`` polls ComfyUI's interrupt flag between tokens (:func:`run.running` turns the engine's
      ``Cancelled`` into ComfyUI's own interrupt exception, so the prompt ends as interrupted)."""

    def __init__(self, jr: janus_r1.JanusR1, node_id: str | None, work: Work, text_every: int = 8):
        import comfy.model_management as mm
        import comfy.utils

        self.jr, self.node_id = jr, node_id
        self.work = WorkBar(work, jr.num_image_tokens)
        self.bar = comfy.utils.ProgressBar(self.work.total, node_id=node_id)
        self.text_every = max(1, text_every)
        self.preview = PreviewThrottle()
        self.transcript: list[str] = []
        self._server = _prompt_server()
        self.hooks = janus_r1.Hooks(
            on_step=self.on_step, should_cancel=mm.processing_interrupted, on_phase=self.on_phase
        )

    def on_phase(self, label: str) -> None:
        self.work.phase()
        self.preview.restart()
        self.transcript.append(f"[{label}]")
        self.stream("\n".join(self.transcript))

    def on_step(self, ev) -> None:
        total, step = max(int(ev.total), 1), int(ev.step)
        value = self.work.step(ev.phase, step, total)
        if ev.phase == "image":
            preview = self._preview(ev.tokens) if self.preview.due(step, total) else None
            if preview is not None or step % max(1, total // 64) == 0 or step == total:
                self.bar.update_absolute(value, self.work.total, preview)
        elif step % self.text_every == 0 or step == 1:
            self.bar.update_absolute(value, self.work.total)
            text = self._decode_text(ev.tokens)
            if text is not None:
                self.stream("\n".join([*self.transcript, text]))

    def _preview(self, tokens: torch.Tensor):
        """The first row's partial image (the engine's ``preview_image``)."""
        started = self.preview.clock()
        try:
            img = self.jr.preview_image(tokens)
        except Exception as e:  # a preview must never break the run
            log.debug("Janus-R1 preview failed: %s", e)
            return None
        finally:
            self.preview.done(started)
        # max_size = the image's own size: the server's ImageOps.contain would otherwise upscale a 384 image
        # to 512 and the frontend would caption the preview 512x512
        return ("JPEG", img, max(img.size))

    def _decode_text(self, tokens: torch.Tensor) -> str | None:
        try:
            return self.jr.vocab.decode(tokens[0].tolist())
        except Exception:  # streaming is best effort
            return None

    def stream(self, text: str) -> None:
        if self._server is None or self.node_id is None or not hasattr(self._server, "send_progress_text"):
            return
        try:
            self._server.send_progress_text(text, self.node_id)
        except Exception as e:  # no client connected, older server: the final ui text still shows it
            log.debug("Janus-R1 send_progress_text failed: %s", e)

    def finish(self) -> None:
        """The run is done: the bar at its end, however early the run stopped."""
        self.bar.update_absolute(self.work.finish(), self.work.total)


_CLI_HINT = re.compile(r"\s*\(CLI: [^)]*\)")


def for_comfy(message: str) -> str:
    """An engine message as the node shows it: the engine names the widget/argument and adds the CLI's flag in
    "(CLI: --flag)"; inside ComfyUI only the widget means anything."""
    return _CLI_HINT.sub("", message)


def _prompt_server():
    try:
        from server import PromptServer
    except Exception:  # unit tests, embedded executors
        return None
    return getattr(PromptServer, "instance", None)
