import dataclasses
import re
from pathlib import Path

import pytest

from dipkd.config.params import ParamsError, Schedule, load_params, run_spec, validate


def test_repository_params_are_valid(params):
    validate(params)
    assert params["profile"] == "smoke"


@pytest.mark.parametrize("key,value,expected", [
    ("profile", "huge", "unknown profile 'huge'; valid: paper, smoke, mini, study"),
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


@pytest.mark.parametrize("milestones", [[], [20, 16], [16, 16], [0, 8], [8, 30], [8.5],
                                        [True], "16,20"])
def test_schedule_milestones_must_be_increasing_epochs(params, milestones):
    params["profiles"]["smoke"]["schedule"]["faster_rcnn"]["ssdd"].update(
        epochs=24, milestones=milestones)
    with pytest.raises(ParamsError) as err:
        validate(params)
    assert str(err.value) == (
        "params.yaml: profiles.smoke.schedule.faster_rcnn.ssdd.milestones must be a list of "
        f"increasing positive epochs <= epochs (24), got {milestones!r}")
    params["profiles"]["smoke"]["schedule"]["faster_rcnn"]["ssdd"]["milestones"] = [16, 24]
    validate(params)


def test_teacher_schedule_overrides_only_the_teachers_run(params):
    entry = params["profiles"]["smoke"]["schedule"]["faster_rcnn"]["ssdd"]
    entry.update(epochs=4, lr=0.02, milestones=[3], teacher={"epochs": 12})
    teacher = run_spec(params, "teacher", "ssdd", "faster_rcnn").schedule
    student = run_spec(params, "student", "ssdd", "faster_rcnn").schedule
    scale = tuple(entry["scale"])
    assert student == Schedule(epochs=4, lr=0.02, scale=scale, milestones=(3,))
    # the student's steps do not carry over to other epochs: the teacher gets the 1x rule
    assert teacher == Schedule(epochs=12, lr=0.02, scale=scale)
    entry["teacher"] = {"epochs": 12, "lr": 0.01, "milestones": [8, 11]}
    assert run_spec(params, "teacher", "ssdd", "faster_rcnn").schedule == Schedule(
        epochs=12, lr=0.01, scale=scale, milestones=(8, 11))


@pytest.mark.parametrize("teacher,expected", [
    ({"scale": [64, 64]}, "must be a mapping of epochs, lr, milestones, got {'scale': [64, 64]}"),
    ([12], "must be a mapping of epochs, lr, milestones, got [12]"),
    ({"epochs": 0}, "epochs must be a positive int, got 0"),
    ({"epochs": 12, "milestones": [13]}, "milestones must be a list of increasing positive "
                                         "epochs <= epochs (12), got [13]")])
def test_teacher_schedule_is_checked(params, teacher, expected):
    params["profiles"]["smoke"]["schedule"]["faster_rcnn"]["ssdd"]["teacher"] = teacher
    with pytest.raises(ParamsError) as err:
        validate(params)
    assert str(err.value) == (
        f"params.yaml: profiles.smoke.schedule.faster_rcnn.ssdd.teacher.{expected}"
        if "mapping" not in expected else
        f"params.yaml: profiles.smoke.schedule.faster_rcnn.ssdd.teacher {expected}")


@pytest.mark.parametrize("clip", [0, -1, True, "10"])
def test_clip_grad_must_be_a_positive_norm(params, clip):
    params["profiles"]["smoke"]["train"]["clip_grad"] = clip
    with pytest.raises(ParamsError, match=r"profiles\.smoke\.train\.clip_grad must be a "
                                          r"positive number"):
        validate(params)
    params["profiles"]["smoke"]["train"]["clip_grad"] = None
    validate(params)


def test_paper_profile_milestones_are_the_authors(params):
    sched = params["profiles"]["paper"]["schedule"]
    assert sched["faster_rcnn"]["ssdd"]["milestones"] == [16, 20]
    assert sched["faster_rcnn"]["hrsid"]["milestones"] == [16, 20]
    assert sched["retinanet"]["ssdd"]["milestones"] == [16, 20, 24]
    assert sched["retinanet"]["hrsid"]["milestones"] == [16, 20]
    params["profile"] = "paper"
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
    assert spec.schedule == Schedule(epochs=24, lr=0.001, scale=(800, 800), milestones=(16, 20))
    assert str(spec.model_path) == "models/teacher/hrsid-retinanet-seed0.pth"
    assert str(spec.metrics_path) == "metrics/teacher/hrsid-retinanet-seed0.json"
    student = run_spec(params, "student", "ssdd", "faster_rcnn")
    assert student.depth == 18 and student.schedule.lr == 0.02
    assert student.schedule.scale == (1000, 600) and student.train.batch_size == 8
    flat = student.tracked_params()
    assert flat["schedule.epochs"] == 24 and flat["backbone_depth"] == 18
    assert flat["schedule.scale"] == [1000, 600] and "train.clip_grad" not in flat
    assert flat["data.preset"] == "ssdd-like"
    with pytest.raises(ParamsError, match="unknown role 'teaching'; valid: teacher, student"):
        run_spec(params, "teaching", "ssdd", "faster_rcnn")


def test_baselines_must_name_methods_and_a_pipeline_detector(params):
    params["baselines"] = ["fgd", "kd2000"]
    with pytest.raises(ParamsError, match="unknown baseline method 'kd2000'; valid: inherit_only, fitnet"):
        validate(params)
    params["baselines"] = ["fgd"]
    params["detectors"] = ["retinanet"]
    with pytest.raises(ParamsError, match="unknown baseline_detector 'faster_rcnn'"):
        validate(params)


@pytest.mark.parametrize("seeds", [[], [0, 0], "0", [-1], [True]])
def test_seeds_must_be_distinct_non_negative_ints(params, seeds):
    params["seeds"] = seeds
    with pytest.raises(ParamsError, match="seeds must be a non-empty list"):
        validate(params)


@pytest.mark.parametrize("key,value,expected", [
    ("modules", ["sns", "sns_kld_rit"], "lists 'sns_kld_rit', which is the DIPKD run"),
    ("modules", ["none"], "lists 'none', which is the student"),
    ("modules", ["rit_sns"], "ablation.modules entry 'rit_sns': expected 'none' or modules"),
    ("modules", ["sns", "sns"], "ablation.modules has duplicates"),
    ("tau", [0.25, 0.5], "ablation.tau lists 0.5, the DIPKD default"),
    ("mask_rate", [1.5], "ablation.mask_rate value 1.5 not in"),
    ("dataset", "dota", "unknown ablation dataset 'dota'"),
])
def test_ablation_lists_are_checked(params, key, value, expected):
    params["ablation"][key] = value
    with pytest.raises(ParamsError, match=expected):
        validate(params)


def test_compute_gpus_must_be_a_count(params):
    params["compute"] = {"gpus": -1}
    with pytest.raises(ParamsError, match="compute.gpus must be a non-negative integer"):
        validate(params)


def test_seeded_and_variant_run_paths(params):
    from dipkd.config.params import distill_spec, parse_modules
    params["seeds"] = [0, 3]
    assert str(run_spec(params, "teacher", "ssdd", "retinanet").model_path) == \
        "models/teacher/ssdd-retinanet-seed0.pth"
    with pytest.raises(ParamsError, match="unknown teacher seed 5; valid: 0"):
        run_spec(params, "teacher", "ssdd", "retinanet", 5)   # one teacher: teacher_seed
    with pytest.raises(ParamsError, match="unknown seed 5; valid: 0, 3"):
        run_spec(params, "student", "ssdd", "retinanet", 5)
    spec = distill_spec(params, "dipkd", "ssdd", "faster_rcnn", 3, parse_modules("sns_rit"))
    assert spec.variant == "sns_rit" and spec.method_params["kld"] is False
    assert str(spec.metrics_path) == "metrics/distilled/dipkd-sns_rit/ssdd-faster_rcnn-seed3.json"
    tau = distill_spec(params, "dipkd", "ssdd", "faster_rcnn", 0, {"tau": "1.0"})
    assert tau.method_params["tau"] == 1.0 and str(tau.group) == "distilled/dipkd-tau1.0"
    with pytest.raises(ParamsError, match="dipkd.tau: expected a number"):
        distill_spec(params, "dipkd", "ssdd", "faster_rcnn", 0, {"tau": "hot"})
    with pytest.raises(ParamsError, match="unknown dipkd parameter 'tay'"):
        distill_spec(params, "dipkd", "ssdd", "faster_rcnn", 0, {"tay": "1"})


def test_profiles_inherit_the_papers_train_settings_and_dvc_sees_it(tmp_path):
    """params.yaml's CPU profiles state only what differs from the paper's `train`
    (`<<: *paper_train`); the loaded values are merged, and DVC's params dependency on a
    derived profile changes when an inherited value of the base changes."""
    import shutil
    import subprocess

    import yaml
    root = Path(__file__).resolve().parents[1]
    text = (root / "params.yaml").read_text()
    assert "<<: *paper_train" in text
    params = yaml.safe_load(text)
    paper = params["profiles"]["paper"]["train"]
    for name in ("smoke", "mini", "study"):
        train = params["profiles"][name]["train"]
        assert (train["momentum"], train["weight_decay"]) == (paper["momentum"],
                                                              paper["weight_decay"])
    assert params["profiles"]["smoke"]["train"]["batch_size"] != paper["batch_size"]

    dvc = shutil.which("dvc")
    if dvc is None:
        pytest.skip("dvc not on PATH")
    shutil.copy(root / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  s:\n    cmd: echo ${profiles.smoke.train.momentum} > out.txt\n"
        "    params:\n      - profiles.smoke.train\n    outs:\n      - out.txt\n")
    run = lambda *a: subprocess.run([dvc, *a], cwd=tmp_path, capture_output=True,  # noqa: E731
                                    text=True, check=True).stdout
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    run("init", "-q")
    run("repro", "-q")
    assert "Data and pipelines are up to date" in run("status")
    (tmp_path / "params.yaml").write_text(text.replace(
        f"momentum: {paper['momentum']}", "momentum: 0.8", 1))
    assert "profiles.smoke.train" in run("status")
    run("repro", "-q")
    assert (tmp_path / "out.txt").read_text().strip() == "0.8"


def test_config_is_the_lowest_layer():
    """dipkd.config imports no framework and no project module above it: only the
    plain-data registries of detectors and data sources (a fresh interpreter)."""
    import subprocess
    import sys
    check = ("import sys, dipkd.config.params\n"
             "mods = sorted(m for m in sys.modules if m.startswith('dipkd'))\n"
             "heavy = [m for m in ('torch', 'mmdet', 'mmengine', 'mlflow') if m in sys.modules]\n"
             "print(mods, heavy)\n"
             "allowed = ('dipkd.config', 'dipkd.datasets', 'dipkd.models', 'dipkd.plugins')\n"
             "assert not heavy and all(m == 'dipkd' or m.startswith(allowed) for m in mods)\n")
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("section, key, value, message", [
    ("train", "batch_size", "8", "train.batch_size must be an integer, got '8'"),
    ("train", "pretrained", 1, "train.pretrained must be true or false, got 1"),
    ("train", "momentum", True, "train.momentum must be a number, got True"),
    ("train", "batchsize", 4, "train has unknown key(s) batchsize; valid: batch_size"),
    ("model", "rpn_proposals", 1.5, "model.rpn_proposals must be an integer, got 1.5"),
])
def test_profile_sections_are_typed_at_the_boundary(params, section, key, value, message):
    """A profile's train/model/schedule sections are parsed once into frozen dataclasses:
    a wrong type or an unknown key is a one-line error naming it."""
    params["profiles"][params["profile"]][section][key] = value
    with pytest.raises(ParamsError, match=re.escape(message)):
        validate(params)


def test_schedule_scale_must_be_two_integers(params):
    entry = params["profiles"][params["profile"]]["schedule"]["faster_rcnn"]["ssdd"]
    entry["scale"] = [160]
    with pytest.raises(ParamsError, match=r"scale must be \[w, h\] integers, got \[160\]"):
        validate(params)
    for bad in ({"scale": [160, 0]}, {"epochs": 0}, {"lr": 0.0}):
        entry.update({"scale": [160, 112], "epochs": 2, "lr": 0.01, **bad})
        with pytest.raises(ParamsError, match="needs epochs >= 1, lr > 0 and a positive"):
            validate(params)
    entry.update(scale=[160, 112], epochs=2, lr=0.01)
    spec = run_spec(params, "student", "ssdd", "faster_rcnn")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.train.batch_size = 3


@pytest.mark.parametrize("key", ["checkpoint_interval", "kd_probe_interval", "val_interval"])
def test_intervals_must_be_positive(params, key):
    from dipkd.config.params import ParamsError, validate
    params["profiles"][params["profile"]]["train"][key] = 0
    with pytest.raises(ParamsError, match=f"train.{key} must be a positive number"):
        validate(params)
