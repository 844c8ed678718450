"""One teacher per dataset and detector (``teacher_seed``): with three seeds, `dvc stage list`
has one teacher stage per dataset and detector, and every distilled stage of every seed
depends on that one teacher model."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dipkd.config.params import ParamsError, run_spec, validate

REPO = Path(__file__).resolve().parents[1]


def _dvc(ws, *args):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("DVC_ROOT", None)
    out = subprocess.run(["dvc", *args], cwd=ws, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_three_seeds_share_one_teacher_per_dataset_and_detector(tmp_path):
    ws = tmp_path / "repo"
    ws.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(REPO / name, ws / name)
    shutil.copytree(REPO / ".dvc", ws / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["seeds"] = [0, 1, 2]
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    stages = [line.split()[0] for line in _dvc(ws, "stage", "list").splitlines() if line]
    teachers = sorted(s for s in stages if s.startswith("train_teacher@"))
    pairs = [f"{d}-{t}" for d in params["datasets"] for t in params["detectors"]]
    assert teachers == sorted(f"train_teacher@{p}" for p in pairs)
    assert sum(s.startswith("train_student@") for s in stages) == 3 * len(pairs)
    dvc_yaml = yaml.safe_load((ws / "dvc.yaml").read_text())
    ts = params["teacher_seed"]
    # every distilled stage family depends on the teacher_seed model, not on its own seed
    for name in ("distill", "distill_noinherit", "baseline", "ablation", "tau", "mask_rate"):
        deps = [d for d in dvc_yaml["stages"][name]["deps"] if str(d).startswith("models/teacher/")]
        assert len(deps) == 1 and deps[0].endswith("-seed${teacher_seed}.pth"), (name, deps)
    dag = _dvc(ws, "dag", "--dot", "distill@ssdd-faster_rcnn-2")
    assert "train_teacher@ssdd-faster_rcnn" in dag and ts == 0


def test_teacher_seed_is_validated_and_is_the_only_teacher(params):
    params["seeds"] = [3, 4]
    params["teacher_seed"] = 7
    spec = run_spec(params, "teacher", "ssdd", "faster_rcnn")
    assert spec.seed == 7 and spec.model_path.name == "ssdd-faster_rcnn-seed7.pth"
    with pytest.raises(ParamsError, match="unknown teacher seed 3"):
        run_spec(params, "teacher", "ssdd", "faster_rcnn", 3)
    assert run_spec(params, "student", "ssdd", "faster_rcnn").seed == 3
    params["teacher_seed"] = -1
    with pytest.raises(ParamsError, match="teacher_seed must be a non-negative integer"):
        validate(params)
