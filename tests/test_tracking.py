"""MLflow tags, store location, experiments, inputs and parent runs (no training needed)."""
import os

import pytest

from dipkd.config.params import distill_spec, run_spec
from dipkd.tracking.mlflow_runs import local_store_uri, run_tags, tracking_uri


def test_tags_name_the_run(params, monkeypatch):
    monkeypatch.setenv("DVC_STAGE", "train_teacher@ssdd-faster_rcnn")
    tags = run_tags(run_spec(params, "teacher", "ssdd", "faster_rcnn"), sns=True)
    assert {k: tags[k] for k in ("dataset", "detector", "role", "method", "profile", "seed",
                                 "dvc_stage", "sns", "gpu")} == {
        "dataset": "ssdd", "detector": "faster_rcnn", "role": "teacher", "method": "none",
        "profile": "smoke", "seed": "0", "dvc_stage": "train_teacher@ssdd-faster_rcnn",
        "sns": "True", "gpu": "cpu"}
    assert "tables" not in tags       # set by the tables stage (test_tables_registry.py)
    assert run_tags(distill_spec(params, "fgd", "hrsid", "faster_rcnn"))["method"] == "fgd"


def test_store_is_at_dvc_root_unless_a_server_is_set(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking_uri() == local_store_uri() == \
        f"sqlite:///{tmp_path / 'mlflow.db'}?timeout=60"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    """One MLflow store for this module's tests (creating a SQLite store takes seconds)."""
    return tmp_path_factory.mktemp("store")


@pytest.fixture
def client(store_dir, tmp_path, monkeypatch):
    """An MlflowClient on the shared store, with the project root at ``tmp_path`` and no
    DVC experiment in the environment; the store is cleared of runs of earlier tests."""
    import mlflow
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.delenv("DVC_EXP_BASELINE_REV", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("DIPKD_STORE_ROOT", str(store_dir))
    monkeypatch.chdir(tmp_path)
    client = mlflow.tracking.MlflowClient(tracking_uri=local_store_uri())
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            client.delete_run(run.info.run_id)
    yield client
    mlflow.end_run()
    # set by mlflow.set_tracking_uri; not monkeypatch.delenv, whose undo would put it back
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def test_each_profile_has_its_own_model_training_experiment(params, client, store_dir):
    import mlflow
    from dipkd.config.params import experiment_name
    from dipkd.tracking.mlflow_runs import EXPERIMENT_KIND, ensure_experiment
    assert run_spec(params, "student", "ssdd", "retinanet").experiment == "dipkd-repro/smoke"
    params["profile"] = "paper"
    assert experiment_name(params) == "dipkd-repro/paper"
    exp_id = ensure_experiment("dipkd-repro/smoke")
    assert ensure_experiment("dipkd-repro/smoke") == exp_id   # idempotent
    assert client.get_experiment(exp_id).tags[EXPERIMENT_KIND[0]] == "custom_model_development"
    # an experiment made before the tag existed gets it on first use
    old = client.create_experiment("old", artifact_location=(store_dir / "a").as_uri())
    assert EXPERIMENT_KIND[0] not in client.get_experiment(old).tags
    assert ensure_experiment("old") == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND[0]] == "custom_model_development"
    mlflow.end_run()


def test_new_run_logs_name_params_and_dataset(params, client, tmp_path):
    import mlflow
    from dipkd.tracking.mlflow_runs import open_run
    spec = run_spec(params, "student", "ssdd", "retinanet")
    open_run(spec, tmp_path / "run.json", run_name=f"{spec.group}/{spec.run_key}",
             data_digest="ab" * 32)
    run_id = mlflow.active_run().info.run_id
    mlflow.end_run()
    run = client.get_run(run_id)
    assert run.info.run_name == "student/ssdd-retinanet-seed0"
    assert run.data.params["schedule.epochs"] == "2"
    (inp,) = run.inputs.dataset_inputs
    assert (inp.dataset.name, inp.dataset.digest) == ("ssdd", "ab" * 16)
    assert str(tmp_path / "data" / "ssdd") in inp.dataset.source
    assert {t.key: t.value for t in inp.tags}["data_source"] == "synthetic"
    assert "mlflow.parentRunId" not in run.data.tags
    assert run.data.tags["git_commit"] != ""


def test_dvc_experiment_runs_share_a_parent_and_the_baseline_commit(params, client, tmp_path,
                                                                      monkeypatch):
    import mlflow
    from dipkd.tracking.mlflow_runs import open_run
    monkeypatch.setenv("DVC_EXP_NAME", "brisk-wren")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "c0ffee" * 6 + "abcd")
    ids = []
    for role in ("teacher", "student"):
        spec = run_spec(params, role, "ssdd", "retinanet")
        open_run(spec, tmp_path / f"{role}.json", run_name=spec.run_key)
        ids.append(mlflow.active_run().info.run_id)
        mlflow.end_run()
    runs = [client.get_run(i) for i in ids]
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert len(parents) == 1
    parent = client.get_run(parents.pop())
    assert parent.info.run_name == "brisk-wren" and parent.data.tags["dvc_exp"] == "brisk-wren"
    assert all(r.data.tags["git_commit"] == "c0ffee" * 6 + "abcd" for r in runs)
    assert all(r.data.tags["dvc_exp"] == "brisk-wren" for r in runs)


def test_evaluating_a_model_from_another_store_makes_a_new_tagged_run(params, client, tmp_path,
                                                                        monkeypatch):
    import json

    import torch

    from dipkd.evaluation import run as ev
    spec = run_spec(params, "student", "ssdd", "retinanet")
    model = tmp_path / "colleague.pth"
    torch.save({"state_dict": {}, "meta": {"mlflow_run_id": "f" * 32}}, model)
    monkeypatch.setattr(ev, "test_model", lambda *a, **k: {"mAP": 0.5, "AP50": 0.9})
    metrics = ev.evaluate(spec, model, out=tmp_path / "m.json")
    assert metrics == {"mAP": 0.5, "AP50": 0.9}
    assert json.loads((tmp_path / "m.json").read_text()) == {"metrics": metrics}  # only metrics
    exp = client.get_experiment_by_name("dipkd-repro/smoke")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.tags["original_run_id"] == "f" * 32
    assert run.data.tags["role"] == "student" and run.data.tags["seed"] == "0"
    assert run.data.metrics["test/mAP"] == 0.5


WRITER = """
import sys
import mlflow
from dipkd.tracking.mlflow_runs import ensure_experiment
exp = ensure_experiment("dipkd-repro/smoke")
with mlflow.start_run(experiment_id=exp, run_name=f"writer{sys.argv[1]}"):
    for step in range(25):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.set_tag(f"t{step}", step)
"""


@pytest.mark.slow
def test_parallel_writers_lose_nothing(tmp_path):
    """Four processes create the store and the experiment at once and log 25 steps each."""
    import os
    import subprocess
    import sys

    import mlflow
    from pathlib import Path
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(DIPKD_STORE_ROOT=str(tmp_path), PYTHONPATH=str(Path(__file__).parents[1]))
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(i)], env=env, cwd=tmp_path,
                              stderr=subprocess.PIPE, text=True) for i in range(4)]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(e[-1500:] for e in errors)
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (exp,) = [e for e in client.search_experiments() if e.name == "dipkd-repro/smoke"]
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"writer{i}" for i in range(4)]
    for run in runs:
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 25
        assert sum(k.startswith("t") for k in run.data.tags) == 25
    import sqlite3
    assert sqlite3.connect(tmp_path / "mlflow.db").execute(
        "PRAGMA journal_mode").fetchone()[0] == "wal"


SAME_DATASET = """
import multiprocessing as mp
import sys


def log(k, barrier, uri, rounds):
    import mlflow
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from dipkd.tracking.mlflow_runs import log_input_once
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name("race").experiment_id
    for i in range(rounds):
        with mlflow.start_run(experiment_id=exp, run_name=f"w{k}-{i}"):
            barrier.wait(60)          # both log the same new dataset at the same moment
            log_input_once(MetaDataset(HTTPDatasetSource("http://data/ssdd"), name="ssdd",
                                       digest=f"{i:032d}"), context="train")


if __name__ == "__main__":
    import mlflow
    uri, rounds = sys.argv[1], int(sys.argv[2])
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("race")
    barrier = mp.Barrier(2)
    procs = [mp.Process(target=log, args=(k, barrier, uri, rounds)) for k in range(2)]
    [p.start() for p in procs]
    [p.join() for p in procs]
    sys.exit(max(p.exitcode for p in procs))
"""


@pytest.mark.slow
def test_two_runs_logging_the_same_new_dataset_at_once_both_get_it(tmp_path):
    """Two processes start a run each and log the same new dataset at the same moment, 20
    times: MLflow's store inserts it once and links it to both (without the retry of
    log_input_once about a quarter of such pairs failed on the datasets' unique key)."""
    import subprocess
    import sys
    from pathlib import Path

    import mlflow
    uri = f"sqlite:///{tmp_path / 'race.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PYTHONPATH"] = str(Path(__file__).parents[1])
    (tmp_path / "race.py").write_text(SAME_DATASET)
    proc = subprocess.run([sys.executable, "race.py", uri, "20"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name("race").experiment_id
    runs = client.search_runs([exp], max_results=100)
    assert len(runs) == 40
    for run in runs:
        (ds,) = run.inputs.dataset_inputs
        assert ds.dataset.digest == f"{int(run.info.run_name.split('-')[1]):032d}"
    import sqlite3
    assert sqlite3.connect(tmp_path / "race.db").execute(
        "SELECT COUNT(*) FROM datasets").fetchone()[0] == 20


def test_log_input_once_retries_only_a_lost_race(monkeypatch):
    """A unique-key failure is tried again (until it succeeds or the attempts run out);
    any other MLflow error is raised at once."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from dipkd.tracking import mlflow_runs
    monkeypatch.setattr(mlflow_runs.time, "sleep", lambda s: None)
    calls = []

    def racing(dataset, **kwargs):
        calls.append(dataset)
        if len(calls) < 3:
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: "
                                  "datasets.experiment_id, datasets.name, datasets.digest")
    monkeypatch.setattr(mlflow, "log_input", racing)
    mlflow_runs.log_input_once("ds", context="train")
    assert calls == ["ds"] * 3
    calls.clear()
    with pytest.raises(MlflowException, match="UNIQUE"):
        mlflow_runs.log_input_once("ds", attempts=2)
    assert len(calls) == 2

    def broken(dataset, **kwargs):
        calls.append(dataset)
        raise MlflowException("RESOURCE_DOES_NOT_EXIST: run not found")
    calls.clear()
    monkeypatch.setattr(mlflow, "log_input", broken)
    with pytest.raises(MlflowException, match="not found"):
        mlflow_runs.log_input_once("ds")
    assert len(calls) == 1
