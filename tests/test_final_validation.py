"""The validation after the last epoch is the stage's test (dipkd/evaluation/final_validation.py):
what a training stage writes from it equals, to the bit, a test run again on the exported
model (``pipeline.evaluate``, mmengine's test loop in a new Runner)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _helpers import tiny_workspace
from dipkd.evaluation import final_validation

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(ws, *args):
    env = dict(os.environ, PYTHONPATH=str(REPO), DVC_ROOT=str(ws))
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ws, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"{args}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_the_final_validation_equals_a_fresh_test_of_the_exported_model(tmp_path, params):
    ws = tiny_workspace(tmp_path, params, detector="faster_rcnn", epochs=2)
    run = ["--dataset", "ssdd", "--detector", "faster_rcnn"]
    for role in (["--role", "teacher"], ["--role", "distilled", "--method", "dipkd"]):
        group = "teacher" if role[1] == "teacher" else "distilled/dipkd"
        log = ws / f"runs/{group}/ssdd-faster_rcnn-seed0.log"
        _run(ws, "pipeline.train", *role, *run)
        assert "the test is the validation after the last epoch" in log.read_text()
        metrics = ws / f"metrics/{group}/ssdd-faster_rcnn-seed0.json"
        detections = ws / f"detections/{group}/ssdd-faster_rcnn-seed0.json"
        from_validation = metrics.read_bytes(), detections.read_bytes()
        assert json.loads(from_validation[1]), "no detections: nothing would be compared"
        # the record is gone with the checkpoints: a later run of the stage trains anew
        assert not (ws / f"runs/{group}/ssdd-faster_rcnn-seed0" /
                    final_validation.RECORD_DIR).exists()
        _run(ws, "pipeline.evaluate", *role[:2], *run)          # the test loop, a new Runner
        assert (metrics.read_bytes(), detections.read_bytes()) == from_validation, group


def test_no_record_or_a_cut_one_means_no_reuse(tmp_path):
    record = tmp_path / final_validation.RECORD_DIR
    assert final_validation.read(tmp_path) is None
    record.mkdir()
    (record / final_validation.METRICS_FILE).write_text('{"epoch": 2, "metr')   # cut short
    assert final_validation.read(tmp_path) is None
    (record / final_validation.METRICS_FILE).write_text(
        json.dumps({"epoch": 2, "metrics": {"mAP": 0.5, "APl": None}}))
    assert final_validation.read(tmp_path, tmp_path / "det.json") is None   # no detections
    (record / final_validation.DETECTIONS_FILE).write_text("[]")
    assert final_validation.read(tmp_path, tmp_path / "det.json") == {"mAP": 0.5, "APl": None}
    assert (tmp_path / "det.json").read_text() == "[]"
