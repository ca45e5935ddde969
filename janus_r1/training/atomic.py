"""Durable, atomic publication of checkpoint directories (both formats): every file synced before the rename,
``checkpoints/latest`` replaced by rename, so a crash never leaves a half-written checkpoint named as complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
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


@contextlib.contextmanager
def replaced_folder(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; when the block succeeds it replaces ``target`` (the old one is
    renamed away first and removed after), when it fails it is removed and ``target`` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
