"""`python -m pipeline.compare`: a table from the MLflow store, seeds averaged."""
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from dipkd.tracking.compare import compare_table, runs_frame

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("dipkd-repro/smoke")
    runs = [({"method": "dipkd", "variant": "rit", "tables": "table3"}, 0.50),
            ({"method": "dipkd", "variant": "rit", "tables": "table3"}, 0.54),
            ({"method": "fgd", "tables": "table2"}, 0.40),
            ({"method": "mgd", "tables": "table2"}, None)]          # never evaluated
    for tags, m_ap in runs:
        with mlflow.start_run(experiment_id=exp):
            mlflow.set_tags({"dataset": "ssdd", "detector": "faster_rcnn", "role": "distilled",
                             "profile": "smoke", **tags})
            if m_ap is not None:
                mlflow.log_metrics({"test/mAP": m_ap, "test/AP50": 0.9, "test/mAR": 0.6})
    mlflow.end_run()
    return uri


def test_seeds_are_averaged_and_unevaluated_runs_left_out(store):
    table = compare_table(runs_frame("dipkd-repro/smoke"))
    assert len(table) == 2
    rit = table[table["variant"] == "rit"].iloc[0]
    assert rit["runs"] == 2 and rit["mAP"] == 52.0 and rit["mAP std"] == pytest.approx(2.8)
    only3 = compare_table(runs_frame("dipkd-repro/smoke", "tags.tables LIKE '%table3%'"))
    assert list(only3["method"]) == ["dipkd"]


def test_command_prints_the_table_and_names_a_missing_experiment(store, tmp_path):
    cmd = [sys.executable, "-m", "pipeline.compare", "--params", str(REPO / "params.yaml")]
    out = subprocess.run(cmd + ["--metrics", "mAP"], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = {line.split("|")[4].strip(): line for line in out.stdout.splitlines()[2:]}
    assert set(rows) == {"dipkd", "fgd"}
    assert "40.0" in rows["fgd"] and "52.0" in rows["dipkd"] and "mgd" not in out.stdout
    bad = subprocess.run(cmd + ["--experiment", "nope"], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "no MLflow experiment 'nope'" in bad.stderr
