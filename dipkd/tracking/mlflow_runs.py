"""Where runs are tracked and how a stage opens (or reopens) its MLflow run.

The store is ``sqlite:///<root>/mlflow.db`` with artifacts in ``<root>/mlartifacts``, where
``<root>`` is ``DVC_ROOT`` when DVC runs the stage (so ``dvc exp run --queue``, which works in
a temporary copy, lands in the same store) and the current directory otherwise.
``MLFLOW_TRACKING_URI`` overrides the store, e.g. for a remote tracking server.

Training runs log through mmengine's own ``MLflowVisBackend`` (losses per logging step,
validation metrics per epoch, the config); the stage opens the run first, so the backend
logs into it, and records the run id next to its outputs so that resuming a killed training
and the later evaluation stage continue the same run.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from ..config.params import SENSITIVITY_KEYS, RunSpec, project_root


def store_root() -> Path:
    """Where the local store lives: ``DIPKD_STORE_ROOT`` (a study run in a worktree logs into
    its repository's store) or the project root."""
    root = os.environ.get("DIPKD_STORE_ROOT")
    return Path(root).resolve() if root else project_root()


def local_store_uri() -> str:
    return f"sqlite:///{store_root() / 'mlflow.db'}"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or local_store_uri()


def artifact_location() -> str:
    return (store_root() / "mlartifacts").as_uri()


def ensure_experiment(name: str) -> str:
    """Create the experiment (artifacts next to the store) if needed; return its id."""
    import mlflow
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)  # note: this also exports MLFLOW_TRACKING_URI
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        # A tracking server chooses its own artifact store; the local store keeps them here.
        location = artifact_location() if uri == local_store_uri() else None
        return mlflow.create_experiment(name, artifact_location=location)
    return exp.experiment_id


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root(),
                             capture_output=True, text=True, check=True, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def tables_fed(spec: RunSpec) -> str:
    """The report tables a run feeds (the ``tables`` tag, to filter runs in ``mlflow ui``):
    the student is Table 3's "none" row, the DIPKD run the all-modules / default rows of
    Tables 3-5, a DIPKD variant the table of the params it changes."""
    if spec.role == "teacher":
        return "table1"
    if spec.role == "student":
        return "table1,table2,table3"
    if spec.method == "dipkd" and not spec.variant:
        return "table1,table2,table3,table4,table5"
    if spec.method == "dipkd" and spec.variant.startswith("inherit"):
        return "table1"
    if spec.method == "dipkd":
        return ",".join(sorted({next((t for k, t in SENSITIVITY_KEYS.items()
                                      if part.startswith(k)), "table3")
                                for part in spec.variant.split("-")}))
    return "table2"


def run_tags(spec: RunSpec, **extra) -> dict:
    """Tags every run carries: dataset, detector, role, method, profile, seed, commit, stage,
    and the tables it feeds."""
    tags = {"dataset": spec.dataset.name, "data_source": spec.dataset.source,
            "detector": spec.detector, "role": spec.role, "method": spec.method,
            "profile": spec.profile, "seed": str(spec.seed), "git_commit": git_commit(),
            "dvc_stage": os.environ.get("DVC_STAGE", ""), "tables": tables_fed(spec)}
    if os.environ.get("DIPKD_STUDY"):   # set by `make study` (pipeline/study.py)
        tags["study"] = os.environ["DIPKD_STUDY"]
    tags.update({k: str(v) for k, v in extra.items()})
    return tags


def _read_run_id(path: Path) -> str | None:
    try:
        return json.loads(path.read_text())["run_id"]
    except (OSError, ValueError, KeyError):
        return None


def open_run(spec: RunSpec, run_file: Path, *, run_name: str, **extra_tags):
    """Start the run recorded in ``run_file`` if it still exists in the store, else a new one
    (recorded in ``run_file``). Returns the active ``mlflow.ActiveRun``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    exp_id = ensure_experiment(spec.experiment)
    run_id = _read_run_id(run_file)
    if run_id is not None:
        try:
            mlflow.get_run(run_id)
        except MlflowException:
            run_id = None
    if run_id is not None:
        active = mlflow.start_run(run_id=run_id)
    else:
        active = mlflow.start_run(experiment_id=exp_id, run_name=run_name)
        mlflow.log_params(spec.tracked_params())
        run_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = run_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"run_id": active.info.run_id, "experiment_id": exp_id}))
        os.replace(tmp, run_file)
    mlflow.set_tags(run_tags(spec, **extra_tags))
    return active


def mlflow_vis_backend(spec: RunSpec) -> dict:
    """mmengine ``MLflowVisBackend`` config logging into the run opened by :func:`open_run`
    (only the config text; the params that matter are logged by :func:`open_run`)."""
    return dict(type="MLflowVisBackend", tracking_uri=tracking_uri(), exp_name=spec.experiment,
                tracked_config_keys=[], artifact_suffix=(".json", ".log", ".py"))
