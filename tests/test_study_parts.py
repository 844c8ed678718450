"""The study report's bookkeeping: the wall-time ledger with recorded pauses, and the curves
grouped over seeds for the figure (pipeline/study.py)."""
import json

import pytest

from pipeline.study import Parts, curve_groups


def test_a_recorded_pause_is_not_counted(tmp_path):
    ledger = tmp_path / "s.parts.json"
    ledger.write_text(json.dumps([{"start": 100.0, "seen": 400.0, "paused_s": 50,
                                   "paused_why": "measuring"}, {"start": 500.0, "seen": 600.0}]))
    parts = Parts(ledger)
    wall, count = parts.close()
    assert count == 3
    last = json.loads(ledger.read_text())[-1]
    assert wall == pytest.approx(250 + 100 + last["seen"] - last["start"])
    assert parts.paused() == [(50, "measuring")]


def test_curves_are_grouped_over_seeds():
    data = {"student/ssdd-faster_rcnn-seed0": {"epoch": [1, 2], "mAP": [0.1, 0.3],
                                               "loss": [2.0, 1.0]},
            "student/ssdd-faster_rcnn-seed1": {"epoch": [1, 2], "mAP": [None, 0.5],
                                               "loss": [3.0, 1.5]},
            "teacher/ssdd-faster_rcnn-seed0": {"epoch": [1], "mAP": [0.2], "loss": [1.0]}}
    groups = curve_groups(data)
    assert set(groups) == {"student/ssdd-faster_rcnn", "teacher/ssdd-faster_rcnn"}
    assert groups["student/ssdd-faster_rcnn"]["mAP"] == {1: [0.1], 2: [0.3, 0.5]}
    assert groups["student/ssdd-faster_rcnn"]["loss"] == {1: [2.0, 3.0], 2: [1.0, 1.5]}
