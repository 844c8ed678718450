"""The four SLURM commands ``dipkd repro --executor slurm`` uses, and what their answers mean.

``sbatch --parsable`` submits a batch script (with ``--dependency=afterok:...``) and prints
the job id; ``squeue --states=all`` gives the state of every job the controller still holds
(finished ones for ``MinJobAge`` seconds, 300 by default); ``sacct`` answers for jobs the
controller has forgotten, where the cluster keeps accounting; ``scancel`` cancels jobs by id.
A job known to neither is *unknown*: the caller decides how long to wait for it.

Each SLURM state falls into one of four kinds (:func:`kind`): pending, running, done and
failed. ``PREEMPTED``, ``NODE_FAIL`` and ``REQUEUED`` count as running: a job submitted with
``--requeue`` goes back to pending after them (a requeued job then resumes from its last
epoch checkpoint); one that stays in them for good is a failure the caller's patience catches.
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PENDING, RUNNING, DONE, FAILED, UNKNOWN = "pending", "running", "done", "failed", "unknown"
KINDS = (PENDING, RUNNING, DONE, FAILED)
_PENDING = {"PENDING", "CONFIGURING", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
            "SUSPENDED", "STOPPED", "RESIZING", "SPECIAL_EXIT", "SIGNALING", "STAGE_OUT"}
_RUNNING = {"RUNNING", "COMPLETING", "PREEMPTED", "NODE_FAIL", "REQUEUED"}
_DONE = {"COMPLETED"}
_FAILED = {"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
           "REVOKED"}


class SchedulerError(RuntimeError):
    """A SLURM command failed (one line: the command and its last message)."""


@dataclass(frozen=True)
class JobState:
    """What the scheduler says about one job."""
    state: str            # SLURM's state name (``RUNNING``, ``CANCELLED``, ...), or UNKNOWN
    reason: str = ""      # squeue's reason (``Dependency``, ``DependencyNeverSatisfied``, ...)
    node: str = ""        # where it runs or ran

    @property
    def kind(self) -> str:
        return kind(self.state)


def kind(state: str) -> str:
    """pending, running, done, failed or unknown for a SLURM state name (``CANCELLED by 0``
    as sacct writes it counts as ``CANCELLED``)."""
    state = state.split()[0].rstrip("+") if state.strip() else ""
    for kinds, name in ((_PENDING, PENDING), (_RUNNING, RUNNING), (_DONE, DONE),
                        (_FAILED, FAILED)):
        if state in kinds:
            return name
    return UNKNOWN


def _run(args: list[str], env: Mapping[str, str] | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    except FileNotFoundError as exc:
        raise SchedulerError(f"{args[0]} not found: is this a SLURM submission host? "
                             "(sbatch, squeue and scancel must be on PATH)") from exc
    except subprocess.TimeoutExpired as exc:
        raise SchedulerError(f"`{' '.join(args[:2])} ...` did not answer in 120 s") from exc
    if check and proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise SchedulerError(f"`{' '.join(args[:1])}` failed: "
                             f"{lines[-1] if lines else f'exit {proc.returncode}'}")
    return proc


def parse_job_id(text: str) -> str:
    """The job id ``sbatch --parsable`` printed (``1234`` or ``1234;cluster``)."""
    job_id = text.strip().splitlines()[-1].split(";")[0].strip() if text.strip() else ""
    if not job_id.isdigit():
        raise SchedulerError(f"sbatch printed no job id: {text.strip()!r}")
    return job_id


def submit(script: os.PathLike, after: Iterable[str] = (),
           env: Mapping[str, str] | None = None) -> str:
    """Submit a batch script, to start after every job of ``after`` completed successfully
    (``--dependency=afterok:...``); returns its job id."""
    after = list(after)
    args = ["sbatch", "--parsable"]
    if after:
        args.append("--dependency=afterok:" + ":".join(after))
    return parse_job_id(_run([*args, os.fspath(script)], env).stdout)


SQUEUE_FORMAT = "%i|%T|%r|%N"


def parse_squeue(text: str) -> dict[str, JobState]:
    """``squeue -h -o '%i|%T|%r|%N'`` lines as {job id: state}."""
    states = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 2 and parts[0].strip():
            reason = parts[2].strip() if len(parts) > 2 else ""
            node = parts[3].strip() if len(parts) > 3 else ""
            states[parts[0].strip()] = JobState(parts[1].strip(),
                                                "" if reason == "None" else reason,
                                                "" if node == "(null)" else node)
    return states


def parse_sacct(text: str) -> dict[str, JobState]:
    """``sacct -n -X -P -o JobID,State,NodeList`` lines as {job id: state}."""
    states = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 2 and parts[0].strip():
            node = parts[2].strip() if len(parts) > 2 else ""
            states[parts[0].strip()] = JobState(parts[1].strip(),
                                                node="" if node == "None assigned" else node)
    return states


def states(job_ids: Iterable[str], env: Mapping[str, str] | None = None) -> dict[str, JobState]:
    """The state of each job: squeue's, else sacct's (where accounting is on), else
    ``UNKNOWN``."""
    job_ids = list(job_ids)
    if not job_ids:
        return {}
    proc = _run(["squeue", "-h", "--states=all", "--jobs=" + ",".join(job_ids),
                 "-o", SQUEUE_FORMAT], env, check=False)
    if proc.returncode != 0 and "Invalid job id" not in proc.stderr:
        lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise SchedulerError(f"`squeue` failed: {lines[-1] if lines else proc.returncode}")
    found = parse_squeue(proc.stdout) if proc.returncode == 0 else {}
    missing = [j for j in job_ids if j not in found]
    if missing:
        acct = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State,NodeList",
                     "--jobs=" + ",".join(missing)], env, check=False)
        if acct.returncode == 0:
            found.update({j: s for j, s in parse_sacct(acct.stdout).items() if j in missing})
    return {j: found.get(j, JobState(UNKNOWN)) for j in job_ids}


def cancel(job_ids: Iterable[str], env: Mapping[str, str] | None = None) -> None:
    """``scancel`` exactly these jobs (finished ones are ignored by SLURM)."""
    job_ids = list(job_ids)
    if job_ids:
        _run(["scancel", *job_ids], env, check=False)
