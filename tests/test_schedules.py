"""The training stages depend on their resolved schedule (runs/schedules/, pipeline/
schedules.py), not on the schedule params: the students' epochs change the students' file
only, so the teacher is not retrained (and two studies that differ only there share it)."""
import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _schedules(tmp_path, params) -> dict:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([sys.executable, "-m", "pipeline.schedules"], cwd=tmp_path, check=True,
                   env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                   capture_output=True)
    return {p.name: p.read_bytes() for p in (tmp_path / "runs/schedules").glob("*.json")}


def test_student_epochs_leave_the_teachers_file_unchanged(tmp_path, params):
    params["profile"] = "study"
    entry = params["profiles"]["study"]["schedule"]["faster_rcnn"]["ssdd"]
    before = _schedules(tmp_path, params)
    teacher = json.loads(before["ssdd-faster_rcnn-teacher.json"])
    student = json.loads(before["ssdd-faster_rcnn-student.json"])
    assert teacher["epochs"] == entry["teacher"]["epochs"] != student["epochs"]
    assert student == {"epochs": entry["epochs"], "lr": entry["lr"],
                       "scale": list(entry["scale"]), "milestones": None}
    entry["epochs"] = entry["epochs"] + 8
    after = _schedules(tmp_path, params)
    assert after["ssdd-faster_rcnn-teacher.json"] == before["ssdd-faster_rcnn-teacher.json"]
    assert after["ssdd-faster_rcnn-student.json"] != before["ssdd-faster_rcnn-student.json"]
    entry["teacher"]["epochs"] += 1
    assert _schedules(tmp_path, params)["ssdd-faster_rcnn-teacher.json"] != \
        before["ssdd-faster_rcnn-teacher.json"]


def test_training_stages_depend_on_their_schedule_file_not_the_params():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    training = {name for name, st in stages.items()
                if "pipeline.train " in st.get("cmd", "")}
    assert {"train_teacher", "train_student", "distill", "baseline", "ablation"} <= training
    for name in training:
        files = [d for d in stages[name]["deps"] if str(d).startswith("runs/schedules/")]
        kind = "teacher" if name == "train_teacher" else "student"
        assert len(files) == 1 and files[0].endswith(f"-{kind}.json"), name
        assert not any("schedule" in str(p) for p in stages[name]["params"]), name
