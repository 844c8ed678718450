import pytest

from dipkd.config.params import ParamsError, load_params, run_spec, validate


def test_repository_params_are_valid(params):
    validate(params)
    assert params["profile"] == "smoke"


@pytest.mark.parametrize("key,value,expected", [
    ("profile", "huge", "unknown profile 'huge'; valid: smoke, mini, paper"),
    ("datasets", ["ssdd", "dota"], "unknown dataset 'dota'; valid: ssdd, hrsid"),
    ("detectors", ["yolo"], "unknown detector 'yolo'; valid: faster_rcnn, retinanet"),
])
def test_unknown_names_list_the_valid_ones(params, key, value, expected):
    params[key] = value
    with pytest.raises(ParamsError) as err:
        validate(params)
    assert str(err.value) == expected


def test_unknown_source_and_missing_schedule(params):
    bad = dict(params, data={**params["data"], "ssdd": {"source": "s3"}})
    with pytest.raises(ParamsError, match="unknown data source for ssdd 's3'; valid: synthetic"):
        validate(bad)
    del params["profiles"]["smoke"]["schedule"]["retinanet"]["hrsid"]
    with pytest.raises(ParamsError, match=r"profiles.smoke.schedule.retinanet lacks hrsid"):
        validate(params)


def test_load_params_errors_are_one_line(tmp_path, write_params, params):
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "broken.yaml").write_text("a: [1,\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "broken.yaml")
    params["profile"] = "paperx"
    with pytest.raises(ParamsError) as err:
        load_params(write_params(params))
    assert "\n" not in str(err.value)


def test_run_spec_resolves_profile_and_role(params):
    params["profile"] = "paper"
    spec = run_spec(params, "teacher", "hrsid", "retinanet")
    assert spec.depth == 50 and spec.key == "hrsid-retinanet"
    assert spec.schedule == {"epochs": 24, "lr": 0.001, "scale": [800, 800]}
    assert str(spec.model_path) == "models/teacher/hrsid-retinanet.pth"
    assert str(spec.metrics_path) == "metrics/teacher/hrsid-retinanet.json"
    student = run_spec(params, "student", "ssdd", "faster_rcnn")
    assert student.depth == 18 and student.schedule["lr"] == 0.02
    assert student.schedule["scale"] == [1000, 600]
    flat = student.tracked_params()
    assert flat["schedule.epochs"] == 24 and flat["backbone_depth"] == 18
    assert flat["data.preset"] == "ssdd-like"
    with pytest.raises(ParamsError, match="unknown role 'teaching'; valid: teacher, student"):
        run_spec(params, "teaching", "ssdd", "faster_rcnn")


def test_baselines_must_name_methods_and_a_pipeline_detector(params):
    params["baselines"] = ["fgd", "kd2000"]
    with pytest.raises(ParamsError, match="unknown baseline method 'kd2000'; valid: fitnet"):
        validate(params)
    params["baselines"] = ["fgd"]
    params["detectors"] = ["retinanet"]
    with pytest.raises(ParamsError, match="unknown baseline_detector 'faster_rcnn'"):
        validate(params)
