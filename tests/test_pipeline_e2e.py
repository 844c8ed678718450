"""The default `dvc repro` end to end in a copy of the repository (slow).

Runs the real DVC pipeline on the smoke profile (shrunk further to keep CI short), then checks
the five tables, the figures, the training curves, the MLflow store, `dvc metrics show`, that
a second `dvc repro` does nothing, and that changing tau values or one schedule entry
invalidates only the stages that depend on them.
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
            "mlartifacts", "mlruns", ".pytest_cache", "dvc.lock", "detections", ".studies",
            "plots"}
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


def _shrink(params: dict) -> None:
    """The smoke profile shrunk further to keep CI short: tiny data, one epoch, the method
    lists cut to a few values (every kind of stage still runs)."""
    smoke = params["profiles"]["smoke"]
    smoke["data"] = {"ssdd": {"image_scale": 0.25, "num_train": 4, "num_test": 2},
                     "hrsid": {"image_scale": 0.12, "num_train": 4, "num_test": 2}}
    for det in smoke["schedule"].values():
        for entry in det.values():
            entry["epochs"] = 1
    params["datasets"] = ["ssdd"]
    params["baselines"] = ["fgd", "ifkd"]   # IFKD: a method that reads the teacher's head
    params["compare"] = [["dipkd", "fgd"], ["dipkd", "dipkd-inheritfalse"]]   # no inherit_only
    params["figures"]["methods"] = ["student", "fgd", "ifkd", "dipkd"]
    params["ablation"].update(modules=["rit"], tau=[1.0], mask_rate=[1.0])


def _reflink_works(directory: Path) -> bool:
    probe = directory / ".reflink-probe"
    probe.write_bytes(b"x")
    try:
        return subprocess.run(["cp", "--reflink=always", str(probe), str(probe) + "2"],
                              capture_output=True).returncode == 0
    finally:
        for leftover in directory.glob(".reflink-probe*"):
            leftover.unlink()


def _assert_models_stored_once(ws: Path):
    """.dvc/config links the cache into the workspace (reflink, else hardlink): a model is
    on disk once, not twice."""
    model = next((ws / "models").rglob("*.pth"))
    assert model.stat().st_nlink == 2 or _reflink_works(ws), model


def _assert_manifests_cover_what_the_stages_loaded(ws: Path, records: Path):
    """Every project file a stage process really loaded is in its script's code manifest
    (the stage's code dependency, dipkd/code_deps.py)."""
    from dipkd.code_deps import manifest
    seen = {}
    for record in records.glob("*.json"):
        module = record.name.rsplit(".", 2)[0]
        loaded = set(json.loads(record.read_text()))
        missing = loaded - set(manifest(ws, module))
        assert not missing, (module, missing)
        seen.setdefault(module, set()).update(loaded)
    assert {"dipkd/training.py", "dipkd/evaluation/run.py",
            "dipkd/evaluation/metric.py"} <= seen["pipeline.train"]
    assert {"pipeline.make_tables", "pipeline.prepare_data"} <= set(seen)


def _assert_quiet_console(ws: Path, console: str) -> None:
    """`dipkd repro` (make repro): every stage on at most 3 lines, all prefixed [k/N] with N
    the pipeline's stage count; a training stage's last line has its time and mAP; the full
    output of each run is in its log file."""
    lines = console.splitlines()
    stages = {}
    for line in lines:
        assert line.startswith("["), line
        place, stage = line.split()[:2]
        stages.setdefault((place, stage), []).append(line)
    total = {place.split("/")[1] for place, _ in stages}
    assert len(total) == 1 and int(total.pop().rstrip("]")) == len(stages), sorted(stages)
    crowded = {stage: shown for (_, stage), shown in stages.items() if len(shown) > 3}
    assert not crowded, crowded
    teacher = next(v for (_, s), v in stages.items() if s == "train_teacher@ssdd-faster_rcnn")
    assert teacher[-1].split("  ")[-1].startswith("mAP ") and " s  mAP " in teacher[-1]
    log = ws / "runs/teacher/ssdd-faster_rcnn-seed0.log"
    assert "Epoch(train)" in log.read_text()            # mmengine's log, not on the console


def test_dvc_repro_builds_every_table_and_tracks_every_run(tmp_path):
    ws = tmp_path / "repo"
    _copy_repo(ws)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    _shrink(params)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _sh(ws, "git", "init", "-q")
    os.environ["DIPKD_RECORD_IMPORTS"] = str(tmp_path / "imports")   # conftest restores
    console = _sh(ws, sys.executable, "-m", "dipkd.cli", "repro")     # make repro
    del os.environ["DIPKD_RECORD_IMPORTS"]
    _assert_quiet_console(ws, console)

    _assert_models_stored_once(ws)
    _assert_manifests_cover_what_the_stages_loaded(ws, tmp_path / "imports")

    table = (ws / "reports/tables/table1.md").read_text()
    ours = [line for line in table.splitlines() if line.startswith("| SSDD")]
    assert len(ours) == 8, table    # 2 detectors x {teacher, student, DIPKD, DIPKD w/o inherit}
    assert "Profile `smoke`" in table and "| paper " in table
    assert "Δ mAP vs student [95% CI]" in table and "teacher seed 0" in table
    assert (ws / "detections/distilled/dipkd/ssdd-faster_rcnn-seed0.json").is_file()
    for n in range(1, 6):
        for ext in ("md", "tex", "csv"):
            assert (ws / f"reports/tables/table{n}.{ext}").is_file(), (n, ext)
    assert "Paired comparisons" in (ws / "reports/tables/compare.md").read_text()
    table2 = (ws / "reports/tables/table2.md").read_text()
    assert all(name in table2 for name in ("Student", "FGD", "IFKD*", "DIPKD"))
    table3 = (ws / "reports/tables/table3.csv").read_text().splitlines()
    assert len(table3) == 1 + 3             # none (student), RIT only, all (DIPKD)
    table4 = (ws / "reports/tables/table4.md").read_text()
    assert "0.5 (default)" in table4 and "| 1.0 " in table4
    assert "1.0" in (ws / "reports/tables/table5.md").read_text()
    for fig in ("fig3_speckle", "fig4_heatmaps", "fig5_detections"):
        assert (ws / f"reports/figures/{fig}.png").stat().st_size > 0, fig
    curves = json.loads((ws / "plots/teacher/ssdd-faster_rcnn-seed0.json").read_text())
    assert curves and curves[0]["epoch"] == 1 and curves[0]["loss"] is not None

    shown = json.loads(_sh(ws, "dvc", "metrics", "show", "--json"))
    files = next(iter(shown.values()))["data"]
    assert "metrics/teacher/ssdd-faster_rcnn-seed0.json" in files

    import mlflow
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dipkd-repro/smoke")
    runs = client.search_runs([exp.experiment_id])
    # 2 teachers, 2 students, 2 DIPKD, 2 DIPKD without inheritance, 2 baselines, 1 ablation,
    # 1 tau, 1 mask rate
    assert len(runs) == 13
    stages = {r.data.tags["dvc_stage"] for r in runs}
    assert {"train_teacher@ssdd-faster_rcnn", "ablation@rit-0", "tau@1.0-0",
            "mask_rate@1.0-0", "baseline@ifkd-ssdd-0",
            "distill_noinherit@ssdd-retinanet-0"} <= stages, stages
    assert all("test/mAP" in r.data.metrics for r in runs)
    logged = [a.path for a in client.list_artifacts(runs[0].info.run_id, "logs")]
    assert len(logged) == 1 and logged[0].endswith(".log")      # the stage's full log
    assert all("delta/mAP" in r.data.metrics and "delta/mAP_ci_low" in r.data.metrics
               for r in runs if r.data.tags["role"] == "distilled")
    distilled = [r for r in runs if r.data.tags["method"] == "dipkd"]
    assert len(distilled) == 7
    main = [r for r in distilled if "variant" not in r.data.tags]
    assert {r.data.tags["detector"] for r in main
            if "compare/dipkd-vs-fgd/mAP" in r.data.metrics} == {"faster_rcnn"}
    assert {r.data.tags["variant"] for r in distilled if "variant" in r.data.tags} == {
        "inheritfalse", "rit", "tau1.0", "mask_rate1.0"}
    assert len(main) == 2 and all(r.data.tags["sns"] == "True" and r.data.tags["kld"] == "True"
                                  and r.data.tags["rit"] == "True" for r in main)
    assert all("loss_kd_tar" in r.data.metrics and "loss_rit" in r.data.metrics for r in main)
    rit_only = next(r for r in distilled if r.data.tags.get("variant") == "rit")
    assert rit_only.data.tags["tables"] == "table3" and "loss_kd_tar" not in rit_only.data.metrics

    # caches written next to the sources (bytecode, numba's kernels) are not stage inputs
    cache = ws / "dipkd" / "kd" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "probe.nbi").write_bytes(b"a kernel compiled after the stages ran")
    again = _sh(ws, "dvc", "repro")
    assert "Running stage" not in again

    # Changing only the tau values reruns only their stages and the tables.
    params["ablation"]["tau"] = [0.25]
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = set(json.loads(_sh(ws, "dvc", "status", "--json")))
    assert changed == {"tau@0.25-0", "tables"}, changed
    params["ablation"]["tau"] = [1.0]

    smoke = params["profiles"]["smoke"]
    smoke["schedule"]["retinanet"]["ssdd"]["lr"] = 0.004
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = set(json.loads(_sh(ws, "dvc", "status", "--json")))
    assert changed == {"schedules"}, changed     # the training stages read its files
    _sh(ws, "dvc", "repro", "schedules")
    changed = set(json.loads(_sh(ws, "dvc", "status", "--json")))
    assert changed == {"train_teacher@ssdd-retinanet", "train_student@ssdd-retinanet-0",
                       "distill@ssdd-retinanet-0", "distill_noinherit@ssdd-retinanet-0"}, changed
