"""The workspace before anything is submitted: what DVC can bring up to date without training,
and what is left for the jobs.

DVC's run-cache keeps, for each stage run, its outputs under the hash of its command, deps and
params; ``dvc repro`` restores a stage from it instead of running it. It cannot keep a stage
with an output that is not cached (``cache: false``) other than a metric or plot (here
``code``, the code manifests, and ``processes``): such a stage is *local*. Local stages are
cheap bookkeeping; they never become jobs. :func:`bring_up_to_date` walks the stages in
dependency order and

- runs a changed local stage here when everything upstream of it is up to date (its outputs
  are copied into each job's copy, where DVC then finds it up to date),
- restores a changed stage whose run-cache entry exists (a job of an earlier repro ran it),
- leaves a changed stage without one, and everything downstream of it, to the jobs.

So DVC's own status then names exactly the stages to run, and a second repro after a failure
submits only what is not in the run-cache.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Sync:
    ran: list[str] = field(default_factory=list)        # local stages run here
    restored: list[str] = field(default_factory=list)   # restored from the run-cache
    left: set[str] = field(default_factory=set)         # changed, for the jobs


def run_cacheable(stage) -> bool:
    """DVC keeps runs of this stage in its run-cache: the rules of ``Stage.run`` (no output
    with ``cache: false`` except metrics and plots) and of ``dvc.stage.cache._can_hash``
    (a command, local deps and outputs, none persistent), read from the stage's definition
    alone."""
    return bool(stage.cmd and stage.deps and stage.outs
                and not stage.always_changed and not stage.is_callback
                and all(dep.protocol == "local" and dep.def_path for dep in stage.deps)
                and all(out.protocol == "local" and out.def_path and not out.persist
                        and out.is_in_repo for out in stage.outs)
                and all(out.use_cache or out.is_metric or out.is_plot
                        for out in stage.outs))


def local_stages(root: Path) -> dict[str, list[str]]:
    """The stages of the project that DVC cannot restore from its run-cache, each with its
    outputs (paths relative to ``root``)."""
    from dvc.repo import Repo
    with Repo(str(root)) as repo:
        return {s.addressing: [os.path.relpath(o.fs_path, root) for o in s.outs]
                for s in repo.index.stages if not run_cacheable(s)}


def topological(upstream: Mapping[str, Iterable[str]]) -> list[str]:
    """The stages of a graph (stage -> the stages it depends on), each after its upstream;
    ties by name."""
    order: list[str] = []
    done: set[str] = set()

    def visit(stage: str) -> None:
        if stage in done:
            return
        done.add(stage)
        for dep in sorted(upstream.get(stage, ())):
            visit(dep)
        order.append(stage)
    for stage in sorted(upstream):
        visit(stage)
    return order


def downstream(upstream: Mapping[str, Iterable[str]], stages: Iterable[str]) -> set[str]:
    """``stages`` and every stage of the graph that depends on one of them."""
    found = set(stages)
    for stage in topological(upstream):
        if set(upstream.get(stage, ())) & found:
            found.add(stage)
    return found


@contextlib.contextmanager
def _quiet(*names: str):
    """DVC's advice to ``git add dvc.lock`` and its "is cached" line for the look-up: only
    warnings from these loggers while we walk (the restore itself still says it)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _in_run_cache(repo, stage) -> bool:
    from dvc.exceptions import DvcException
    from dvc.stage.cache import RunCacheNotFoundError
    try:
        stage.save_deps()
        repo.stage_cache.restore(stage, dry=True)
    except (RunCacheNotFoundError, DvcException, OSError):
        return False
    return True


def bring_up_to_date(root: Path, upstream: Mapping[str, Iterable[str]], *,
                     say=print) -> Sync:
    """Run the local stages and restore the cached ones of the graph ``upstream`` (the
    stages to build, without the final ones) in the workspace ``root``; returns what it did
    and the stages left for the jobs (module docstring)."""
    from dvc.repo import Repo, lock_repo
    sync = Sync()
    with Repo(str(root)) as repo, _quiet("dvc.repo.scm_context", "dvc.stage.cache"):
        for name in topological(upstream):
            if set(upstream.get(name, ())) & sync.left:
                sync.left.add(name)
                continue
            with lock_repo(repo):       # what DVC holds while it looks at a stage
                stage = repo.stage.collect_granular(name)[0].stage
                if not stage.changed():
                    continue
                local = not run_cacheable(stage)
                cached = not local and _in_run_cache(repo, stage)
            if local:
                say(f"[dipkd] running {name} here (DVC cannot keep it in its run-cache)")
                sync.ran.append(name)
            elif cached:
                say(f"[dipkd] restoring {name} from the run-cache")
                sync.restored.append(name)
            else:
                sync.left.add(name)
                continue
            repo.reproduce(name, single_item=True)
    return sync
