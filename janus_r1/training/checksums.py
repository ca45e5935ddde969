"""Checkpoints that verify themselves: a SHA-256 of every file, written after the write completes and before the
checkpoint is published, checked before a resume or an export uses it.

Why: DCP and safetensors read whatever bytes are on disk. A flipped byte in a shard resumed silently (a corrupted
tensor trained on and exported), and a truncated shard or ``state.json`` ended in a raw ``EOFError`` /
``JSONDecodeError`` traceback although an earlier complete checkpoint existed. The manifest is in ``sha256sum``'s
format (``checksums.sha256``: ``<hex>  <path>`` per line), so ``cd step-N && sha256sum -c checksums.sha256``
checks a checkpoint by hand too. Hashing reads each file once in 8 MiB blocks (hashlib releases the GIL: a
background save hashes while the training runs); see docs/training.md for the measured cost per GB.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from ..errors import JanusR1Error

logger = logging.getLogger("janus_r1.training")
MANIFEST = "checksums.sha256"
BLOCK = 8 << 20


class CheckpointDamaged(JanusR1Error):
    """A checkpoint whose files do not match the checksums written with it (or cannot be read)."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_checksums(folder: Path) -> int:
    """Hash every file of the complete (not yet published) checkpoint ``folder`` into its manifest; returns the
    bytes hashed."""
    folder = Path(folder)
    lines, total = [], 0
    for p in _files(folder):
        lines.append(f"{file_sha256(p)}  {p.relative_to(folder).as_posix()}\n")
        total += p.stat().st_size
    tmp = folder / f".{MANIFEST}.tmp"
    with open(tmp, "w") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MANIFEST)
    return total


def verify(folder: Path) -> None:
    """Raise :class:`CheckpointDamaged` naming the first file that is missing, unreadable or differs from the
    manifest. A checkpoint written before manifests existed is checked for a readable ``state.json`` only."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        logger.warning(f"checkpoint {folder} has no {MANIFEST} (written by an earlier version): not verified")
    else:
        for n, line in enumerate(manifest.read_text(errors="replace").splitlines(), 1):
            digest, sep, rel = line.partition("  ")
            if not sep or len(digest) != 64:
                raise CheckpointDamaged(f"checkpoint {folder} is damaged: {MANIFEST} line {n} is malformed")
            path = folder / rel
            if not path.is_file():
                raise CheckpointDamaged(f"checkpoint {folder} is damaged: {rel} is missing")
            try:
                ok = file_sha256(path) == digest
            except OSError as e:
                raise CheckpointDamaged(f"checkpoint {folder} is damaged: {rel} cannot be read "
                                        f"({e.strerror or e})") from None
            if not ok:
                raise CheckpointDamaged(f"checkpoint {folder} is damaged: {rel} does not match its checksum")
    try:
        json.loads((folder / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointDamaged(f"checkpoint {folder} is damaged: state.json cannot be read ({e})") from None


def newest_verified(ckdir: Path, latest: str | None) -> tuple[Path | None, list[str]]:
    """``--resume auto``: the checkpoint ``latest`` names if it verifies, else the newest earlier one that does;
    returns it (None: none verifies) and one line per checkpoint that failed."""
    names = sorted((p.name for p in ckdir.glob("step-*") if p.is_dir()), reverse=True)
    if latest in names:  # latest first, then the others newest first
        names.remove(latest)
        names.insert(0, latest)
    failed = []
    for name in names:
        try:
            verify(ckdir / name)
            return ckdir / name, failed
        except CheckpointDamaged as e:
            failed.append(str(e))
    return None, failed
