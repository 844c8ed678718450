"""``dipkd repro --executor slurm``: the pipeline on a SLURM cluster, one batch job per run.

:mod:`.repro` drives it (plan, submit, follow, finish; why plain ``sbatch``); :mod:`.workspace`
brings the workspace up to date from DVC's run-cache first; :mod:`.resources` reads the
``slurm:`` block of params.yaml; :mod:`.copies` makes each job's copy of the workspace;
:mod:`.script` writes its batch script; :mod:`.scheduler` talks to ``sbatch``, ``squeue``,
``sacct`` and ``scancel``; :mod:`.job` is what a job runs on its node. The tracking server
the jobs log to: :mod:`dipkd.tracking.server`.
"""
