"""DVC's lock files that a killed process leaves behind, and which of them are safe to remove.

DVC records the stages a running ``dvc repro`` holds in ``.dvc/tmp/rwlock`` (JSON), rewritten
under the guard ``.dvc/tmp/rwlock.lock`` by truncating the file and then writing it
(``dvc/rwlock.py``, ``_edit_rwlock``). A process killed between the two (a session ended by
SIGKILL, a node lost) leaves an empty or half-written file, and every later ``dvc repro`` in
that workspace stops with "Unable to read RWLock-file ... JSON structure is corrupted". Entries
of processes that died are not the problem: DVC drops those itself (it checks their pids).

- :func:`clear_torn_rwlock`: for a workspace that others may use at the same time (the user's
  own, a study's worktree). It takes DVC's own guard before it reads, so a file it finds torn
  was left by a writer that died holding the guard, and removing it loses nothing a live
  process recorded.
- :func:`clear_stale_locks`: for a SLURM job's private copy (:mod:`dipkd.slurm.job`), which
  only that job ever uses: every lock file goes.
"""
from __future__ import annotations

import json
from pathlib import Path

STALE_LOCKS = ("lock", "rwlock", "rwlock.lock")


def _tmp(root: Path) -> Path:
    return Path(root) / ".dvc" / "tmp"


def clear_torn_rwlock(root: Path) -> bool:
    """Remove ``root``'s ``.dvc/tmp/rwlock`` if it is not valid JSON (torn by a killed
    writer); returns whether it did. Waits for DVC's guard like DVC does."""
    path = _tmp(root) / "rwlock"
    if not path.is_file():
        return False
    from dvc.lock import make_lock
    with make_lock(str(_tmp(root) / "rwlock.lock"), tmp_dir=str(_tmp(root))):
        try:
            json.loads(path.read_text(encoding="utf-8"))
            return False
        except (json.JSONDecodeError, UnicodeDecodeError):
            path.unlink()
            return True


def clear_stale_locks(copy: Path) -> list[str]:
    """Remove every DVC lock file of ``copy`` (a private copy that a killed attempt left);
    returns their names."""
    removed = []
    for name in STALE_LOCKS:
        path = _tmp(copy) / name
        if path.exists():
            path.unlink()
            removed.append(name)
    return removed
