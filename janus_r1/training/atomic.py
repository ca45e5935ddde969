"""Durable, atomic publication of checkpoint directories (both formats): every file synced before the rename,
``checkpoints/latest`` replaced by rename, so a crash never leaves a half-written checkpoint named as complete."""

from __future__ import annotations

import os
from pathlib import Path


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """Every file under ``path`` on disk before the directory is renamed into place."""
    for f in sorted(path.rglob("*")):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        elif f.is_dir():
            _fsync_dir(f)


def publish(final: Path) -> None:
    """Point ``checkpoints/latest`` at the complete checkpoint ``final`` (atomic rename)."""
    ckdir = final.parent
    (ckdir / ".latest.tmp").write_text(final.name)
    os.replace(ckdir / ".latest.tmp", ckdir / "latest")
    _fsync_dir(ckdir)
