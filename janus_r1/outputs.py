"""Writing a run's files: all of them or none, with the permissions the user's umask asks for.

Used by the CLI and by batch generation (it lives here so neither imports the other). A run's files are encoded
in memory, written into a temporary folder next to the target (same filesystem), fsynced, then moved into place:
by one directory rename when the target does not exist yet, else file by file with ``trace.json`` last (a rename
needs no free space, so a full disk fails while writing the temporary folder, which is then removed). Files are
created with ``open``/``os.open`` mode 0666 and directories 0777, both masked by the umask -- not ``mkstemp``'s
0600. :func:`check_output_dir` runs before any model is loaded, so a bad ``--out`` costs no time.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
from pathlib import Path

from .errors import JanusR1Error


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _temp_name(target: Path) -> Path:
    return target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """One file: write a temp file next to ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        _write_new(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_files_together(target: Path, files: dict[str, bytes], last: str | None = None) -> None:
    """Write ``files`` (relative path -> bytes) into directory ``target`` as one set: nothing is left behind
    (in ``target`` or beside it) if any write fails. ``last`` is moved in after every other file."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(target)
    os.mkdir(tmp)  # mode 0777 & ~umask
    try:
        for rel, data in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            _write_new(tmp / rel, data)
        if not target.exists():
            try:
                os.rename(tmp, target)  # the whole set appears at once
                return
            except OSError:
                if not target.exists():  # not a lost race with another writer: a real failure
                    raise
        order = [r for r in files if r != last] + ([last] if last in files else [])
        for rel in order:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / rel, target / rel)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_output_dir(out: str | Path, what: str = "--out") -> Path:
    """Fail now, before the model loads, if ``out`` cannot become a directory we can write into: a dangling or
    looping symbolic link on the way, or a non-directory, is refused here rather than after the whole run."""
    out = Path(out)
    probe = out
    while True:  # the nearest existing ancestor must be a writable directory
        if os.path.lexists(probe) and not probe.exists():
            raise JanusR1Error(f"{what} {out}: {probe} is a symbolic link to nothing (dangling, or a loop); "
                               "remove it or give another path.")
        if probe.exists() or probe.parent == probe:
            break
        probe = probe.parent
    if probe == out and not out.is_dir():
        raise JanusR1Error(f"{what} {out} exists and is not a directory; give a directory path.")
    if not probe.is_dir():
        raise JanusR1Error(f"{what} {out}: {probe} is not a directory.")
    try:  # os.access misreads read-only mounts and /proc-like filesystems: really create a file
        test = _temp_name(probe / "probe")
        _write_new(test, b"")
        test.unlink()
    except OSError as e:
        raise JanusR1Error(f"{what} {out}: cannot write into {probe} ({os_reason(e)}).") from None
    return out


def os_reason(e: OSError) -> str:
    """An OSError as a short phrase: its strerror, else its message."""
    return e.strerror or str(e) or type(e).__name__


def result_files(results, meta: dict, sheets: bool = False) -> dict[str, bytes]:
    """File name -> bytes of a run: a PNG per generated attempt (the final one as ``NNN.png``, others
    ``NNN_attemptK.png``), optionally ``NNN_sheet.png`` contact sheets, and ``trace.json``. Sets each attempt's
    ``file`` (inputs keep the path the caller gave)."""
    files: dict[str, bytes] = {}
    for n, r in enumerate(results):
        for k, a in enumerate(r.attempts):
            if a.source != "generated":
                continue
            name = f"{n:03d}.png" if k == r.final % len(r.attempts) else f"{n:03d}_attempt{a.round}.png"
            a.file = name
            files[name] = png_bytes(a.image)
        if sheets:
            from .generation.sheet import contact_sheet

            files[f"{n:03d}_sheet.png"] = png_bytes(contact_sheet(r))
    trace = {**meta, "samples": [r.to_dict() for r in results]}
    files["trace.json"] = (json.dumps(trace, indent=2, ensure_ascii=False) + "\n").encode()
    return files


def write_results(out: Path, results, meta: dict, sheets: bool = False) -> Path:
    """Write a run (see :func:`result_files`) into ``out`` as one set; returns the trace path."""
    write_files_together(Path(out), result_files(results, meta, sheets), last="trace.json")
    return Path(out) / "trace.json"
