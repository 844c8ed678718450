"""The directory each SLURM job runs ``dvc repro`` in: a copy of the workspace's files that
share the workspace's DVC cache.

Two ``dvc repro`` cannot run in one workspace at once (DVC locks it), so every job gets a copy
of the workspace as it was at submission: the files git tracks plus the untracked ones it does
not ignore (``git ls-files -co --exclude-standard``: code, ``dvc.yaml``, ``dvc.lock``,
``params.yaml``, ``.dvc/config``), not the data, models or other outputs, which DVC restores
from the cache. The copy lives in ``.dvc/tmp/dipkd-slurm/jobs/<stage>/`` (inside ``.dvc``, so
the workspace's DVC never takes its ``dvc.yaml`` for a pipeline of its own), with the outputs
of the stages DVC cannot keep in its cache (``runs/code``, ``runs/processes.json``), and its
``.dvc/config.local`` points at the workspace's cache (``cache.dir``) with ``cache.shared
group``; ``core.no_scm``, since the copy is no git repository. Its outputs and run-cache
entries land in that cache, where the other jobs and the workspace's final ``dvc repro`` find
them.

A copy is named after its stage, not after the repro: a job that is requeued, or submitted
again by the next repro after a failure, finds the work dir of its training
(``runs/<group>/<run>/``, checkpoints and MLflow run id) where it left it and resumes. Making
a copy again keeps ``runs/`` and replaces everything else. The job removes its copy once it
succeeded (:mod:`dipkd.slurm.job`).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

STATE_DIR = Path(".dvc") / "tmp" / "dipkd-slurm"
KEEP = {"runs"}         # what making a copy again keeps: the trainings' work dirs


class CopyError(RuntimeError):
    """The workspace cannot be copied (one line)."""


def copy_dir(root: Path, stage: str) -> Path:
    """Where the job of ``stage`` runs."""
    return root / STATE_DIR / "jobs" / stage


def workspace_files(root: Path) -> list[str]:
    """The files a job's copy gets, relative to ``root``: tracked and untracked-not-ignored
    ones that exist."""
    proc = subprocess.run(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"],
                          cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CopyError(f"{root}: not a git repository; the SLURM executor copies the files "
                        "git tracks (and the untracked ones it does not ignore) for each job")
    names = sorted({n for n in proc.stdout.split("\0") if n})
    return [n for n in names if (root / n).is_file() or (root / n).is_symlink()]


def cache_dir(root: Path) -> Path:
    """The workspace's DVC cache directory (``cache.dir``, default ``.dvc/cache``)."""
    from dvc.repo import Repo
    with Repo(str(root)) as repo:
        return Path(repo.cache.local_cache_dir).resolve()


def _clear(copy: Path) -> None:
    if not copy.exists():
        return
    for entry in copy.iterdir():
        if entry.name in KEEP:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def make_copy(root: Path, stage: str, files: Iterable[str], cache: Path,
              outputs: Iterable[str] = ()) -> Path:
    """(Re)make the copy of ``stage``'s job: ``files`` and the ``outputs`` that exist (files
    or directories: those of the stages DVC cannot restore from its cache) from ``root``, its
    config pointing at ``cache``; keeps an earlier copy's ``runs/`` (but replaces the given
    outputs in it). Returns the copy's directory."""
    from dvc.config import Config
    copy = copy_dir(root, stage)
    _clear(copy)
    copy.mkdir(parents=True, exist_ok=True)
    for name in files:
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target, follow_symlinks=False)
    for name in outputs:
        source, target = root / name, copy / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        if source.is_dir():
            shutil.copytree(source, target)
        elif source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    local = root / ".dvc" / "config.local"    # the user's own settings (remotes, cache type)
    if local.is_file():
        shutil.copy2(local, copy / ".dvc" / "config.local")
    with Config(dvc_dir=str(copy / ".dvc"), validate=False).edit("local") as conf:
        conf.setdefault("core", {})["no_scm"] = "true"
        conf.setdefault("cache", {}).update(dir=str(cache), shared="group")
    return copy


def remove_copy(copy: Path) -> None:
    """Drop a finished job's copy (its outputs are in the cache)."""
    shutil.rmtree(copy, ignore_errors=True)


def copy_back_logs(copy: Path, root: Path) -> list[Path]:
    """Put the run logs a job wrote (``runs/**/*.log`` of its copy) where a sequential
    ``dvc repro`` leaves them, in the workspace's ``runs/``; returns them."""
    copied = []
    for log in sorted((copy / "runs").rglob("*.log")):
        target = root / log.relative_to(copy)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
        shutil.copyfile(log, tmp)
        os.replace(tmp, target)
        copied.append(target)
    return copied
