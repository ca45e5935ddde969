"""Host memory a run may use: the machine's available RAM, or less when the process runs under a container's
memory limit (cgroup v2 ``memory.max`` or v1 ``memory.limit_in_bytes``, e.g. Docker's ``--memory``).

Why: ``psutil.virtual_memory`` reports the host's RAM. Under a 1 GiB container limit on a 64 GiB host a run sized
to the host was never refused, and the kernel's OOM killer ended it with no message. Here every cgroup from this
process's own up to the mount's root is read and the tightest one wins; its usage counts without the page cache
the kernel can drop first (``inactive_file``), as the kernel itself reclaims before it kills.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a page-aligned 2^63 - 1


@dataclass(frozen=True)
class Limit:
    available: int  # bytes still usable under the limit
    limit: int  # the limit itself
    where: str  # the file it was read from (messages)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (v2: no limit) -> None


def _inactive_file(stat: Path, v1: bool) -> int:
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return 0
    wanted = ("total_inactive_file", "inactive_file") if v1 else ("inactive_file",)
    values = dict(line.split(" ", 1) for line in lines if " " in line)
    for key in wanted:
        if values.get(key, "").strip().isdigit():
            return int(values[key])
    return 0


def _own_paths(proc: Path) -> tuple[str | None, str | None]:
    """This process's cgroup path in the v2 hierarchy and in v1's memory controller (None: not listed)."""
    v2 = v1 = None
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif "memory" in parts[1].split(","):
            v1 = parts[2]
    return v2, v1


def _chain(mount: Path, own: str) -> list[Path]:
    """The cgroup folders from this process's up to the mount's root. Inside a container the mount is often the
    container's own cgroup while /proc/self/cgroup still names the host's path: then the mount alone is used."""
    start = mount / own.lstrip("/")
    if not start.is_dir():
        return [mount]
    out = [start]
    while out[-1] != mount and mount in out[-1].parents:
        out.append(out[-1].parent)
    return out


def cgroup_limit(root: Path | None = None, proc: Path | None = None) -> Limit | None:
    """The tightest memory limit over this process (v2, else v1), None when there is none or it is unreadable."""
    root, proc = root or CGROUP_ROOT, proc or PROC_CGROUP
    v2, v1 = _own_paths(proc)
    found: list[Limit] = []
    if v2 is not None and (root / "cgroup.controllers").is_file():
        for d in _chain(root, v2):
            limit = _read_int(d / "memory.max")
            if limit is not None:
                used = (_read_int(d / "memory.current") or 0) - _inactive_file(d / "memory.stat", False)
                found.append(Limit(max(limit - max(used, 0), 0), limit, str(d / "memory.max")))
    mount = root / "memory"
    if not found and v1 is not None and mount.is_dir():
        for d in _chain(mount, v1):
            limit = _read_int(d / "memory.limit_in_bytes")
            if limit is not None and limit < UNLIMITED:
                used = (_read_int(d / "memory.usage_in_bytes") or 0) - _inactive_file(d / "memory.stat", True)
                found.append(Limit(max(limit - max(used, 0), 0), limit, str(d / "memory.limit_in_bytes")))
    return min(found, key=lambda x: x.available) if found else None


def host_ram_available() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def available() -> tuple[int, str]:
    """``(bytes, what)``: the host memory a run may use, and a phrase naming the bound for messages."""
    ram = host_ram_available()
    cg = cgroup_limit()
    if cg is not None and cg.available < ram:
        return cg.available, f"under the container's memory limit of {cg.limit / 1024**3:.1f} GiB ({cg.where})"
    return ram, "of RAM"
