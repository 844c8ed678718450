"""Where runs are tracked and how a stage opens (or reopens) its MLflow run.

The store is ``sqlite:///<root>/mlflow.db`` with artifacts in ``<root>/mlartifacts``, where
``<root>`` is ``DVC_ROOT`` when DVC runs the stage (so ``dvc exp run --queue``, which works in
a temporary copy, lands in the same store) and the current directory otherwise.
``MLFLOW_TRACKING_URI`` overrides the store, e.g. for a remote tracking server.

Training runs log through mmengine's own ``MLflowVisBackend`` (losses per logging step,
validation metrics per epoch, the config); the stage opens the run first, so the backend
logs into it, and records the run id next to its outputs so that resuming a killed training
and the test after training (also ``pipeline.evaluate`` later) continue the same run.

What a user comparing runs sees (``mlflow ui``):

- one experiment per profile (``dipkd-repro/<profile>``, :func:`dipkd.config.params.
  experiment_name`), tagged as a model-training experiment (:data:`EXPERIMENT_KIND`): MLflow
  3 opens an untagged experiment on its GenAI overview page instead of the runs table;
- run names ``<group>/<dataset>-<detector>-seed<k>``;
- the dataset as an MLflow input (name, source, digest = our data fingerprint), which fills
  the runs table's Dataset column;
- under ``dvc exp run`` (DVC sets ``DVC_EXP_NAME`` and ``DVC_EXP_BASELINE_REV``): every run of
  one DVC experiment is a child of a parent run named after it, and ``git_commit`` is the
  experiment's baseline commit (the workspace of a queued experiment is a temporary copy).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

from .. import device_slots
from ..config.params import RunSpec, project_root


def store_root() -> Path:
    """Where the local store lives: ``DIPKD_STORE_ROOT`` (a study run in a worktree logs into
    its repository's store) or the project root."""
    root = os.environ.get("DIPKD_STORE_ROOT")
    return Path(root).resolve() if root else project_root()


# sqlite3's busy timeout (s): a writer waits for another process's write instead of failing
# with "database is locked" (parallel stages, `dvc queue start -j N`).
BUSY_TIMEOUT = 60


def local_store_uri() -> str:
    return f"sqlite:///{store_root() / 'mlflow.db'}?timeout={BUSY_TIMEOUT}"


@contextlib.contextmanager
def _store_lock():
    """Serialise the creation of the local store and of experiments across processes (an
    exclusive ``flock`` on ``mlflow.db.lock``) and switch the store to SQLite's WAL journal,
    in which readers never block the one writer. A tracking server needs neither."""
    if tracking_uri() != local_store_uri():
        yield
        return
    root = store_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "mlflow.db.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with contextlib.closing(sqlite3.connect(root / "mlflow.db",
                                                    timeout=BUSY_TIMEOUT)) as db:
                db.execute("PRAGMA journal_mode=WAL")   # persistent: stored in the file
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or local_store_uri()


def artifact_location() -> str:
    return (store_root() / "mlartifacts").as_uri()


# MLflow's experiment tag that selects the UI's layout (mlflow/server/js: experimentKind);
# "custom_model_development" opens the runs table, as for any model-training experiment.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def ensure_experiment(name: str) -> str:
    """Create the experiment (artifacts next to the store, :data:`EXPERIMENT_KIND` tag) if
    needed; return its id. Processes creating it at once all get the same id (the local
    store is created and the experiment looked up under :func:`_store_lock`)."""
    import mlflow
    from mlflow.exceptions import MlflowException
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)  # note: this also exports MLFLOW_TRACKING_URI
    with _store_lock():
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            # A tracking server chooses its own artifact store; the local one keeps them here.
            location = artifact_location() if uri == local_store_uri() else None
            try:
                return mlflow.create_experiment(name, artifact_location=location,
                                                tags=dict([EXPERIMENT_KIND]))
            except MlflowException:          # a server: created by another client meanwhile
                exp = mlflow.get_experiment_by_name(name)
                if exp is None:
                    raise
        if exp.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
            mlflow.tracking.MlflowClient().set_experiment_tag(exp.experiment_id,
                                                              *EXPERIMENT_KIND)
        return exp.experiment_id


PARALLEL_REPRO_VAR = "DIPKD_PARALLEL_REPRO"


def dvc_experiment() -> str | None:
    """The DVC experiment this process runs in (``dvc exp run``), else None. The queued
    experiments of a parallel repro (:mod:`dipkd.parallel_repro`) are its machinery, not
    experiments of the user's: their runs are tagged ``parallel_repro`` instead."""
    if os.environ.get(PARALLEL_REPRO_VAR):
        return None
    return os.environ.get("DVC_EXP_NAME") or None


def git_commit() -> str:
    """The commit the run's code comes from: under ``dvc exp run`` the experiment's baseline
    commit (``DVC_EXP_BASELINE_REV``), else ``HEAD`` of the project."""
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        return os.environ["DVC_EXP_BASELINE_REV"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root(),
                             capture_output=True, text=True, check=True, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_tags(spec: RunSpec, **extra) -> dict:
    """Tags every run carries: dataset, detector, role, method, profile, seed, commit, stage,
    and the device it ran on (``gpu``; ``worker_slot`` and
    ``parallel_repro`` in a parallel repro, :mod:`dipkd.device_slots`; ``slurm_job_id`` and
    ``node`` in a SLURM job, :func:`slurm_tags`)."""
    tags = {"dataset": spec.dataset.name, "data_source": spec.dataset.source,
            "detector": spec.detector, "role": spec.role, "method": spec.method,
            "profile": spec.profile, "seed": str(spec.seed), "git_commit": git_commit(),
            "dvc_stage": os.environ.get("DVC_STAGE", "")}
    if os.environ.get("DIPKD_STUDY"):   # set by `make study` (pipeline/study.py)
        tags["study"] = os.environ["DIPKD_STUDY"]
    if dvc_experiment():
        tags["dvc_exp"] = dvc_experiment()
    if os.environ.get(PARALLEL_REPRO_VAR):
        tags["parallel_repro"] = os.environ[PARALLEL_REPRO_VAR]
    tags.update(device_slots.tags())
    tags.update(slurm_tags())
    tags.update({k: str(v) for k, v in extra.items()})
    return tags


def slurm_tags(env=None) -> dict[str, str]:
    """Where a SLURM job ran the run (``dipkd repro --executor slurm``, or any ``dvc repro``
    inside an allocation): ``slurm_job_id`` (``SLURM_JOB_ID``) and ``node``
    (``SLURMD_NODENAME``); none outside SLURM. A requeued job sets them again when it
    resumes the run, so ``node`` names the node that finished it."""
    env = os.environ if env is None else env
    if not env.get("SLURM_JOB_ID"):
        return {}
    return {"slurm_job_id": env["SLURM_JOB_ID"],
            "node": env.get("SLURMD_NODENAME") or env.get("HOSTNAME", "")}


def run_exists(run_id: str) -> bool:
    """The run is in the current tracking store."""
    import mlflow
    from mlflow.exceptions import MlflowException
    try:
        mlflow.get_run(run_id)
        return True
    except MlflowException:
        return False


def _read_run_id(path: Path) -> str | None:
    try:
        return json.loads(path.read_text())["run_id"]
    except (OSError, ValueError, KeyError):
        return None


def parent_run_id(experiment_id: str, name: str) -> str:
    """The id of the parent run of DVC experiment ``name`` (created on first use)."""
    import mlflow
    client = mlflow.tracking.MlflowClient()
    query = f"tags.dvc_exp = '{name}' AND tags.dipkd_parent = 'true'"
    with _store_lock():   # queued experiments' stages may start at once: one parent
        found = client.search_runs([experiment_id], query, max_results=1,
                                   order_by=["attributes.start_time ASC"])
        if found:
            return found[0].info.run_id
        run = client.create_run(experiment_id, run_name=name,
                                tags={"dvc_exp": name, "dipkd_parent": "true",
                                      "git_commit": git_commit()})
        client.set_terminated(run.info.run_id)
        return run.info.run_id


def log_dataset(spec: RunSpec, digest: str) -> None:
    """The run's dataset as an MLflow input (``mlflow.log_input``): name, source (the data
    directory), digest (the first 32 hex digits of the data fingerprint: MLflow stores at
    most 36 characters) and whether it is synthetic or real."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    source = resolve_dataset_source(str((project_root() / spec.dataset.root).resolve()))
    log_input_once(MetaDataset(source, name=spec.dataset.name, digest=digest[:32]),
                   context="train+test",
                   tags={"data_source": spec.dataset.source, "preset": spec.dataset.preset or ""})


# what a write that lost a race to another run's says (SQLite, PostgreSQL, MySQL wording)
RACE_SIGNS = ("unique constraint", "integrityerror", "duplicate", "database is locked")


def log_input_once(dataset, attempts: int = 4, **kwargs) -> None:
    """``mlflow.log_input``, tried again when it loses a race: MLflow's SQL store looks the
    dataset up and inserts it if missing in one transaction, so two runs that log the same
    new dataset at the same moment (two jobs of a parallel or SLURM repro starting together)
    can both miss it and the second insert fails on the datasets table's unique key
    (``IntegrityError``, a ``BAD_REQUEST`` through a tracking server; measured: 14 of 60
    simultaneous pairs). The failed transaction is rolled back, so the next attempt finds the
    row the other run wrote and only links it."""
    import mlflow
    from mlflow.exceptions import MlflowException
    for attempt in range(attempts):
        try:
            mlflow.log_input(dataset, **kwargs)
            return
        except MlflowException as err:
            lost_race = any(sign in str(err).lower() for sign in RACE_SIGNS)
            if attempt == attempts - 1 or not lost_race:
                raise
            time.sleep(0.2 * (attempt + 1))


def open_run(spec: RunSpec, run_file: Path, *, run_name: str, data_digest: str | None = None,
             **extra_tags):
    """Start the run recorded in ``run_file`` if it still exists in the store, else a new one
    (recorded in ``run_file``, with its params and, given ``data_digest``, its dataset input;
    under ``dvc exp run`` a child of the experiment's parent run). Returns the active
    ``mlflow.ActiveRun``."""
    import mlflow

    exp_id = ensure_experiment(spec.experiment)
    run_id = _read_run_id(run_file)
    if run_id is not None and run_exists(run_id):
        active = mlflow.start_run(run_id=run_id)
    else:
        tags = ({"mlflow.parentRunId": parent_run_id(exp_id, dvc_experiment())}
                if dvc_experiment() else None)
        active = mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=tags)
        mlflow.log_params(spec.tracked_params())
        if data_digest:
            log_dataset(spec, data_digest)
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
