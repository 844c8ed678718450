"""The efficiency table (dipkd/efficiency.py, DVC stage ``efficiency``): parameter counts,
FLOPs scaling, latency statistics, the mAP cells and the md/csv writer, the command line."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dipkd import efficiency as E
from dipkd.config.params import ModelSettings, ParamsError

REPO = Path(__file__).resolve().parents[1]
SMALL = ModelSettings(rpn_nms_pre=200, rpn_proposals=100, rcnn_samples=64)
# Per RoI of the one-class Shared2FCBBoxHead: fc6 (256*7*7 -> 1024), fc7 (1024 -> 1024),
# classifier (1024 -> 2), class-specific regressor (1024 -> 4), multiply-adds.
ROI_FLOPS = 256 * 7 * 7 * 1024 + 1024 * 1024 + 1024 * 2 + 1024 * 4


def _independent(detector, depth):
    """The same detector built without dipkd.efficiency."""
    from mmengine.config import ConfigDict
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from dipkd import mmdet_plugins  # noqa: F401
    from dipkd.models.detectors import detector_cfg
    register_all_modules()
    return MODELS.build(ConfigDict(detector_cfg(detector, depth, False, SMALL, num_classes=1)))


# Measured here: mmdet 3.3 one-class detectors (Faster R-CNN R50 41.35 M, R18 28.28 M;
# RetinaNet R50 36.33 M, R18 19.77 M).
@pytest.mark.parametrize("detector,depth,expected_m", [
    ("faster_rcnn", 50, 41.35), ("faster_rcnn", 18, 28.28),
    ("retinanet", 50, 36.33), ("retinanet", 18, 19.77)])
def test_param_counts(detector, depth, expected_m):
    model = E.build_detector(detector, depth, SMALL)
    n = E.count_params(model)
    assert n == sum(p.numel() for p in _independent(detector, depth).parameters())
    assert n / 1e6 == pytest.approx(expected_m, abs=0.05)


@pytest.fixture(scope="module")
def retina_r18():
    return E.build_detector("retinanet", 18, SMALL)


def test_flops_scale_with_the_input_area(retina_r18):
    small, large = E.count_flops(retina_r18, 128, 96), E.count_flops(retina_r18, 256, 192)
    assert (small["input_w"], small["input_h"]) == (128, 96)
    assert small["rois"] == 0
    assert small["total"] == small["backbone"] + small["neck"] + small["heads"]
    assert min(small["backbone"], small["neck"], small["heads"]) > 0
    # convolutions only: 2x the side = 4x the FLOPs (measured 4.000 backbone, 3.984 total:
    # the stride-64/128 levels of the RetinaNet FPN round up)
    assert large["backbone"] / small["backbone"] == pytest.approx(4.0, rel=0.005)
    assert large["total"] / small["total"] == pytest.approx(4.0, rel=0.02)


def test_flops_pad_to_a_multiple_of_32(retina_r18):
    padded = E.count_flops(retina_r18, 100, 70)
    assert (padded["input_w"], padded["input_h"]) == (128, 96)
    assert padded["total"] == E.count_flops(retina_r18, 128, 96)["total"]
    assert E.padded(1000, 600) == (1024, 608)
    assert E.padded(800, 800) == (800, 800)


def test_faster_rcnn_counts_the_roi_head_on_the_test_time_proposals():
    model = E.build_detector("faster_rcnn", 18, SMALL)
    assert E.rois_per_image(model) == SMALL.rpn_proposals
    small, large = E.count_flops(model, 128, 96), E.count_flops(model, 256, 192)
    roi = SMALL.rpn_proposals * ROI_FLOPS
    assert small["rois"] == large["rois"] == 100
    assert small["heads"] > roi
    # the RoI head costs the same at any size; the rest grows with the area (measured 3.999)
    assert (large["total"] - roi) / (small["total"] - roi) == pytest.approx(4.0, rel=0.01)


def test_summarize_times():
    lat = E.summarize_times([0.010, 0.030, 0.020, 0.040, 0.100])
    assert lat.median_ms == pytest.approx(30.0)
    assert (lat.q1_ms, lat.q3_ms) == (pytest.approx(20.0), pytest.approx(40.0))
    assert lat.iqr_ms == pytest.approx(20.0)
    assert lat.runs == 5
    one = E.summarize_times([0.5])
    assert one.median_ms == one.q1_ms == one.q3_ms == 500.0
    with pytest.raises(ValueError):
        E.summarize_times([])


def test_measure_latency_runs_the_predict_path(retina_r18, monkeypatch):
    calls = []
    real = retina_r18.test_step

    def spy(data):
        calls.append(data["inputs"][0].shape)
        out = real(data)
        assert len(out) == 1 and "pred_instances" in out[0]
        return out
    monkeypatch.setattr(retina_r18, "test_step", spy)
    lat = E.measure_latency(retina_r18, 64, 32, warmup=1, runs=2)
    assert calls == [(3, 32, 64)] * 3
    assert lat.runs == 2 and 0 < lat.q1_ms <= lat.median_ms <= lat.q3_ms


# ------------------------------------------------------------------------ settings (params)

def test_settings_defaults_and_profile_override(params):
    params["efficiency"] = {"scales_from": "paper", "warmup": 3, "runs": 10,
                            "profiles": {"smoke": {"runs": 2}}}
    params["profile"] = "smoke"
    assert E.settings(params) == E.Settings("paper", 3, 2)
    params["profile"] = "mini"
    assert E.settings(params) == E.Settings("paper", 3, 10)
    del params["efficiency"]
    assert E.settings(params) == E.Settings("paper", E.DEFAULT_WARMUP, E.DEFAULT_RUNS)


@pytest.mark.parametrize("section,message", [
    ({"runs": 0}, "efficiency.runs must be an integer >= 1"),
    ({"warmup": -1}, "efficiency.warmup must be an integer >= 0"),
    ({"runs": 2.5}, "efficiency.runs"),
    ({"scales_from": "huge"}, "efficiency.scales_from 'huge' is not a profile"),
    ({"repeat": 3}, "unknown keys repeat"),
    ({"profiles": {"nope": {"runs": 1}}}, "efficiency.profiles.nope: unknown profile"),
    ({"profiles": {"smoke": {"runs": 0}}}, "efficiency.runs must be an integer >= 1")])
def test_settings_errors(params, section, message):
    params["profile"] = "smoke"
    params["efficiency"] = section
    with pytest.raises(ParamsError, match=message):
        E.settings(params)


def test_repository_params_and_stage():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    st = E.settings(params)
    assert st.scales_from == "paper" and st.runs >= 1
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["efficiency"]
    assert stage["cmd"] == "python -m pipeline.efficiency"
    for dep in ("runs/code/pipeline.efficiency.json", "metrics/teacher",
                "metrics/student", "metrics/distilled/dipkd"):
        assert dep in stage["deps"]
    from dipkd.code_deps import manifest
    assert {"dipkd/efficiency.py", "pipeline/efficiency.py"} <= set(manifest(REPO,
                                                                           "pipeline.efficiency"))
    assert "efficiency" in stage["params"]
    assert [next(iter(o)) for o in stage["outs"]] == ["reports/efficiency.md",
                                                      "reports/efficiency.csv"]


# --------------------------------------------------------------------- mAP cells and writer

def _metrics(path: Path, mAP):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": {"mAP": mAP, "AP50": 0.9}}))


def _flops(total):
    return {"total": total, "backbone": total // 2, "neck": total // 4,
            "heads": total - total // 2 - total // 4, "rois": 1000,
            "input_w": 1024, "input_h": 608}


def _rows(params, metrics_dir):
    """Hand-made rows of ssdd/faster_rcnn (teacher, student, DIPKD) as ``collect`` makes
    them, with the mAP cells read from ``metrics_dir``."""
    costs = {"teacher": (50, 41_348_181, 130_000_000_000, 2.0),
             "student": (18, 28_279_381, 100_000_000_000, 1.0)}
    rows = []
    for role in E.ROLES:
        depth, n, fl, sec = costs["student" if role == "dipkd" else role]
        rows.append(E.Row("ssdd", "faster_rcnn", role, depth, n, (1000, 600), _flops(fl),
                          {"cpu": E.summarize_times([sec, sec * 1.1, sec * 0.9])},
                          E.map_cell(params, role, "ssdd", "faster_rcnn", metrics_dir)))
    return rows


def test_map_cells_mean_over_seeds_and_dash_when_missing(params, tmp_path):
    params["seeds"] = [0, 1]
    m = tmp_path / "metrics"
    _metrics(m / "teacher" / "ssdd-faster_rcnn-seed0.json", 0.60)
    _metrics(m / "student" / "ssdd-faster_rcnn-seed0.json", 0.40)
    _metrics(m / "student" / "ssdd-faster_rcnn-seed1.json", 0.50)
    _metrics(m / "distilled" / "dipkd" / "ssdd-faster_rcnn-seed1.json", 0.52)
    cells = {role: E.map_cell(params, role, "ssdd", "faster_rcnn", m) for role in E.ROLES}
    assert cells["teacher"] == E.MapCell(pytest.approx(60.0), 1, 1)
    assert cells["student"] == E.MapCell(pytest.approx(45.0), 2, 2)
    assert cells["dipkd"] == E.MapCell(pytest.approx(52.0), 1, 2)
    missing = E.map_cell(params, "dipkd", "hrsid", "retinanet", m)
    assert missing == E.MapCell(None, 0, 2)
    _metrics(m / "student" / "hrsid-retinanet-seed0.json", None)     # pycocotools' -1
    assert E.map_cell(params, "student", "hrsid", "retinanet", m).mean is None


def test_report_md_and_csv(params, tmp_path):
    params["seeds"] = [0, 1]
    m = tmp_path / "metrics"
    _metrics(m / "student" / "ssdd-faster_rcnn-seed0.json", 0.40)
    _metrics(m / "student" / "ssdd-faster_rcnn-seed1.json", 0.50)
    _metrics(m / "distilled" / "dipkd" / "ssdd-faster_rcnn-seed0.json", 0.51)
    _metrics(m / "distilled" / "dipkd" / "ssdd-faster_rcnn-seed1.json", 0.53)
    rows = _rows(params, m)                     # no teacher metrics file
    st = E.Settings("paper", 1, 3)
    md_path, csv_path = E.write_report(rows, E.header(params, st, rows, ["cpu"]),
                                       tmp_path / "reports")
    assert not list((tmp_path / "reports").glob("*.tmp"))

    table = [line for line in md_path.read_text().splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    assert cells[0] == list(E.MD_COLUMNS)
    assert all(len(c) == len(E.MD_COLUMNS) for c in cells)
    body = {c[2]: dict(zip(E.MD_COLUMNS, c)) for c in cells[2:]}
    assert list(body) == ["teacher", "student", "DIPKD student"]
    assert body["teacher"]["mAP (%)"] == "-"
    assert body["student"]["mAP (%)"] == "45.0"
    assert body["DIPKD student"]["mAP (%)"] == "52.0"
    assert body["teacher"]["Params (M)"] == "41.3"
    assert body["student"]["Params (M)"] == "28.3 (0.68×)"
    assert body["student"]["FLOPs (G)"] == "100.0 (0.77×)"
    assert body["student"]["CPU ms/img"] == "1000 (IQR 100) (0.50×)"
    assert body["teacher"]["GPU ms/img"] == "-"
    assert body["DIPKD student"]["Input (w×h)"] == "1000×600"
    text = md_path.read_text()
    assert "median of 3 timed runs after 1 warm-up run," in text
    assert "1000 RoIs" in text and "torch threads" in text

    lines = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert tuple(lines[0]) == E.CSV_COLUMNS
    by_model = {line["model"]: line for line in lines}
    assert by_model["teacher"]["mAP"] == "" and by_model["teacher"]["map_seeds"] == "0"
    assert float(by_model["dipkd"]["mAP"]) == pytest.approx(52.0)
    assert by_model["dipkd"]["map_seeds"] == by_model["dipkd"]["map_seeds_expected"] == "2"
    assert float(by_model["student"]["params_m"]) == pytest.approx(28.279, abs=1e-3)
    assert float(by_model["teacher"]["flops_g"]) == pytest.approx(130.0)
    assert float(by_model["student"]["cpu_ms"]) == pytest.approx(1000.0)
    assert (by_model["student"]["input_w"], by_model["student"]["scale_w"]) == ("1024", "1000")
    assert by_model["student"]["gpu_ms"] == ""


def test_partial_seeds_are_marked(params, tmp_path):
    params["seeds"] = [0, 1, 2]
    m = tmp_path / "metrics"
    _metrics(m / "distilled" / "dipkd" / "ssdd-faster_rcnn-seed2.json", 0.5)
    rows = _rows(params, m)
    assert "50.0 (1/3 seeds)" in E.markdown_table(rows)


# ----------------------------------------------------------------------------- command line

def test_help_exits_0():
    out = subprocess.run([sys.executable, "-m", "dipkd.efficiency", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for option in ("--runs", "--warmup", "--device", "--params", "--out-dir"):
        assert option in out.stdout


def test_main_one_line_error(params, write_params, tmp_path, capsys):
    params["efficiency"] = {"runs": 0}
    params["profile"] = "mini"
    assert E.main(["--params", str(write_params(params)), "--out-dir",
                   str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "efficiency.runs" in err and "\n" not in err
    assert not (tmp_path / "r").exists()
    assert E.main(["--params", str(tmp_path / "none.yaml"), "--out-dir",
                   str(tmp_path / "r")]) == 2
    assert "params file not found" in capsys.readouterr().err
    del params["efficiency"]
    good = str(write_params(params))
    out = ["--out-dir", str(tmp_path / "r")]
    assert E.main(["--params", good, *out, "--datasets", "mars", "--device", "none"]) == 2
    assert "unknown dataset 'mars'" in capsys.readouterr().err
    assert E.main(["--params", good, *out, "--threads", "0"]) == 2
    assert E.main(["--params", good, *out, "--runs", "0", "--device", "none"]) == 2
    assert "--runs must be an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_main_params_and_flops_only(params, write_params, tmp_path):
    """The command end to end without latency, on the smoke scales (cheap): one detector."""
    params["efficiency"] = {"scales_from": "smoke"}
    path = write_params(params)
    assert E.main(["--params", str(path), "--out-dir", str(tmp_path / "r"), "--metrics-dir",
                   str(tmp_path / "m"), "--device", "none", "--datasets", "ssdd",
                   "--detectors", "retinanet"]) == 0
    lines = list(csv.DictReader(io.StringIO((tmp_path / "r" / "efficiency.csv").read_text())))
    assert [line["model"] for line in lines] == list(E.ROLES)
    assert {line["scale_w"] + "x" + line["scale_h"] for line in lines} == {"160x112"}
    assert float(lines[0]["params_m"]) == pytest.approx(36.33, abs=0.05)
    assert float(lines[1]["params_m"]) == pytest.approx(19.77, abs=0.05)
    assert lines[1]["flops_g"] == lines[2]["flops_g"]
    assert float(lines[0]["flops_g"]) > float(lines[1]["flops_g"]) > 0
    assert all(line["mAP"] == "" and line["cpu_ms"] == "" for line in lines)


@pytest.mark.slow
def test_stage_script_with_latency(params, write_params, tmp_path, monkeypatch):
    """``python -m pipeline.efficiency`` in a workspace: every dataset and detector of the
    smoke scales with one timed CPU run each, mAP from a hand-made metrics file."""
    params["efficiency"] = {"scales_from": "smoke", "warmup": 0, "runs": 1}
    write_params(params)
    _metrics(tmp_path / "metrics" / "student" / "hrsid-retinanet-seed0.json", 0.25)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DVC_ROOT", None)
    out = subprocess.run([sys.executable, "-m", "pipeline.efficiency", "--device", "cpu"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = list(csv.DictReader(io.StringIO((tmp_path / "reports" / "efficiency.csv")
                                            .read_text())))
    assert len(lines) == len(params["datasets"]) * len(params["detectors"]) * 3
    assert all(float(line["cpu_ms"]) > 0 and line["latency_runs"] == "1" for line in lines)
    got = {(line["dataset"], line["detector"], line["model"]): line["mAP"] for line in lines}
    assert float(got[("hrsid", "retinanet", "student")]) == pytest.approx(25.0)
    assert got[("hrsid", "retinanet", "teacher")] == ""
    assert "| hrsid | RetinaNet | student | R18 |" in (tmp_path / "reports" /
                                                       "efficiency.md").read_text()
