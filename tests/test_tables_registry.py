"""The tables by interface (dipkd/reports/tables/): each table names the runs it reads, and
the MLflow ``tables`` tag of every run of the matrix agrees with those lists."""
from pathlib import Path

from dipkd.reports.tables import TABLES, tables_reading

REPO = Path(__file__).resolve().parents[1]


def _matrix_runs(params):
    """Every training run of dvc.yaml's matrix, as RunSpecs (from the stage commands)."""
    from dvc.repo import Repo
    from pipeline._cli import run_of
    from test_stage_paths import _run_args
    with Repo(str(REPO)) as repo:
        commands = [s.cmd for s in repo.index.stages]
    return [run_of(params, _run_args(cmd)) for cmd in commands
            if " pipeline.train " in cmd]


def test_tables_in_order_with_one_interface():
    assert [t.name for t in TABLES] == [*(f"table{n}" for n in range(1, 6)), "compare"]
    for t in TABLES:
        assert callable(t.runs) and callable(t.collect) and callable(t.write)


def test_every_trained_run_is_read_by_a_table(params):
    runs = _matrix_runs(params)
    assert len(runs) >= 30
    for spec in runs:
        assert tables_reading(params, spec), spec.model_path    # none trained for nothing
    by_path = {str(s.model_path): tables_reading(params, s) for s in runs}
    assert by_path["models/student/ssdd-faster_rcnn-seed0.pth"] == ["table1", "table2",
                                                                     "table3", "compare"]
    assert by_path["models/student/ssdd-retinanet-seed0.pth"] == ["table1", "compare"]
    assert by_path["models/distilled/dipkd/ssdd-faster_rcnn-seed0.pth"] == [
        *(f"table{n}" for n in range(1, 6)), "compare"]
    assert by_path["models/distilled/inherit_only/ssdd-faster_rcnn-seed0.pth"] == [
        "table1", "table2", "compare"]
    assert by_path["models/distilled/dipkd-rit/ssdd-faster_rcnn-seed0.pth"] == ["table3"]
    assert by_path["models/distilled/dipkd-tau0.75/ssdd-faster_rcnn-seed0.pth"] == ["table4"]


def test_the_stage_tags_each_run_with_the_tables_that_read_it(params, tmp_path,
                                                               monkeypatch):
    import mlflow

    from dipkd.reports.tables import tag_runs
    from dipkd.tracking.mlflow_runs import ensure_experiment
    monkeypatch.setenv("DIPKD_STORE_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    exp = ensure_experiment("dipkd-repro/smoke")
    client = mlflow.tracking.MlflowClient()
    paths = {"models/student/ssdd-retinanet-seed0.pth": "table1,compare",
             "models/distilled/dipkd-rit/ssdd-faster_rcnn-seed0.pth": "table3",
             "models/elsewhere.pth": None}
    ids = {p: client.create_run(exp, tags={"model_path": p}).info.run_id for p in paths}
    assert tag_runs(params) == 2
    for path, expected in paths.items():
        assert client.get_run(ids[path]).data.tags.get("tables") == expected, path


def test_with_seeds_every_seed_is_read(params):
    params["seeds"] = [0, 1, 2]
    table1 = next(t for t in TABLES if t.name == "table1").runs(params)
    students = [s for s in table1 if s.role == "student"]
    assert sorted({s.seed for s in students}) == [0, 1, 2]
    assert len({s.model_path for s in table1 if s.role == "teacher"}) == len(
        params["datasets"]) * len(params["detectors"])       # one teacher each
