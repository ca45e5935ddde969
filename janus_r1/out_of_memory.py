"""An allocation that fails anyway (the plan is an estimate; other processes take memory meanwhile) becomes one
:class:`OutOfMemory` saying how much was asked for and what to do, in the CLI, the API and the nodes.

Why: the failures arrive as ``MemoryError`` (no size), ``RuntimeError: [enforce fail at alloc_cpu.cpp] .
DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes``, ``torch.OutOfMemoryError: CUDA out of
memory. Tried to allocate 2.00 GiB``, or an ``OSError`` / ``RuntimeError`` from ``mmap`` (ENOMEM) while a weight
file is mapped -- which the loader used to report as a corrupt file. Each is recognised here once.
"""

from __future__ import annotations

import errno
import functools
import re

from .errors import JanusR1Error

ADVICE = ("quantise the model to 4 bits, cap the weights kept on the device (the others stream from the CPU), or "
          "run fewer samples at once (CLI: --quantize 4bit, --max-memory GIB, a smaller --num-images, --batch-size "
          "or --chunk-size)")
_BYTES = re.compile(r"tried to allocate (\d+) bytes", re.I)
_CUDA = re.compile(r"tried to allocate ([\d.]+) ([KMGT]i?B)", re.I)
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class OutOfMemory(JanusR1Error):
    """An allocation failed: the message says how much was asked for and how to need less."""


def _size(text: str) -> int | None:
    m = _BYTES.search(text)
    if m:
        return int(m.group(1))
    m = _CUDA.search(text)
    if m:
        return int(float(m.group(1)) * _UNITS[m.group(2)[0].upper()])
    return None


def recognise(e: BaseException) -> OutOfMemory | None:
    """``e`` as an :class:`OutOfMemory` when it is an allocation failure, else None."""
    if isinstance(e, OutOfMemory):
        return e
    text = str(e)
    cuda = type(e).__name__ == "OutOfMemoryError" or "CUDA out of memory" in text
    host = (isinstance(e, MemoryError) or "can't allocate memory" in text or "DefaultCPUAllocator" in text
            or (isinstance(e, OSError) and e.errno == errno.ENOMEM) or "Cannot allocate memory" in text)
    if not (cuda or host):
        return None
    size = _size(text)
    asked = f" ({size / (1 << 30):.2f} GiB could not be allocated)" if size else ""
    where = "GPU" if cuda else "host"
    return OutOfMemory(f"out of {where} memory{asked}: the run needs more than is free; {ADVICE}.")


def translated(fn):
    """Decorator for the API's entry points: an allocation failure raises :class:`OutOfMemory` instead."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except JanusR1Error:
            raise
        except (MemoryError, RuntimeError, OSError) as e:
            oom = recognise(e)
            if oom is None:
                raise
            raise oom from e

    return wrapper
