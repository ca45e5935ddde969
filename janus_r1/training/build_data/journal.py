"""build-data's journals: complete JSON lines only, each fsynced, so a killed run resumes with no
duplicate and no torn row; and its progress bars."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# --- journal (resumable, no torn rows) -----------------------------------------------------------------------

def journal_rows(path: Path) -> list[dict]:
    """The complete rows of a journal; a torn tail (a kill mid-write) is cut off the file."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    rows, good = [], 0
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            rows.append(json.loads(line))
        except ValueError:
            break
        good += len(line)
    if good < len(raw):
        with open(path, "r+b") as f:
            f.truncate(good)
    return rows


class Journal:
    """Append complete JSON lines, each flushed and fsynced before the next prompt starts."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(self.path, "ab")
        return self

    def append(self, row: dict) -> None:
        self.f.write((json.dumps(row, ensure_ascii=False) + "\n").encode())
        self.f.flush()
        os.fsync(self.f.fileno())

    def __exit__(self, *exc) -> None:
        self.f.close()


def bar(it, total: int, desc: str, quiet: bool):
    """A tqdm bar on stderr (``it`` None: a bar updated by hand); with ``quiet``, ``it`` itself (None: no bar)."""
    if quiet:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, unit="prompt", file=sys.stderr, dynamic_ncols=True)
