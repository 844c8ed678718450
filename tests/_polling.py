"""Waiting for events instead of fixed sleeps: a polling helper with a generous deadline, and
the events the process tests wait for (a checkpoint complete on disk, processes gone).

A fixed sleep is too short on a slow machine (the test fails) and needlessly long, or too
early to prove anything, on a fast one (the test passes vacuously); these return as soon as
the event has happened and fail with a message naming it when it never does.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

DEADLINE = 600.0     # s: generous; a hung process is caught by the deadline or pytest-timeout


def wait_for(condition, what: str, timeout: float = DEADLINE, interval: float = 0.1):
    """Poll ``condition()`` until it returns something true (returned) or ``timeout`` s have
    passed (AssertionError naming ``what``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}; it did not happen")
        time.sleep(interval)


def complete_checkpoint(work_dir: Path) -> Path | None:
    """The checkpoint ``work_dir/last_checkpoint`` names once that file is complete (mmengine
    writes the pointer after the checkpoint; complete = it loads), else None."""
    from dipkd.checkpoint import CorruptCheckpointError, safe_load
    pointer = Path(work_dir) / "last_checkpoint"
    try:
        path = Path(pointer.read_text().strip())
        safe_load(path)
    except (OSError, CorruptCheckpointError):
        return None
    return path


def processes_in(directory: Path) -> set[int]:
    """Pids of the live processes whose working directory is ``directory`` (Linux /proc)."""
    target = os.path.realpath(directory)
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry.name}/cwd") == target and alive(int(entry.name)):
                found.add(int(entry.name))
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (dead, waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def file_contains(path: Path, text: str) -> bool:
    try:
        return text in Path(path).read_text()
    except OSError:
        return False
