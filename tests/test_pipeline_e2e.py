"""The default `dvc repro` end to end in a copy of the repository (slow).

Runs the real DVC pipeline on the smoke profile (shrunk a little further to keep CI short),
then checks the table, the MLflow store, `dvc metrics show`, that a second `dvc repro` does
nothing, and that changing one schedule entry invalidates only its own stages.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
TOP_SKIP = {".git", ".venv", "data", "runs", "models", "metrics", "reports", "mlflow.db",
            "mlartifacts", "mlruns", ".pytest_cache", "dvc.lock"}
DVC_SKIP = {"tmp", "cache"}


def _copy_repo(dst: Path) -> None:
    def ignore(directory, names):
        skip = {"__pycache__"} | (TOP_SKIP if Path(directory) == REPO else set()) | \
            (DVC_SKIP if Path(directory) == REPO / ".dvc" else set())
        return [n for n in names if n in skip or n.endswith(".egg-info")]
    shutil.copytree(REPO, dst, ignore=ignore)


def _sh(cwd, *cmd):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               PYTHONPATH=str(cwd))
    env.pop("DVC_ROOT", None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def test_dvc_repro_builds_table1_and_tracks_every_run(tmp_path):
    ws = tmp_path / "repo"
    _copy_repo(ws)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    smoke = params["profiles"]["smoke"]
    smoke["data"] = {"ssdd": {"image_scale": 0.25, "num_train": 4, "num_test": 2},
                     "hrsid": {"image_scale": 0.12, "num_train": 4, "num_test": 2}}
    for det in smoke["schedule"].values():
        for entry in det.values():
            entry["epochs"] = 1
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _sh(ws, "git", "init", "-q")
    _sh(ws, "dvc", "repro")

    table = (ws / "reports/table1.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| SSDD") or
            line.startswith("| HRSID")]
    assert len(rows) == 12, table
    assert "Profile `smoke`" in table
    assert (ws / "reports/table1.csv").is_file()
    table2 = (ws / "reports/table2.md").read_text()
    assert all(name in table2 for name in ("Student", "FitNet", "DeFeat*", "FGD", "MGD", "DIPKD"))
    assert (ws / "reports/table2.tex").is_file()

    shown = json.loads(_sh(ws, "dvc", "metrics", "show", "--json"))
    files = next(iter(shown.values()))["data"]
    assert "metrics/teacher/ssdd-faster_rcnn.json" in files

    import mlflow
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dipkd-repro")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 20  # 4 teachers, 4 students, 4 DIPKD, 4 baselines x 2 datasets
    stages = {r.data.tags["dvc_stage"] for r in runs}
    assert "train_teacher@ssdd-faster_rcnn" in stages
    assert all("test/mAP" in r.data.metrics for r in runs)
    distilled = [r for r in runs if r.data.tags["method"] == "dipkd"]
    assert len(distilled) == 4
    assert all(r.data.tags["method"] == "dipkd" and r.data.tags["sns"] == "True" and
               r.data.tags["kld"] == "True" and r.data.tags["rit"] == "True" for r in distilled)
    assert all("loss_kd_tar" in r.data.metrics and "loss_rit" in r.data.metrics
               for r in distilled)

    again = _sh(ws, "dvc", "repro")
    assert "Running stage" not in again

    smoke["schedule"]["retinanet"]["hrsid"]["lr"] = 0.004
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = _sh(ws, "dvc", "status", "--json")
    changed = set(json.loads(status))
    assert changed == {"train_teacher@hrsid-retinanet", "train_student@hrsid-retinanet",
                       "distill@hrsid-retinanet"}, changed
