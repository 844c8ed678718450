"""``dipkd repro --at-once N``: N stages of this workspace's pipeline at a time, in the
workspace itself (no copies, no queue), each stage one ``dvc repro --single-item STAGE``.

Why it is safe: DVC itself is built for it. A ``dvc repro`` holds the repository's lock only
for its bookkeeping and lets it go while the stage's command runs (``dvc/stage/run.py``:
``unlocked_repo(cmd_run)``); ``--wait-for-lock`` makes the other process wait for that
bookkeeping instead of failing; the stage's dependencies and outputs are held in
``.dvc/tmp/rwlock`` (read and write locks), and ``dvc.lock`` is rewritten under the
repository's lock, one stage's entry at a time. What is left to this module is the order:
a stage starts when every stage upstream of it (DVC's graph, :func:`dipkd.parallel_repro.
stage_graph`) has finished, so ``--single-item`` (no recursive check of the upstream stages)
sees what a whole ``dvc repro`` would have built before it. Ready stages start in the order
of how much waits on them (the teachers before the students), then by name.

Each stage's DVC console goes through its own :class:`~dipkd.local_repro.Condenser`, the
``[k/N]`` numbers shared, so the console is the serial repro's one or two lines per stage,
interleaved. A stage that fails lets the stages already running finish (their work is
kept), starts nothing more and makes the exit code DVC's; Ctrl-C reaches every ``dvc`` (they
are in the terminal's process group) and the repro waits for them to stop.

Threads: on a machine without CUDA each stage gets ``cores // N`` threads (``OMP_NUM_THREADS``
and ``MKL_NUM_THREADS``), unless ``OMP_NUM_THREADS`` is set. A stage that times itself
(:data:`ALONE`: ``efficiency``, whose latencies are a result) runs alone, with the threads a
serial repro gives it, when nothing else is running and nothing else is ready. The number of threads changes the
last bits of CPU training (oneDNN splits its reductions by thread), so a model trained with
``--at-once 2`` on two cores is not bit-identical to one trained with ``--at-once 1``; every
run of the same setting is.
"""
from __future__ import annotations

import os
import queue
import subprocess
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from .local_repro import UP_TO_DATE, Condenser, Numbering

ALONE = frozenset({"efficiency"})     # stages that measure time: nothing beside them


def _descendants(upstream: Mapping[str, Iterable[str]]) -> dict[str, int]:
    """How many stages depend, directly or not, on each stage."""
    downstream: dict[str, set[str]] = {s: set() for s in upstream}
    for stage, deps in upstream.items():
        for dep in deps:
            downstream.setdefault(dep, set()).add(stage)
    memo: dict[str, set[str]] = {}

    def below(stage: str) -> set[str]:
        if stage not in memo:
            memo[stage] = set()
            for child in downstream.get(stage, ()):
                memo[stage] |= {child} | below(child)
        return memo[stage]

    return {s: len(below(s)) for s in upstream}


class Schedule:
    """Which stages may start: those whose upstream stages have all finished (:meth:`ready`),
    most depended-on first; :meth:`done` records a finished one."""

    def __init__(self, upstream: Mapping[str, Iterable[str]]):
        self.upstream = {s: set(deps) & set(upstream) for s, deps in upstream.items()}
        weight = _descendants(self.upstream)
        self.order = sorted(self.upstream, key=lambda s: (-weight[s], s))
        self.finished: set[str] = set()
        self.started: set[str] = set()

    def ready(self) -> list[str]:
        return [s for s in self.order if s not in self.started
                and self.upstream[s] <= self.finished]

    def next_batch(self, free: int, running: int) -> list[str]:
        """The stages to start now with ``free`` free places and ``running`` stages running:
        ready stages up to ``free``; a stage of :data:`ALONE` only when nothing runs and no
        other stage is ready."""
        ready = self.ready()
        shared = [s for s in ready if s not in ALONE]
        if shared:
            return shared[:free]
        return ready[:1] if ready and not running else []

    def start(self, stage: str) -> None:
        self.started.add(stage)

    def done(self, stage: str) -> None:
        self.finished.add(stage)

    @property
    def complete(self) -> bool:
        return self.finished == set(self.upstream)


def stage_environment(env: Mapping[str, str], at_once: int) -> dict[str, str]:
    """``env`` with ``cores // at_once`` threads per stage on a machine without CUDA (unless
    ``OMP_NUM_THREADS`` is set)."""
    env = dict(env)
    if "OMP_NUM_THREADS" not in env and not _cuda():
        threads = str(max(1, (os.cpu_count() or 1) // at_once))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    return env


def _cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


def _pump(stage: str, proc: subprocess.Popen, lines: queue.Queue) -> None:
    for line in proc.stdout:
        lines.put((stage, line))
    lines.put((stage, None))


def run(root: Path, upstream: Mapping[str, Iterable[str]], env: Mapping[str, str],
        at_once: int, out, *, verbose: bool = False) -> int:
    """Run the stages of ``upstream`` (stage -> the stages it needs), ``at_once`` at a time;
    returns 0, or the exit code of the first stage that failed (130 after Ctrl-C)."""
    schedule = Schedule(upstream)
    numbering = Numbering(len(schedule.upstream))
    alone_env, env = dict(env), stage_environment(env, at_once)
    lines: queue.Queue = queue.Queue()
    running: dict[str, tuple[subprocess.Popen, Condenser]] = {}
    failed, changed = 0, False

    def show(shown: Iterable[str]) -> None:
        for line in shown:
            print(line, file=out, flush=True)

    def start(stage: str) -> None:
        schedule.start(stage)
        proc = subprocess.Popen(["dvc", "--wait-for-lock", "repro", "--single-item", stage],
                                cwd=root, env=alone_env if stage in ALONE else env,
                                text=True, stdout=subprocess.PIPE, bufsize=1)
        running[stage] = (proc, Condenser(numbering=numbering))
        threading.Thread(target=_pump, args=(stage, proc, lines), daemon=True).start()

    try:
        while True:
            if not failed and not (running.keys() & ALONE):
                for stage in schedule.next_batch(at_once - len(running), len(running)):
                    start(stage)
            if not running:
                break
            stage, line = lines.get()
            proc, condenser = running[stage]
            if line is not None:
                if verbose:      # everything, each line marked with its stage
                    print(f"[{stage}] {line}", end="", file=out, flush=True)
                elif line.strip() != UP_TO_DATE:     # said once, at the end
                    show(condenser.feed(line))
                continue
            code = proc.wait()
            show(condenser.close())
            changed |= condenser.changed
            del running[stage]
            if code == 0:
                schedule.done(stage)
            elif not failed:
                failed = code
    except KeyboardInterrupt:
        for proc, _ in running.values():     # SIGINT reached them too: let DVC clean up
            proc.wait()
        return 130
    if not failed and not changed and not verbose:
        show([UP_TO_DATE])
    return failed
