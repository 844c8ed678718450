"""The batch script of one SLURM job of ``dipkd repro --executor slurm``.

It is a plain ``bash`` script with ``#SBATCH`` lines, written next to the job's log in
``runs/slurm/<repro>/<stage>.sh`` so that a user can read it (and ``sbatch`` it again by hand):

- the job's name (``dipkd:<stage>``), log (``--output``, appended to on a requeue), working
  directory (the job's copy of the workspace, :mod:`dipkd.slurm.copies`), ``--requeue`` (a
  preempted job or one on a lost node comes back and resumes from its checkpoint) and
  ``--kill-on-invalid-dep=yes`` (a job whose dependency failed is cancelled instead of waiting
  forever);
- the resources of :mod:`dipkd.slurm.resources`;
- the environment the stage needs: the Python environment's ``bin`` first on ``PATH``, the
  MLflow tracking server, one thread per allocated CPU unless ``OMP_NUM_THREADS`` is set;
- ``python -m dipkd.slurm.job <stage>``, which runs ``dvc repro <stage>`` in the copy.
"""
from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path

from .resources import Resources


def job_name(stage: str) -> str:
    """The job's name in ``squeue``."""
    return f"dipkd:{stage}"


def batch_script(stage: str, *, copy: Path, log: Path, workspace: Path, python: str,
                 resources: Resources, env: Mapping[str, str], repro: str) -> str:
    """The script's text; ``env`` holds the variables it exports (tracking server, ...)."""
    q = shlex.quote
    lines = [
        "#!/bin/bash",
        f"# dipkd repro --executor slurm ({repro}): stage {stage}",
        f"#SBATCH --job-name={job_name(stage)}",
        f"#SBATCH --output={log}",
        "#SBATCH --open-mode=append",
        f"#SBATCH --chdir={copy}",
        "#SBATCH --requeue",
        "#SBATCH --kill-on-invalid-dep=yes",
        *resources.sbatch_lines(),
        "set -eu",
        f"export PATH={q(str(Path(python).parent))}:\"$PATH\"",
        *(f"export {name}={q(value)}" for name, value in sorted(env.items())),
        'export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"',
        'export MKL_NUM_THREADS="${MKL_NUM_THREADS:-$OMP_NUM_THREADS}"',
        f"cd {q(str(copy))}",
        f"exec {q(python)} -m dipkd.slurm.job --workspace {q(str(workspace))} {q(stage)}",
        "",
    ]
    return "\n".join(lines)
