"""The doctor's output: one console line per check and the markdown report (a header naming
the date, device, profile, versions and commit; a table of check, result, detail, time)."""
from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path

from .core import FAIL, Result


def console_line(r: Result) -> str:
    """``PASS  name  detail (1.2 s)``."""
    return f"{r.status}  {r.name:<28} {r.detail} ({r.seconds:.1f} s)"


def summary(results: list[Result], seconds: float) -> str:
    """``N passed, M failed, K skipped in T s``."""
    n = Counter(r.status for r in results)
    return (f"{n['PASS']} passed, {n[FAIL]} failed, {n['SKIP']} skipped "
            f"in {seconds:.0f} s")


def commit(root: Path) -> str:
    """The short commit of ``root``'s repository, ``+ changes`` when the tree differs from
    it; ``unknown`` without git (a bare GPU node)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              timeout=30).stdout.strip()
    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} + changes" if head and dirty else head or "unknown"


def header(device: str, profile: str, versions: dict, root: Path) -> str:
    """The report's first lines."""
    return (f"# dipkd doctor\n\n{time.strftime('%Y-%m-%d %H:%M')} · device {device} · "
            f"profile {profile} · torch {versions['torch']} (CUDA {versions['cuda']}, "
            f"cuDNN {versions['cudnn']}) · mmcv {versions['mmcv']} · mmdet {versions['mmdet']}"
            f" · commit {commit(root)}\n")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(results: list[Result], head: str, total: str, note: str = "") -> str:
    """The whole report: header, table, summary line (and ``note``)."""
    rows = ["| Check | Result | Detail | Time |", "|:--|:--|:--|--:|"]
    rows += [f"| {_cell(r.name)} | {r.status} | {_cell(r.detail)} | {r.seconds:.1f} s |"
             for r in results]
    tail = f"\n{note}\n" if note else ""
    return f"{head}\n" + "\n".join(rows) + f"\n\n{total}\n{tail}"
