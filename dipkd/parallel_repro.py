"""``dipkd repro --jobs N`` (``make repro-parallel JOBS=N``): the matrix trained N runs at a
time, each on its own GPU(s), through DVC's own queue.

``dvc repro`` runs one stage at a time. Here the stages are cut into independent *jobs*,
each job is queued as a DVC experiment on one target stage (``dvc exp run --queue
<stage>``), ``dvc queue start -j N`` runs N of them at once, and a ``dvc repro`` in the
workspace then restores every finished stage from DVC's run-cache ("Stage ... is cached -
skipping run") instead of training it again, and builds the tables. Every queued experiment
runs in a temporary copy of the workspace and saves its stages to the shared cache and
run-cache; the MLflow runs land in the workspace's store (``DVC_ROOT`` is the workspace
also in a queued experiment; :mod:`dipkd.tracking.mlflow_runs`).

Jobs and waves, from DVC's stage graph (:func:`plan_waves`):

- *sinks*: stages nothing depends on (tables, figures, efficiency): built by the final
  ``dvc repro``;
- *targets*: stages all of whose dependents are sinks (the student and distillation
  runs, each of which tests its own model): one job each, which also runs the upstream
  stages no other target needs (a teacher that only this distillation reads);
- *shared* stages: upstream of two or more targets (prepare, processes, a teacher read by
  several distillations): one job each, run before the jobs that need them; otherwise every
  queued distillation would train its own copy of the teacher.

A job's wave is one more than the latest wave of the shared stages upstream of it: data and
``processes`` first, then the teachers together with the students (which need no teacher),
then every distillation. Between waves the workspace restores the finished wave from the
run-cache, so the next wave's experiments (which copy the workspace when queued) start from
it. A job none of whose own stages changed is not queued (``dvc status``).

Devices: N worker slots (:mod:`dipkd.device_slots`): a stage takes the lowest free slot and
with it GPUs ``slot*g .. slot*g+g-1`` (``g`` = ``compute.gpus``, at least 1) of the visible
ones; ``gpu``/``worker_slot`` MLflow tags. Without GPUs the workers are CPU processes with
``cores // N`` threads each (unless ``OMP_NUM_THREADS`` is set).

The queued experiments are machinery: their MLflow runs are tagged ``parallel_repro`` (not
children of an experiment parent run), and they are removed from ``dvc exp``/``dvc queue``
when the repro succeeds (``--keep-experiments`` keeps them). A failed job stops the repro
after its wave, naming the job and the ``dvc queue logs`` command that shows why; so does a
job that DVC's queue lost (gone from ``dvc queue status`` for :data:`VANISHED_AFTER` polls in a
row), which would otherwise be waited for forever.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import device_slots
from .tracking.mlflow_runs import PARALLEL_REPRO_VAR


class ParallelReproError(RuntimeError):
    """Something the user must fix before a parallel repro can run (one line)."""


@dataclass
class Job:
    target: str                       # the stage queued as `dvc exp run --queue <target>`
    own: frozenset[str]               # the stages it runs (target + private upstream)
    needs: frozenset[str] = field(default_factory=frozenset)   # shared stages upstream


# --------------------------------------------------------------------------- planning

def _ancestors(upstream: Mapping[str, Iterable[str]], stage: str) -> set[str]:
    seen: set[str] = set()
    todo = list(upstream.get(stage, ()))
    while todo:
        s = todo.pop()
        if s not in seen:
            seen.add(s)
            todo.extend(upstream.get(s, ()))
    return seen


def plan_waves(upstream: Mapping[str, Iterable[str]]) -> list[list[Job]]:
    """Cut a stage graph (stage -> the stages it depends on) into waves of independent
    jobs (see the module docstring). Sinks are left to the final ``dvc repro``."""
    stages = set(upstream) | {d for deps in upstream.values() for d in deps}
    dependents: dict[str, set[str]] = {s: set() for s in stages}
    for s, deps in upstream.items():
        for d in deps:
            dependents[d].add(s)
    sinks = {s for s in stages if not dependents[s]}
    targets = {s for s in stages - sinks if dependents[s] <= sinks}
    ancestors = {s: _ancestors(upstream, s) for s in stages}
    shared = {s for s in stages - sinks - targets
              if sum(s in ancestors[t] for t in targets) >= 2}
    jobs: dict[str, Job] = {}
    for head in sorted(targets | shared):
        private = {a for a in ancestors[head] if a not in shared}
        jobs[head] = Job(head, frozenset({head} | private),
                         frozenset(ancestors[head] & shared))
    wave: dict[str, int] = {}

    def wave_of(name: str) -> int:
        if name not in wave:
            wave[name] = 1 + max((wave_of(n) for n in jobs[name].needs), default=-1)
        return wave[name]

    waves: list[list[Job]] = []
    for name in sorted(jobs, key=lambda n: (wave_of(n), n)):
        while len(waves) <= wave_of(name):
            waves.append([])
        waves[wave_of(name)].append(jobs[name])
    return waves


def stage_graph(root: Path) -> dict[str, set[str]]:
    """DVC's stage graph of the project: stage name -> names of the stages it depends on,
    named as ``dvc repro`` run in ``root`` names them (DVC names them relative to the working
    directory)."""
    import contextlib

    from dvc.repo import Repo
    with contextlib.chdir(root), Repo(str(root)) as repo:
        graph = repo.index.graph
        return {s.addressing: {d.addressing for d in graph.successors(s)} for s in graph.nodes}


def restrict_to(upstream: Mapping[str, Iterable[str]],
                targets: Iterable[str]) -> dict[str, set[str]]:
    """The part of a stage graph that ``dvc repro TARGET...`` runs: the targets and every
    stage upstream of them. A target is a stage name or a ``foreach`` group name (``train_
    student`` for every ``train_student@...``), as DVC accepts them."""
    names = set(upstream) | {d for deps in upstream.values() for d in deps}
    keep: set[str] = set()
    for target in targets:
        matched = {s for s in names if s == target or s.split("@", 1)[0] == target}
        if not matched:
            raise ParallelReproError(f"no stage named {target!r} in dvc.yaml (dvc stage list "
                                     "shows them)")
        for stage in matched:
            keep |= {stage} | _ancestors(upstream, stage)
    return {s: set(upstream.get(s, ())) & keep for s in keep}


def changed_stages(root: Path) -> set[str]:
    """The stages ``dvc status`` reports as changed."""
    from dvc.repo import Repo
    with Repo(str(root)) as repo:
        return set(repo.status())


# --------------------------------------------------------------------------- devices

def visible_gpus() -> list[str]:
    """GPU ids to share out: ``CUDA_VISIBLE_DEVICES`` if set, else every CUDA device."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip()]
    try:
        import torch
        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:     # noqa: BLE001 - no usable CUDA: CPU workers
        return []


def worker_environment(root: Path, jobs: int, processes: int, gpus: list[str],
                       token: str, cores: int | None = None,
                       base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment ``dvc queue start`` passes to its workers and their stages."""
    env = dict(os.environ if base is None else base)
    per_slot = processes if gpus else 0
    if gpus and jobs * per_slot > len(gpus):
        raise ParallelReproError(
            f"--jobs {jobs} with compute.gpus {processes} needs {jobs * per_slot} GPUs but "
            f"{len(gpus)} are visible ({','.join(gpus)}); lower --jobs")
    env.update({device_slots.SLOTS_VAR: str(jobs),
                device_slots.SLOT_DIR_VAR: str(root / ".dvc" / "tmp" / "dipkd-slots"),
                device_slots.SLOT_GPUS_VAR: ",".join(gpus),
                device_slots.GPUS_PER_SLOT_VAR: str(per_slot),
                PARALLEL_REPRO_VAR: token})
    if not gpus and "OMP_NUM_THREADS" not in env:
        threads = str(max(1, (cores or os.cpu_count() or 1) // jobs))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    return env


# --------------------------------------------------------------------------- the queue

def _dvc(root: Path, *args: str, env: Mapping[str, str] | None = None,
         check: bool = True) -> str:
    proc = subprocess.run(["dvc", *args], cwd=root, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        message = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise ParallelReproError(f"`dvc {' '.join(args)}` failed: "
                                 f"{message[-1] if message else proc.returncode}")
    return proc.stdout


QUEUE_STATES = ("Queued", "Running", "Success", "Failed")
VANISHED = "Vanished"     # ours, no longer listed by `dvc queue status`: a failure
VANISHED_AFTER = 3        # consecutive polls without it (one can miss a task changing state)


def queue_states(status_text: str) -> tuple[dict[str, str], int]:
    """Parse ``dvc queue status``: {experiment name: state} and the number of active
    workers."""
    states: dict[str, str] = {}
    active = 0
    for line in status_text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[-1] in QUEUE_STATES and fields[0] != "Task":
            states[fields[1]] = fields[-1]
        found = re.search(r"Worker status:\s*(\d+)\s+active", line)
        if found:
            active = int(found.group(1))
    return states, active


def track_states(names: Iterable[str], states: Mapping[str, str],
                 missing: dict[str, int]) -> dict[str, str]:
    """The state of each of our experiments in one ``dvc queue status`` listing. One that is
    not listed counts a miss in ``missing`` (reset when it is listed again) and is taken as
    still queued until it has missed :data:`VANISHED_AFTER` listings in a row, then as
    :data:`VANISHED` (DVC lost it: it will never finish)."""
    ours = {}
    for name in names:
        if name in states:
            missing.pop(name, None)
            ours[name] = states[name]
        else:
            missing[name] = missing.get(name, 0) + 1
            ours[name] = VANISHED if missing[name] >= VANISHED_AFTER else "Queued"
    return ours


def _wait(root: Path, names: dict[str, str], poll: float) -> dict[str, str]:
    """Wait until every queued experiment of ``names`` (name -> target) has finished or
    vanished from the queue; print a line whenever the counts change. Returns name -> final
    state."""
    last = None
    missing: dict[str, int] = {}
    while True:
        states, _ = queue_states(_dvc(root, "queue", "status", check=False))
        ours = track_states(names, states, missing)
        counts = {s: sum(v == s for v in ours.values()) for s in (*QUEUE_STATES, VANISHED)}
        line = ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n)
        if line != last:
            print(f"[dipkd]   {time.strftime('%H:%M:%S')} {line}", flush=True)
            last = line
        if counts["Queued"] == 0 and counts["Running"] == 0:
            return ours
        time.sleep(poll)


def failure(names: Mapping[str, str], final: Mapping[str, str]) -> ParallelReproError | None:
    """The one-line error for the experiments of a wave that did not succeed (``names``:
    name -> target, ``final``: name -> state), or ``None`` when all did."""
    failed = [n for n, state in final.items() if state != "Success"]
    if not failed:
        return None
    why = {n: "gone from dvc queue status" if final[n] == VANISHED else f"dvc queue logs {n}"
           for n in failed}
    return ParallelReproError("failed: " + "; ".join(f"{names[n]} ({n}: {why[n]})"
                                                     for n in failed))


def _stream(root: Path, *args: str) -> list[str]:
    """Run ``dvc <args>`` in the workspace, echoing its output; return the stages it ran
    (not restored)."""
    proc = subprocess.Popen(["dvc", *args], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    ran = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        found = re.match(r"Running stage '([^']+)'", line)
        if found:
            ran.append(found.group(1))
    if proc.wait() != 0:
        raise ParallelReproError(f"`dvc {' '.join(args)}` failed (exit {proc.returncode})")
    return ran


def _check_repository(root: Path) -> None:
    head = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=root,
                          capture_output=True, text=True)
    if head.returncode != 0:
        raise ParallelReproError(f"{root}: no git commit; DVC experiments (the queue) start "
                                 "from one: commit first")
    _, active = queue_states(_dvc(root, "queue", "status", check=False))
    if active:
        raise ParallelReproError(f"the DVC queue has {active} active worker(s) already; wait "
                                 "for them or stop them (dvc queue stop)")


def repro(root: Path, jobs: int, targets: Iterable[str] = (), *,
          keep_experiments: bool = False, poll: float = 5.0) -> None:
    """Run the pipeline of ``root`` (or only ``targets`` and what they need, as ``dvc repro
    TARGET...``) with ``jobs`` stages at a time (module docstring)."""
    from .config.params import load_params, requested_processes
    if jobs < 1:
        raise ParallelReproError(f"--jobs must be at least 1, got {jobs}")
    root = root.resolve()
    _check_repository(root)
    processes = requested_processes(load_params(root / "params.yaml"))
    token = time.strftime("%Y%m%d-%H%M%S")
    gpus = visible_gpus()
    env = worker_environment(root, jobs, processes, gpus, token)
    devices = (f"GPUs {','.join(gpus)}, {max(processes, 1)} per run" if gpus
               else f"CPU, {env.get('OMP_NUM_THREADS')} threads per run")
    targets = list(targets)
    graph = stage_graph(root)
    waves = plan_waves(restrict_to(graph, targets) if targets else graph)
    print(f"[dipkd] parallel repro {token}: {jobs} workers ({devices}); "
          f"{sum(map(len, waves))} jobs in {len(waves)} waves", flush=True)
    queued: list[str] = []
    try:
        for number, wave in enumerate(waves, 1):
            changed = changed_stages(root)
            todo = [job for job in wave if job.own & changed]
            print(f"[dipkd] wave {number}/{len(waves)}: {len(todo)} of {len(wave)} jobs to "
                  "run", flush=True)
            if not todo:
                continue
            names = {}
            for job in todo:
                name = f"dipkd-{token}-{len(queued):03d}"
                _dvc(root, "exp", "run", "--queue", "-n", name, job.target)
                queued.append(name)
                names[name] = job.target
                print(f"[dipkd]   queued {name}: {job.target}", flush=True)
            _dvc(root, "queue", "start", "-j", str(jobs), env=env)
            error = failure(names, _wait(root, names, poll))
            if error:
                raise error
            ran = _stream(root, "repro", *names.values())
            if ran:
                print(f"[dipkd] warning: the workspace ran {', '.join(ran)} instead of "
                      "restoring it from the run-cache", flush=True)
        _stream(root, "repro", *targets)
    except KeyboardInterrupt:
        print("[dipkd] interrupted: killing the running experiments, dropping the queued "
              "ones", file=sys.stderr, flush=True)
        states, _ = queue_states(_dvc(root, "queue", "status", check=False))
        running = [n for n in queued if states.get(n) == "Running"]
        if running:
            _dvc(root, "queue", "kill", *running, check=False)
        waiting = [n for n in queued if states.get(n) == "Queued"]
        if waiting:
            _dvc(root, "queue", "remove", *waiting, check=False)
        raise
    finally:
        _dvc(root, "queue", "stop", check=False)
    if queued and not keep_experiments:
        _dvc(root, "queue", "remove", *queued, check=False)
        _dvc(root, "exp", "remove", *queued, check=False)
    print(f"[dipkd] parallel repro {token} done", flush=True)
