"""`compute` settings that do not change results do not retrain: the training stages depend on
runs/processes.json (pipeline/processes.py), which is the same file for gpus 0 and 1."""
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _processes_file(tmp_path, params, gpus):
    params["compute"] = {"gpus": gpus}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([sys.executable, "-m", "pipeline.processes"], cwd=tmp_path, check=True,
                   env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                   capture_output=True)
    return (tmp_path / "runs/processes.json").read_bytes()


def test_gpus_0_and_1_give_the_same_file_2_another(tmp_path, params):
    zero, one = _processes_file(tmp_path, params, 0), _processes_file(tmp_path, params, 1)
    assert zero == one and b'"processes": 1' in one
    assert _processes_file(tmp_path, params, 2) != one


def test_training_stages_depend_on_the_resolved_file_not_on_compute():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    training = {name for name, st in stages.items()
                if "pipeline.train " in st.get("cmd", st.get("do", {}).get("cmd", ""))}
    assert {"train_teacher", "train_student", "distill", "baseline", "tau"} <= training
    for name in training:
        assert "runs/processes.json" in stages[name]["deps"], name
    users = [name for name, st in stages.items() if "compute" in st.get("params", [])]
    assert users == ["processes"]
