"""``dipkd repro --executor slurm [--jobs N] [TARGET...]`` (``make repro-slurm``): the pipeline
on a SLURM cluster, one batch job per training run, the dependencies between runs given to the
scheduler.

1. **Plan.** The jobs are those of ``dipkd repro --jobs N`` (:func:`dipkd.parallel_repro.
   plan_waves` on DVC's stage graph, restricted to the targets): one per student or
   distillation run, one per stage several runs share (data, each teacher). Stages DVC
   cannot keep in its run-cache are no jobs: the final ones (tables, figures) are built by
   the workspace's last ``dvc repro``, the others (``code``, ``processes``: seconds of
   bookkeeping) run in the workspace first and their outputs go into every job's copy. A
   training that is itself a target is a job too. Instead of waves, each job gets
   ``--dependency=afterok:`` on the jobs of the shared stages it reads, so a distillation
   starts as soon as its own teacher is done.
2. **Workspace first** (:mod:`dipkd.slurm.workspace`): the local stages run here, every stage
   the run-cache already holds is restored; what is still changed (and what depends on it) is
   submitted, nothing else. So a second repro after a failure submits only what failed or
   never ran.
3. **Submit** (:mod:`dipkd.slurm.scheduler`, plain ``sbatch``): each job runs ``dvc repro
   <stage>`` in its own copy of the workspace that shares the workspace's DVC cache
   (:mod:`dipkd.slurm.copies`), with the resources of ``params.yaml``'s ``slurm:`` block
   (:mod:`dipkd.slurm.resources`, ``--slurm KEY=VALUE`` on top), its script and log in
   ``runs/slurm/<repro>/``. ``--jobs N`` keeps at most N jobs of this repro in the queue
   (pending or running) at a time; without it every job is submitted at once.
4. **Track.** MLflow runs go to a tracking server: ``MLFLOW_TRACKING_URI`` if set, else
   ``mlflow server`` on this machine backed by the repository's ``mlflow.db``
   (:mod:`dipkd.tracking.server`) for as long as jobs run; no job opens the SQLite file. One
   line per state change of a job (pending, running, done, failed) and a count line.
5. **Finish.** When every job succeeded, the workspace's ``dvc repro [TARGET...]`` restores
   each stage from the run-cache ("Stage ... is cached - skipping run") and builds the tables,
   as with ``--jobs N``. A failed job cancels its dependents (``--kill-on-invalid-dep=yes``,
   and dependents not yet submitted are not); the others run to their end, then the repro
   stops with one line naming the stage and its log. Ctrl-C (or SIGTERM) cancels exactly the
   jobs this repro submitted (``scancel``) and stops the tracking server.

A requeued job (``scontrol requeue``, preemption, a lost node) starts again in the same copy:
its training resumes from the last epoch checkpoint and continues its MLflow run
(:mod:`dipkd.slurm.job`).

Why plain ``sbatch`` and not submitit: a job here is a shell command (``dvc repro``) whose
state lives on the shared filesystem, not a Python function to pickle; a readable batch
script that a user can inspect and resubmit by hand, and SLURM's own ``--dependency``,
``--requeue`` and ``--kill-on-invalid-dep`` are all it needs. submitit's strengths (pickled
callables, its own checkpoint-and-requeue protocol) do not apply, and it would add a
dependency that every node's environment must carry; ``sbatch``/``squeue``/``scancel`` are on
every SLURM submission host.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..parallel_repro import (Job, ParallelReproError, _stream, plan_waves, restrict_to,
                              stage_graph)
from . import scheduler
from .copies import CopyError, cache_dir, make_copy, workspace_files
from .resources import (ResourceError, ResourcePlan, check_gpus, parse_overrides,
                        resource_plan)
from .scheduler import DONE, FAILED, PENDING, RUNNING, UNKNOWN, JobState, SchedulerError
from .script import batch_script
from .workspace import bring_up_to_date, local_stages

RUN_DIR = Path("runs") / "slurm"
VANISHED_AFTER = 3        # polls a job may be unknown to squeue and sacct before it counts
STUCK_AFTER = 30          # polls a job may stay PREEMPTED/NODE_FAIL without being requeued
CANCELLED = "cancelled"   # ours: a job that did not run because a dependency failed
DONE_MARK = "[dipkd] done:"   # dipkd.slurm.job's last line on success


class SlurmReproError(ParallelReproError):
    """What stops a SLURM repro, in one line."""


# --------------------------------------------------------------------------- planning

def final_stages(upstream: Mapping[str, Iterable[str]]) -> set[str]:
    """The stages nothing depends on (tables, figures, efficiency): built by the final
    ``dvc repro`` in the workspace, never submitted."""
    stages = set(upstream) | {d for deps in upstream.values() for d in deps}
    needed = {d for deps in upstream.values() for d in deps}
    return stages - needed


def contract(upstream: Mapping[str, Iterable[str]], drop: Iterable[str]) -> dict[str, set[str]]:
    """The graph without the stages ``drop``: a stage that depended on a dropped one depends
    on what that one depended on instead."""
    drop = set(drop)
    memo: dict[str, set[str]] = {}

    def kept(stage: str) -> set[str]:
        if stage not in memo:
            memo[stage] = set()
            for dep in upstream.get(stage, ()):
                memo[stage] |= kept(dep) if dep in drop else {dep}
        return memo[stage]
    return {s: kept(s) for s in upstream if s not in drop}


FINAL = "<the final dvc repro>"     # plan_jobs' stand-in for what the workspace builds


def plan_jobs(upstream: Mapping[str, Iterable[str]], local: Iterable[str],
              left: Iterable[str]) -> list[Job]:
    """The jobs to submit, each with the jobs it needs: ``dipkd repro --jobs``'s jobs
    (:func:`plan_waves`) of the graph ``upstream``, where the ``local`` stages are no jobs
    (those nothing depends on are built by the final ``dvc repro``, the others run in every
    job's copy) and every other stage belongs to one, also a target that nothing depends on
    (``dipkd repro --executor slurm train_teacher`` trains the teachers in jobs). Kept: the
    jobs one of whose own stages is among ``left`` (still to run), in dependency order,
    their ``needs`` cut to the kept jobs."""
    local = set(local)
    final = final_stages(upstream) & local
    graph = contract({s: set(d) for s, d in upstream.items() if s not in final}, local)
    if not graph:
        return []
    graph[FINAL] = final_stages(graph)     # every remaining end stage is some job's target
    left = set(left)
    jobs = [job for wave in plan_waves(graph) for job in wave if job.own & left]
    heads = {job.target for job in jobs}
    return [Job(job.target, job.own, frozenset(job.needs & heads)) for job in jobs]


# --------------------------------------------------------------------------- tracking

@dataclass
class Tracked:
    """One submitted (or skipped) job."""
    job: Job
    log: Path
    script: Path
    job_id: str | None = None
    state: JobState = field(default_factory=lambda: JobState(PENDING))
    status: str = "unsubmitted"   # unsubmitted, pending, running, done, failed, cancelled
    misses: int = 0               # consecutive polls without an answer about it
    stuck: int = 0                # consecutive polls in PREEMPTED/NODE_FAIL

    @property
    def stage(self) -> str:
        return self.job.target

    @property
    def finished(self) -> bool:
        return self.status in (DONE, FAILED, CANCELLED)


def _log_says_done(log: Path) -> bool:
    try:
        return DONE_MARK in log.read_text(errors="replace")
    except OSError:
        return False


def settle(job: Tracked, state: JobState) -> str:
    """The status of a submitted job after one poll (``state`` from the scheduler): its
    SLURM state's kind, with a job unknown to the scheduler for :data:`VANISHED_AFTER`
    polls judged by its log, and one stuck in a preempted or failed-node state for
    :data:`STUCK_AFTER` polls failed."""
    job.state = state
    if state.kind == UNKNOWN:
        job.misses += 1
        if job.misses < VANISHED_AFTER:
            return job.status
        return DONE if _log_says_done(job.log) else FAILED
    job.misses = 0
    if state.state.split()[0] in ("PREEMPTED", "NODE_FAIL"):
        job.stuck += 1
        if job.stuck >= STUCK_AFTER:
            return FAILED
    else:
        job.stuck = 0
    return state.kind


def describe(job: Tracked, root: Path) -> str:
    """The progress line of a job's new status."""
    state = job.status
    if job.status == PENDING and job.state.reason:
        state += f" ({job.state.reason})"
    elif job.status == RUNNING and job.state.node:
        state += f" on {job.state.node}"
    elif job.status == FAILED:
        state = f"FAILED ({job.state.state.split()[0] if job.state.state != UNKNOWN else 'gone'}"\
                f"), log {_rel(job.log, root)}"
    elif job.status == CANCELLED:
        state = "cancelled: a job it needs failed"
    ident = f"job {job.job_id}" if job.job_id else "not submitted"
    return f"[dipkd] {time.strftime('%H:%M:%S')}  {ident}  {job.stage}  {state}"


def counts(jobs: Iterable[Tracked]) -> str:
    """``2 running, 3 pending, 4 done, 1 failed``: what squeue would say about them."""
    jobs = list(jobs)
    order = (RUNNING, PENDING, "unsubmitted", DONE, FAILED, CANCELLED)
    found = {s: sum(j.status == s for j in jobs) for s in order}
    found[PENDING] += found.pop("unsubmitted")
    return ", ".join(f"{n} {s}" for s, n in found.items() if n)


def failure_line(jobs: Iterable[Tracked], root: Path) -> str | None:
    """The one-line error of a repro with failed jobs, or None."""
    jobs = list(jobs)
    failed = [j for j in jobs if j.status == FAILED]
    if not failed:
        return None
    what = "; ".join(f"{j.stage} (job {j.job_id}, log {_rel(j.log, root)})" for j in failed)
    cancelled = sum(j.status == CANCELLED for j in jobs)
    return (f"failed: {what}" + (f"; {cancelled} job(s) that need it cancelled"
                                 if cancelled else ""))


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- the run

def _raise_interrupt(signum, frame):     # SIGTERM: as Ctrl-C
    raise KeyboardInterrupt


def _write_record(path: Path, jobs: Iterable[Tracked], root: Path) -> None:
    """``runs/slurm/<repro>/jobs.json``: each job's stage, id, dependencies, log, status."""
    by_stage = {j.stage: j for j in jobs}
    record = [{"stage": j.stage, "job_id": j.job_id, "status": j.status,
               "slurm_state": j.state.state if j.job_id else None,
               "after": sorted(by_stage[n].job_id for n in j.job.needs
                               if by_stage[n].job_id),
               "log": _rel(j.log, root), "script": _rel(j.script, root)}
              for j in jobs]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


class Runner:
    """Submits the planned jobs, follows them and reacts to failures (one instance per
    repro; :func:`repro` drives it)."""

    def __init__(self, root: Path, jobs: list[Tracked], *, limit: int | None, poll: float,
                 make_script, out=print):
        self.root, self.jobs, self.limit, self.poll = root, jobs, limit, poll
        self.make_script, self.out = make_script, out
        self.by_stage = {j.stage: j for j in jobs}
        self.record = jobs[0].log.parent / "jobs.json" if jobs else None

    def submitted(self) -> list[Tracked]:
        return [j for j in self.jobs if j.job_id]

    def active(self) -> list[Tracked]:
        return [j for j in self.submitted() if not j.finished]

    def _deps(self, job: Tracked) -> list[Tracked]:
        return [self.by_stage[n] for n in sorted(job.job.needs)]

    def _submit_ready(self) -> bool:
        """Submit what may be submitted now; True if anything was."""
        waiting = [j for j in self.jobs if j.status == "unsubmitted"]
        # ready first (every dependency done), then those whose dependencies are all in the
        # queue: the scheduler starts them the moment those succeed
        ready = [j for j in waiting if all(d.status == DONE for d in self._deps(j))]
        queued = [j for j in waiting if j not in ready and all(
            d.job_id and d.status in (PENDING, RUNNING, DONE) for d in self._deps(j))]
        changed = False
        for job in ready + queued:
            if self.limit is not None and len(self.active()) >= self.limit:
                break
            after = [d.job_id for d in self._deps(job) if d.status != DONE]
            self.make_script(job)
            job.job_id = scheduler.submit(job.script, after)
            job.status = PENDING
            changed = True
            deps = f" after {', '.join(after)}" if after else ""
            self.out(f"[dipkd] {time.strftime('%H:%M:%S')}  job {job.job_id}  {job.stage}  "
                     f"submitted{deps}, log {_rel(job.log, self.root)}")
        return changed

    def _cancel_orphans(self) -> list[Tracked]:
        """Jobs a failed dependency will never let run: not submitted ones are skipped,
        pending ones SLURM has not cancelled yet are cancelled here."""
        newly = []
        for job in self.jobs:
            if job.finished or job.status == RUNNING:
                continue
            if any(d.status in (FAILED, CANCELLED) for d in self._deps(job)):
                if job.job_id:
                    scheduler.cancel([job.job_id])
                job.status = CANCELLED
                newly.append(job)
        return newly

    def _refresh(self) -> list[Tracked]:
        """Poll the scheduler; returns the jobs whose status changed."""
        active = self.active()
        states = scheduler.states([j.job_id for j in active])
        changed = []
        for job in active:
            status = settle(job, states[job.job_id])
            if status == FAILED and any(d.status in (FAILED, CANCELLED)
                                        for d in self._deps(job)):
                status = CANCELLED        # killed by --kill-on-invalid-dep
            if status != job.status:
                job.status = status
                changed.append(job)
        return changed

    def run(self) -> None:
        """Until every job has finished (or will never run)."""
        last = None
        while True:
            changed = self._refresh()
            changed += self._cancel_orphans()
            for job in changed:
                self.out(describe(job, self.root))
            submitted = self._submit_ready()
            if self.record and (changed or submitted):
                _write_record(self.record, self.jobs, self.root)
            line = counts(self.jobs)
            if line != last:
                self.out(f"[dipkd] {time.strftime('%H:%M:%S')}  {line}")
                last = line
            if not self.active() and not any(j.status == "unsubmitted" for j in self.jobs):
                return
            time.sleep(self.poll)

    def cancel_all(self) -> list[str]:
        """``scancel`` the jobs of this repro that have not finished; returns their ids."""
        ids = [j.job_id for j in self.active()]
        scheduler.cancel(ids)
        return ids


def _check_tools() -> None:
    missing = [t for t in ("sbatch", "squeue", "scancel") if shutil.which(t) is None]
    if missing:
        raise SlurmReproError(f"{', '.join(missing)} not found: --executor slurm runs on a "
                              "SLURM submission host (where sbatch and squeue work)")


def _create_experiment(params: dict) -> None:
    """Create the run's MLflow experiment in the local store before its server starts, so
    that its artifacts go to ``mlartifacts/`` as in a local run."""
    from ..config.params import experiment_name
    from ..tracking.mlflow_runs import ensure_experiment
    before = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        ensure_experiment(experiment_name(params))
    finally:      # mlflow.set_tracking_uri exports the variable: give it back
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before


def repro(root: Path, targets: Iterable[str] = (), *, jobs: int | None = None,
          overrides: Iterable[str] = (), poll: float = 10.0, verbose: bool = False,
          out=print) -> None:
    """Run the pipeline of ``root`` (or ``targets`` and what they need) on SLURM (module
    docstring); ``SlurmReproError`` with one line when it cannot or a job failed."""
    from ..config.params import load_params, requested_processes

    if jobs is not None and jobs < 1:
        raise SlurmReproError(f"--jobs must be at least 1, got {jobs}")
    root = root.resolve()
    if any(c.isspace() for c in str(root)):
        raise SlurmReproError(f"{root}: the SLURM executor needs a workspace path without "
                              "spaces (#SBATCH lines cannot quote it)")
    _check_tools()
    params = load_params(root / "params.yaml")
    try:
        plan: ResourcePlan = resource_plan(params, parse_overrides(overrides))
        check_gpus(plan, requested_processes(params))
        workspace_files(root)          # a git repository: fail before anything runs
    except (ResourceError, CopyError) as exc:
        raise SlurmReproError(str(exc)) from exc
    targets = list(targets)
    graph = stage_graph(root)
    graph = restrict_to(graph, targets) if targets else graph
    local = local_stages(root)
    final = final_stages(graph) & set(local)
    inner = {s: set(d) for s, d in graph.items() if s not in final}
    token = time.strftime("%Y%m%d-%H%M%S")
    run_dir = root / RUN_DIR / token

    sync = bring_up_to_date(root, inner, say=out)
    todo = plan_jobs(graph, local, sync.left)
    out(f"[dipkd] slurm repro {token}: {len(sync.restored)} stage(s) restored from the "
        f"run-cache, {len(todo)} job(s) to submit"
        + (f", at most {jobs} in the queue at a time" if jobs and todo else ""))
    if todo:
        outputs = [o for s in inner if s in local for o in local[s]]
        _run_jobs(root, run_dir, todo, params, plan, outputs, limit=jobs, poll=poll,
                  verbose=verbose, token=token, out=out)
    ran = [s for s in _stream(root, "repro", *targets) if s not in final]
    if ran:
        out(f"[dipkd] warning: the workspace ran {', '.join(ran)} instead of restoring it "
            "from the run-cache")
    out(f"[dipkd] slurm repro {token} done")


def _run_jobs(root: Path, run_dir: Path, todo: list[Job], params: dict, plan: ResourcePlan,
              outputs: list[str], *, limit: int | None, poll: float, verbose: bool, token: str,
              out) -> None:
    """Submit ``todo`` with a tracking server up, follow them to their end; one-line
    ``SlurmReproError`` if one failed."""
    from ..tracking.server import TrackingServerError, tracking_server
    run_dir.mkdir(parents=True, exist_ok=True)
    tracked = [Tracked(job, run_dir / f"{job.target}.log", run_dir / f"{job.target}.sh")
               for job in todo]
    files = workspace_files(root)      # now: with the dvc.lock the workspace has
    cache = cache_dir(root)
    user_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not user_uri:
        _create_experiment(params)
    server = (contextlib.nullcontext(user_uri) if user_uri
              else tracking_server(root, run_dir / "mlflow-server.log"))
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with server as uri:
            out(f"[dipkd] MLflow tracking server {uri}"
                + ("" if user_uri else f" (on this machine, store {root / 'mlflow.db'})"))
            env = {"MLFLOW_TRACKING_URI": uri, **({"DIPKD_VERBOSE": "1"} if verbose else {})}

            def make_script(job: Tracked) -> None:
                copy = make_copy(root, job.stage, files, cache, outputs)
                job.script.write_text(batch_script(
                    job.stage, copy=copy, log=job.log, workspace=root, python=sys.executable,
                    resources=plan.for_stage(job.stage), env=env, repro=token))
            runner = Runner(root, tracked, limit=limit, poll=poll, make_script=make_script,
                            out=out)
            try:
                runner.run()
            except KeyboardInterrupt:
                ids = runner.cancel_all()
                out(f"[dipkd] interrupted: cancelled {len(ids)} job(s) of this repro"
                    + (f" ({', '.join(ids)})" if ids else ""))
                raise
            except SchedulerError as exc:
                runner.cancel_all()
                raise SlurmReproError(str(exc)) from exc
            finally:
                _write_record(run_dir / "jobs.json", tracked, root)
    except TrackingServerError as exc:
        raise SlurmReproError(str(exc)) from exc
    finally:
        signal.signal(signal.SIGTERM, old_term)
    error = failure_line(tracked, root)
    if error:
        raise SlurmReproError(error)
