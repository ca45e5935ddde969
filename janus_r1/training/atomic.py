"""Durable, atomic publication of checkpoint directories (both formats): every file synced before the rename,
``checkpoints/latest`` replaced by rename, so a crash never leaves a half-written checkpoint named as complete."""

from __future__ import annotations

import contextlib
import errno
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


class CheckpointWriteFailed(OSError):
    """A checkpoint could not be written (disk full, quota): one line naming the folder and the space needed; the
    half-written temporary folder is removed and the last complete checkpoint stays the resume point. An
    ``OSError``, so the CLIs print it as one ``error:`` line and exit 1 (a failure while writing, not bad input)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)


def free_bytes(path: Path) -> int:
    """Free space of the file system holding ``path`` (or its nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def _out_of_space(e: BaseException) -> bool:
    """Whether ``e`` (or what caused it) is a full disk. DCP's torch.save writer reports it as
    ``RuntimeError: [enforce fail at inline_container.cc] . unexpected pos``, safetensors as ``StorageFull``."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e)
        if any(s in text for s in ("No space left", "unexpected pos", "StorageFull", "Disk quota exceeded")):
            return True
        e = e.__cause__ or e.__context__
    return False


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) if Path(path).is_dir() else 0


def write_failure(e: BaseException, tmp: Path, need: int) -> BaseException:
    """The error to raise for a failed checkpoint write into ``tmp`` (removed here): a
    :class:`CheckpointWriteFailed` when the disk is full (or has less free than ``need``), else ``e`` itself."""
    shutil.rmtree(tmp, ignore_errors=True)
    free = free_bytes(tmp.parent)
    if not (_out_of_space(e) or free < need):
        return e
    latest = tmp.parent / "latest"
    keep = f"checkpoint {latest.read_text().strip()}" if latest.is_file() else "no checkpoint yet"
    gib = 1024**3
    return CheckpointWriteFailed(
        f"no space left on device for the checkpoint in {tmp.parent}: it needs about {need / gib:.2f} GiB and "
        f"{free / gib:.2f} GiB is free there; free space (or lower keep_checkpoints, or use another --out) and "
        f"resume with --resume auto, which continues from the last complete one ({keep})")
