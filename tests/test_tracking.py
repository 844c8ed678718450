"""MLflow tags and store location (no training needed)."""
from dipkd.config.params import distill_spec, run_spec
from dipkd.tracking.mlflow_runs import local_store_uri, run_tags, tracking_uri


def test_tags_name_the_run_and_its_tables(params, monkeypatch):
    monkeypatch.setenv("DVC_STAGE", "train_teacher@ssdd-faster_rcnn")
    tags = run_tags(run_spec(params, "teacher", "ssdd", "faster_rcnn"), sns=True)
    assert {k: tags[k] for k in ("dataset", "detector", "role", "method", "profile", "seed",
                                 "dvc_stage", "tables", "sns")} == {
        "dataset": "ssdd", "detector": "faster_rcnn", "role": "teacher", "method": "none",
        "profile": "smoke", "seed": "0", "dvc_stage": "train_teacher@ssdd-faster_rcnn",
        "tables": "table1", "sns": "True"}
    assert run_tags(run_spec(params, "student", "ssdd", "retinanet"))["tables"] == \
        "table1,table2,table3"
    assert run_tags(distill_spec(params, "dipkd", "ssdd", "retinanet"))["tables"] == \
        "table1,table2,table3,table4,table5"
    assert run_tags(distill_spec(params, "fgd", "hrsid", "faster_rcnn"))["tables"] == "table2"
    for overrides, tables in (({"sns": True, "kld": False, "rit": True}, "table3"),
                              ({"tau": 0.75}, "table4"), ({"mask_rate": 1.0}, "table5")):
        spec = distill_spec(params, "dipkd", "ssdd", "faster_rcnn", 0, overrides)
        assert run_tags(spec)["tables"] == tables, overrides


def test_store_is_at_dvc_root_unless_a_server_is_set(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking_uri() == local_store_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"
