"""`make study` end to end on a shrunk copy: a study definition runs through DVC in a
worktree and writes every file of reports/studies/<name>/ (slow)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_pipeline_e2e import _copy_repo

pytestmark = pytest.mark.slow

TINY = {
    "profile": "smoke", "seeds": [0, 1], "teacher_seed": 0,
    "datasets": ["ssdd"], "detectors": ["faster_rcnn"],
    "baselines": ["inherit_only"], "baseline_detector": "faster_rcnn",
    "compare": [["dipkd", "inherit_only"], ["dipkd", "dipkd-inheritfalse"]],
    "ablation": {"dataset": "ssdd", "detector": "faster_rcnn", "modules": [], "tau": [],
                 "mask_rate": []},
    "profiles": {"smoke": {
        "data": {"ssdd": {"image_scale": 0.25, "num_train": 4, "num_test": 3}},
        "train": {"kd_probe": True, "kd_probe_interval": 1},   # the KD-term probe, 2 iterations
        "schedule": {"faster_rcnn": {"ssdd": {"epochs": 1, "lr": 0.01, "scale": [128, 96]}}}}},
}


def test_study_runs_end_to_end_and_writes_every_file(tmp_path):
    ws = tmp_path / "repo"
    _copy_repo(ws)
    (ws / "studies").mkdir(exist_ok=True)
    (ws / "studies" / "tiny.yaml").write_text(yaml.safe_dump(
        dict(TINY, reference_curves={"a measurement": "ref.json"}), sort_keys=False))
    (ws / "ref.json").write_text(json.dumps({"student": {"epoch": [1, 2], "mAP": [0.1, 0.2]}}))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               PYTHONPATH=str(ws), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t",
               DIPKD_STUDY_CACHE=str(tmp_path / "dvc-cache"))
    env.pop("DVC_ROOT", None)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "x"]):
        subprocess.run(cmd, cwd=ws, env=env, check=True)
    out = subprocess.run([sys.executable, "-m", "pipeline.study", "--name", "tiny",
                          "--at-once", "2"], cwd=ws, env=dict(env, OMP_NUM_THREADS="1"),
                         capture_output=True, text=True, timeout=3000)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = ws / "reports" / "studies" / "tiny"
    for name in ("README.md", "curves.png", "curves.json", "params.yaml",
                 *(f"{t}.{e}" for t in (*(f"table{n}" for n in range(1, 6)), "compare")
                   for e in ("md", "csv"))):
        assert (report / name).is_file() and (report / name).stat().st_size > 0, name
    readme = (report / "README.md").read_text()
    assert "wall time" in readme and "commit" in readme and "Δ mAP vs student" in readme
    assert "ResNet18 + teacher init, no KD" in readme and "Paired comparisons" in readme
    assert "The paper's effects vs this study's resolution" in readme
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in readme.splitlines()]
    assert ["DIPKD - Student (SSDD, Faster R-CNN)", "+2.8"] in [c[:2] for c in cells]
    assert "What each KD term did in training" in readme and "`loss_kd_tar`" in readme
    assert "- reference curve, dashed in `curves.png`: a measurement (`ref.json`)" in readme
    import pandas as pd
    pairs = pd.read_csv(report / "compare.csv")
    assert list(pairs.loc[pairs["named"], "b"]) == ["inherit_only", "dipkd-inheritfalse"]
    assert (pairs["n_seeds"] == 2).all() and pairs["mAP_half_width"].notna().all()
    assert yaml.safe_load((report / "params.yaml").read_text())["seeds"] == [0, 1]
    curves = json.loads((report / "curves.json").read_text())
    assert "teacher/ssdd-faster_rcnn-seed0" in curves and "student/ssdd-faster_rcnn-seed1" in curves
    import mlflow
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("dipkd-repro/smoke").experiment_id])
    # 1 teacher + 2 seeds x (student, DIPKD, DIPKD without inheritance, inherit-only)
    assert len(runs) == 9 and all(r.data.tags.get("study") == "tiny" for r in runs)
    dipkd = [r for r in runs if r.data.tags.get("method") == "dipkd"
             and "variant" not in r.data.tags]
    assert len(dipkd) == 2 and all("compare/dipkd-vs-inherit_only/mAP_ci_low" in r.data.metrics
                                   for r in dipkd)
    # a later part pinned to the study's commit: code committed since retrains nothing
    first = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ws, capture_output=True,
                           text=True).stdout.strip()
    with open(ws / "dipkd" / "training.py", "a") as f:
        f.write("\n# a later change of the training code\n")
    subprocess.run(["git", "commit", "-qam", "later"], cwd=ws, env=env, check=True)
    (ws / "studies" / "tiny.yaml").write_text(yaml.safe_dump(dict(TINY, commit=first)))
    ledger = ws / ".studies" / "tiny.parts.json"      # a pause recorded into the first part
    parts = json.loads(ledger.read_text())
    ledger.write_text(json.dumps([dict(parts[0], paused_s=6, paused_why="measuring")]))
    again = subprocess.run([sys.executable, "-m", "pipeline.study", "--name", "tiny"], cwd=ws,
                           env=env, capture_output=True, text=True, timeout=3000)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "Running stage 'train" not in again.stdout and "Running stage 'distill" not in \
        again.stdout
    readme = (report / "README.md").read_text()
    assert f"commit: `{first}`" in readme and "over 2 part(s)" in readme
    assert "not counted: 0.1 min in 1 pause(s): measuring" in readme
    assert len(client.search_runs([runs[0].info.experiment_id])) == 9
    assert (tmp_path / "dvc-cache" / "runs").is_dir()       # the run-cache, outside the clone
    bad = subprocess.run([sys.executable, "-m", "pipeline.study", "--name", "missing"], cwd=ws,
                         env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "study definition not found" in bad.stderr
    (ws / "studies" / "nofgd.yaml").write_text(yaml.safe_dump(
        dict(TINY, compare=[["dipkd", "fgd"]])))                # fgd is not run: refused
    bad = subprocess.run([sys.executable, "-m", "pipeline.study", "--name", "nofgd"], cwd=ws,
                         env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "pair [dipkd, fgd]: no runs named fgd" in bad.stderr
    (ws / "studies" / "noref.yaml").write_text(yaml.safe_dump(
        dict(TINY, reference_curves={"x": "missing.json"})))
    bad = subprocess.run([sys.executable, "-m", "pipeline.study", "--name", "noref"], cwd=ws,
                         env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "reference_curves: missing.json: no such file" in bad.stderr
    assert not (ws / "reports" / "studies" / "nofgd").exists()
