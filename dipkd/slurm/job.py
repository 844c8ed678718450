"""What a SLURM job of ``dipkd repro --executor slurm`` runs on its node:
``python -m dipkd.slurm.job --workspace ROOT STAGE`` in the job's copy of the workspace
(:mod:`dipkd.slurm.copies`).

1. One line for the log: job id, node, attempt (``SLURM_RESTART_COUNT`` + 1).
2. DVC's lock files left by an attempt the scheduler killed (a requeue) are removed: only
   this job ever uses this copy, and SLURM never runs two attempts of one job at once.
3. ``dvc repro STAGE``: the stages upstream of it that another job already ran are restored
   from the shared run-cache, the others run here, then the stage itself. A training that an
   earlier attempt left half done resumes from its last epoch checkpoint and continues its
   MLflow run (its work dir is in the copy, :mod:`dipkd.training`).
4. On success the run logs go to the workspace's ``runs/`` (where ``dvc repro`` leaves them)
   and the copy is removed; on failure the copy stays, so that the next attempt resumes.

The exit code is ``dvc repro``'s: SLURM's ``afterok`` dependencies and the driver read it.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from ..dvc_locks import clear_stale_locks
from .copies import copy_back_logs, remove_copy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dipkd.slurm.job",
                                     description="Run one stage of a SLURM repro in this "
                                                 "copy of the workspace.")
    parser.add_argument("--workspace", required=True, type=Path)
    parser.add_argument("stage")
    args = parser.parse_args(argv)
    copy = Path.cwd()
    attempt = int(os.environ.get("SLURM_RESTART_COUNT") or 0) + 1
    print(f"[dipkd] job {os.environ.get('SLURM_JOB_ID', '?')} on "
          f"{os.environ.get('SLURMD_NODENAME', os.uname().nodename)}, attempt {attempt}: "
          f"dvc repro {args.stage} in {copy}", flush=True)
    removed = clear_stale_locks(copy)
    if removed:
        print(f"[dipkd] removed the DVC locks a killed attempt left: {', '.join(removed)}",
              flush=True)
    code = subprocess.call(["dvc", "repro", args.stage])
    if code != 0:
        print(f"[dipkd] dvc repro {args.stage} failed (exit {code}); the run logs are in "
              f"{copy / 'runs'}", flush=True)
        return code
    logs = copy_back_logs(copy, args.workspace)
    print(f"[dipkd] done: {len(logs)} log file(s) to {args.workspace / 'runs'}", flush=True)
    remove_copy(copy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
