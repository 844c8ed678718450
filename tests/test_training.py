"""Training and evaluation through the stage scripts on a tiny synthetic dataset (slow).

Covers: a real mmdet run end to end (train, export, test) with MLflow tracking, resume after a
killed run, a failed test that is rerun without training again, and identical metrics for the
same seed on CPU.
"""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from _helpers import last_capture, tiny_workspace
from _polling import complete_checkpoint, wait_for

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(cwd, *args, check=True):
    env = dict(os.environ, PYTHONPATH=str(REPO), DVC_ROOT=str(cwd))
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _mlflow_runs(cwd):
    import mlflow
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dipkd-repro/smoke")
    return client, client.search_runs([exp.experiment_id])


def test_train_evaluate_and_track(tmp_path, params):
    ws = tiny_workspace(tmp_path, params, epochs=2)
    out = _run(ws, "pipeline.train", "--role", "student", "--dataset", "ssdd",
               "--detector", "retinanet")
    assert (ws / "models/student/ssdd-retinanet-seed0.pth").is_file()
    metrics_file = ws / "metrics/student/ssdd-retinanet-seed0.json"
    metrics = json.loads(metrics_file.read_text())     # the stage tested its model
    assert set(metrics["metrics"]) >= {"mAP", "AP50", "mAR", "ARl"}
    # its detections too (a list; a 2-epoch model may find nothing above the score floor)
    assert isinstance(json.loads((ws / "detections/student/ssdd-retinanet-seed0.json")
                                 .read_text()), list)
    # testing again without training (pipeline.evaluate) gives the same numbers
    _run(ws, "pipeline.evaluate", "--role", "student", "--dataset", "ssdd",
         "--detector", "retinanet")
    assert json.loads(metrics_file.read_text()) == metrics
    work = ws / "runs/student/ssdd-retinanet-seed0"
    assert not list(work.glob("epoch_*.pth")) and not (work / "last_checkpoint").exists()
    curves = json.loads((ws / "plots/student/ssdd-retinanet-seed0.json").read_text())
    assert [c["epoch"] for c in curves] == [1, 2]
    assert all(c["loss"] > 0 and c["mAP"] is not None for c in curves), curves
    client, runs = _mlflow_runs(ws)
    assert len(runs) == 1, out.stdout[-2000:]
    run = runs[0]
    assert {k: run.data.tags[k] for k in ("dataset", "detector", "role", "profile", "seed")} == {
        "dataset": "ssdd", "detector": "retinanet", "role": "student", "profile": "smoke",
        "seed": "0"}
    assert run.data.params["schedule.epochs"] == "2"
    assert "test/mAP" in run.data.metrics and "coco/mAP" in run.data.metrics
    loss_history = client.get_metric_history(run.info.run_id, "loss")
    assert len(loss_history) >= 2  # per logging step, not once per run
    assert len(client.get_metric_history(run.info.run_id, "coco/mAP")) == 2  # per epoch
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "metrics")}
    assert "metrics/ssdd-retinanet-seed0.json" in artifacts

    # the exported model is a plain mmdet checkpoint: mmdet's own loader takes it
    from mmdet.apis import init_detector
    from dipkd.mmdet_config import build_config
    from dipkd.config.params import load_params, run_spec
    cfg = build_config(run_spec(load_params(ws / "params.yaml"), "student", "ssdd",
                                "retinanet"))
    model = init_detector(cfg, str(ws / "models/student/ssdd-retinanet-seed0.pth"), device="cpu")
    assert model.dataset_meta["classes"] == ("ship",)


def test_killed_training_resumes_from_last_checkpoint(tmp_path, params):
    ws = tiny_workspace(tmp_path, params, epochs=3)
    env = dict(os.environ, PYTHONPATH=str(REPO), DVC_ROOT=str(ws))
    cmd = [sys.executable, "-m", "pipeline.train", "--role", "student", "--dataset", "ssdd",
           "--detector", "retinanet"]
    proc = subprocess.Popen(cmd, cwd=ws, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    work = ws / "runs/student/ssdd-retinanet-seed0"
    # the first epoch's checkpoint complete on disk (named by last_checkpoint and loadable),
    # while the training still runs: the kill interrupts it
    wait_for(lambda: proc.poll() is not None or complete_checkpoint(work),
             "a complete first checkpoint")
    assert proc.poll() is None, "the training ended before it could be killed"
    assert complete_checkpoint(work), "no first checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (ws / "models/student/ssdd-retinanet-seed0.pth").exists()
    run_id = json.loads((ws / "runs/student/ssdd-retinanet-seed0/mlflow_run.json").read_text())

    out = _run(ws, *cmd[2:])
    assert "resuming" in out.stdout + out.stderr
    resumed = re.search(r"resuming \S+ from \S+epoch_(\d+)\.pth", out.stdout + out.stderr)
    assert resumed and int(resumed.group(1)) in (1, 2)  # the kill came after epoch 1 or 2
    from dipkd.checkpoint import safe_load
    meta = safe_load(ws / "models/student/ssdd-retinanet-seed0.pth")["meta"]
    assert meta["epoch"] == 3
    assert meta["mlflow_run_id"] == run_id["run_id"]  # the same MLflow run continued


def test_failed_test_is_rerun_without_training_again(tmp_path, params, monkeypatch, capfd):
    """The training stage tests its model after exporting it; when the test fails the stage
    fails but keeps the checkpoints, and running it again (DVC removed its outputs) resumes at
    the last epoch, trains nothing, exports, tests and only then prunes the work dir."""
    import pipeline.train as stage

    ws = tiny_workspace(tmp_path, params, epochs=1)
    monkeypatch.chdir(ws)
    monkeypatch.setenv("DVC_ROOT", str(ws))
    monkeypatch.setattr(sys, "argv", ["train", "--role", "student", "--dataset", "ssdd",
                                      "--detector", "retinanet"])

    def broken_test(spec, **options):
        raise RuntimeError("test split unreadable")
    monkeypatch.setattr(stage, "evaluate", broken_test)
    with pytest.raises(SystemExit) as failed:       # one line on the console, the rest logged
        stage.cli()
    assert failed.value.code == 1
    assert "RuntimeError: test split unreadable" in last_capture(
        ws / "runs/student/ssdd-retinanet-seed0.log")
    model = ws / "models/student/ssdd-retinanet-seed0.pth"
    work = ws / "runs/student/ssdd-retinanet-seed0"
    assert model.is_file() and (work / "last_checkpoint").exists()
    assert not (ws / "metrics/student/ssdd-retinanet-seed0.json").exists()
    capfd.readouterr()

    model.unlink()                      # what `dvc repro` does before running the stage again
    out = _run(ws, "pipeline.train", "--role", "student", "--dataset", "ssdd",
               "--detector", "retinanet")
    log = out.stdout + out.stderr + last_capture(ws / "runs/student/ssdd-retinanet-seed0.log")
    assert "resuming" in log and "Epoch(train)" not in log, log[-3000:]
    assert model.is_file() and (ws / "metrics/student/ssdd-retinanet-seed0.json").is_file()
    assert not (work / "last_checkpoint").exists() and not list(work.glob("epoch_*.pth"))


def test_same_seed_same_metrics(tmp_path, params):
    results = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        ws = tiny_workspace(tmp_path / name, yaml.safe_load(yaml.safe_dump(params)),
                            detector="faster_rcnn", epochs=1)
        _run(ws, "pipeline.train", "--role", "teacher", "--dataset", "ssdd",
             "--detector", "faster_rcnn")
        results.append(json.loads((ws / "metrics/teacher/ssdd-faster_rcnn-seed0.json").read_text()))
    assert results[0]["metrics"] == results[1]["metrics"]


def test_bad_names_give_one_line_errors(tmp_path, params):
    params["detectors"] = ["yolo"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = _run(tmp_path, "pipeline.train", "--role", "teacher", "--dataset", "ssdd", "--detector", "yolo",
                check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: unknown detector 'yolo'; valid: faster_rcnn, "
                                   "retinanet")
    assert not (tmp_path / "runs").exists()


def test_missing_data_is_reported(tmp_path, params):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = _run(tmp_path, "pipeline.train", "--role", "teacher", "--dataset", "ssdd",
                "--detector", "retinanet", check=False)
    assert proc.returncode == 2
    assert "data/ssdd" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
