"""``dipkd repro`` on this machine, one stage at a time (``make repro``): DVC's own ``dvc repro``
with its console condensed to the stages' own lines, each prefixed by the stage's place in the
pipeline, e.g.::

    [23/59] distill@ssdd-faster_rcnn-0  DIPKD  ssdd-faster_rcnn-seed0  2 epochs
    [23/59] distill@ssdd-faster_rcnn-0  DIPKD  ssdd-faster_rcnn-seed0  2 epochs  41 s  mAP 0.000

DVC's bookkeeping lines (the command, "Updating lock file", blank lines, its closing advice
to ``git add dvc.lock``) are dropped; a stage
DVC restores from its run-cache gets one line saying so; a stage that did not change gets
none. The training stages print only their start and result lines and keep the rest in the
run's log file (:mod:`dipkd.console`). Errors come on stderr, untouched. ``-v`` (or
``DIPKD_VERBOSE=1``) passes everything through, the stages' full logs included.

The stages start warm: ``dipkd repro`` runs them through one process that has already
imported torch, mmdet and MLflow (:mod:`dipkd.stage_server`; its own log is
``runs/logs/stage_server.log``; ``DIPKD_WARM_STAGES=0`` turns it off), which saves each stage
the seconds of a fresh interpreter's imports and changes nothing a stage writes.

N is the number of stages ``dvc repro`` visits (DVC's stage graph restricted to the targets,
:func:`dipkd.parallel_repro.restrict_to`); k counts the stages DVC reports, run, restored or
skipped, in its own order.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from . import stage_server
from .dvc_locks import clear_torn_rwlock
from .console import STAGE_LOGS, VERBOSE_ENV, verbose as verbose_env
from .parallel_repro import restrict_to, stage_graph

SERVER_LOG = STAGE_LOGS / "stage_server.log"

RUNNING = re.compile(r"^Running stage '(?P<stage>[^']+)':")
RESTORED = re.compile(r"^Stage '(?P<stage>[^']+)' is cached - skipping run")
UNCHANGED = re.compile(r"^Stage '(?P<stage>[^']+)' didn't change, skipping")
BOOKKEEPING = re.compile(r"^(> |Updating lock file|Generating lock file|Use `dvc push`|\s*$)")
UP_TO_DATE = "Data and pipelines are up to date."
GIT_HINT = re.compile(r"^To track the changes with git")   # DVC's closing git advice


class Numbering:
    """The ``[k/N]`` of the stages as DVC reports them (shared by the condensers of stages
    that run at the same time, :mod:`dipkd.concurrent_repro`)."""

    def __init__(self, total: int):
        self.total, self.seen = total, 0

    def next(self, stage: str) -> str:
        self.seen += 1
        return f"[{self.seen}/{self.total}] {stage}"


class Condenser:
    """DVC's console lines in, the lines to show out (:meth:`feed`, then :meth:`close`)."""

    def __init__(self, total: int = 0, numbering: Numbering | None = None):
        self.numbering = numbering or Numbering(total)
        self.header: str | None = None      # "[k/N] stage" of the stage running now
        self.shown = True                    # whether that stage has shown a line
        self.hint = False                    # inside DVC's closing git advice
        self.changed = False                 # a stage ran or was restored

    def _next(self, stage: str) -> str:
        return self.numbering.next(stage)

    def _flush(self) -> list[str]:
        """A stage that printed nothing still gets its one line."""
        out = [] if self.shown or self.header is None else [self.header]
        self.header, self.shown = None, True
        return out

    def feed(self, line: str) -> list[str]:
        line = line.rstrip("\n")
        if m := RUNNING.match(line):
            out = self._flush()
            self.header, self.shown, self.changed = self._next(m["stage"]), False, True
            return out
        if m := RESTORED.match(line):
            self.changed = True
            return self._flush() + [f"{self._next(m['stage'])}  restored from the run-cache"]
        if m := UNCHANGED.match(line):
            out = self._flush()
            self._next(m["stage"])
            return out
        if GIT_HINT.match(line):
            self.hint = True
            return self._flush()
        if self.hint or BOOKKEEPING.match(line):
            return []
        if self.header is None:
            return [line]
        self.shown = True
        return [f"{self.header}  {line}"]

    def close(self) -> list[str]:
        return self._flush()


def stages_visited(root: Path, targets: Iterable[str] = ()) -> int:
    """How many stages ``dvc repro TARGET...`` visits."""
    graph = stage_graph(root)
    targets = list(targets)
    return len(restrict_to(graph, targets) if targets else graph)


def repro(root: Path, targets: Iterable[str] = (), *, verbose: bool = False,
          out=sys.stdout, at_once: int | None = None) -> int:
    """``dvc repro TARGET...`` in ``root``, ``at_once`` stages at a time (default
    :func:`default_at_once`; more than one: :mod:`dipkd.concurrent_repro`); returns its exit
    code."""
    targets = list(targets)
    at_once = at_once or default_at_once()
    env = dict(os.environ)
    if clear_torn_rwlock(root):     # a repro killed while DVC rewrote it
        print(f"[dipkd] removed {root / '.dvc' / 'tmp' / 'rwlock'}, torn by a killed repro",
              file=out, flush=True)
    verbose = verbose or verbose_env()
    with stage_server.running(root, env, root / SERVER_LOG) as env:
        if verbose:
            env[VERBOSE_ENV] = "1"
        if at_once > 1:
            from . import concurrent_repro
            graph = stage_graph(root)
            return concurrent_repro.run(root, restrict_to(graph, targets) if targets else
                                        graph, env, at_once, out, verbose=verbose)
        if verbose:
            return subprocess.call(["dvc", "repro", *targets], cwd=root, env=env)
        return _condensed(root, targets, env, out)


def default_at_once() -> int:
    """Stages at a time when ``--at-once`` is not given: two on a machine without CUDA and
    with at least two cores (a small CPU stage gains little from a second thread: two stages
    on one thread each finish sooner than one after the other on two), else one."""
    from .concurrent_repro import _cuda
    return 2 if (os.cpu_count() or 1) >= 2 and not _cuda() else 1


def _condensed(root: Path, targets: list[str], env: dict, out) -> int:
    condenser = Condenser(stages_visited(root, targets))
    with subprocess.Popen(["dvc", "repro", *targets], cwd=root, env=env, text=True,
                          stdout=subprocess.PIPE, bufsize=1) as proc:
        for line in proc.stdout:
            for shown in condenser.feed(line):
                print(shown, file=out, flush=True)
        for shown in condenser.close():
            print(shown, file=out, flush=True)
        return proc.wait()
