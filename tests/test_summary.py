"""metrics/summary.json and the comparison plots' data (dipkd.reports.summary,
dipkd.reports.compare_plots), from hand-made table rows and curves."""
import json
import shutil
import subprocess
from pathlib import Path

from dipkd.evaluation.bootstrap import Delta
from dipkd.reports.compare_plots import table2_bars, val_map_overlay
from dipkd.reports.render import Row
from dipkd.reports.summary import summarize

REPO = Path(__file__).resolve().parents[1]


def _t1(model, seeds, delta=None, ds="SSDD", det="Faster R-CNN"):
    return Row(labels={"Dataset": ds, "Detector": det, "Model": model},
               seeds={"mAP": seeds}, delta={"mAP": delta} if delta else {})


def _t2(method, ssdd, hrsid):
    return Row(labels={"Method": method, "Ref": ""},
               seeds={"SSDD mAP": ssdd, "HRSID mAP": hrsid})


def test_summary_leads_with_dipkd_delta_and_the_best_table2_method(params):
    params.update(datasets=["ssdd"], detectors=["faster_rcnn"])
    rows1 = [_t1("ResNet50(tea)", [90.0]), _t1("ResNet18(stu)", [50.0, 52.0]),
             _t1("ours: ResNet18 + DIPKD", [55.0, 56.0], Delta(4.5, 1.25, 7.75)),
             _t1("ours: ResNet18 + DIPKD without inheritance", [49.0, 50.0])]
    params["datasets"] = ["ssdd", "hrsid"]
    rows2 = [_t2("Student", [50.0, 52.0], [40.0]), _t2("Inherit-only*", [70.0], [60.0]),
             _t2("FGD*", [58.0], [44.0]), _t2("DIPKD", [55.0, 56.0], [45.0]),
             _t2("MGD", [None], [None])]
    out = summarize(params, rows1, rows2)
    assert out["dipkd"] == {"ssdd-faster_rcnn": {
        "mAP": 55.5, "student_mAP": 51.0, "delta_mAP": 4.5, "delta_mAP_ci_low": 1.25,
        "delta_mAP_ci_high": 7.75}}
    # FGD: (58 + 44) / 2 = 51 > DIPKD (55.5 + 45) / 2 = 50.25; MGD has no values; the
    # inherit-only control is no method, ranked with none
    assert out["table2"] == {"best_method": "FGD", "best_mAP": 51.0, "dipkd_rank": 2,
                             "methods": 2}


def test_val_map_overlay_is_the_seed_mean_per_method_and_epoch(params, tmp_path):
    params.update(seeds=[0, 1], baselines=["fgd"], datasets=["ssdd"],
                  baseline_detector="faster_rcnn")
    curves = {"student": [[0.1, 0.3], [0.2, 0.5]], "distilled/fgd": [[0.2, None], [0.4, None]],
              "distilled/dipkd": None}
    for group, per_seed in curves.items():
        if per_seed is None:
            continue   # a method not trained yet is left out
        for seed, values in enumerate(per_seed):
            path = tmp_path / "plots" / group / f"ssdd-faster_rcnn-seed{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps([{"epoch": e + 1, "loss": 1.0, "mAP": v}
                                        for e, v in enumerate(values)]))
    rows = val_map_overlay(params, tmp_path)
    assert rows == [{"epoch": 1, "method": "Student", "mAP": 15.0},
                    {"epoch": 2, "method": "Student", "mAP": 40.0},
                    {"epoch": 1, "method": "FGD", "mAP": 30.0}]


def test_table2_bars_average_the_datasets(params):
    params["datasets"] = ["ssdd", "hrsid"]
    bars = table2_bars(params, [_t2("Student", [50.0], [40.0]), _t2("TWA**", [60.0], [None])])
    assert bars == [{"method": "Student", "mAP": 45.0}]


def test_dvc_renders_the_comparison_plots(tmp_path):
    """dvc.yaml's plot definitions with the custom template: one colour per method."""
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO / ".dvc", tmp_path / ".dvc",
                    ignore=shutil.ignore_patterns("tmp", "cache", "config.local"))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "reports/plots").mkdir(parents=True)
    (tmp_path / "reports/plots/val_mAP.json").write_text(json.dumps(
        [{"epoch": 1, "method": "Student", "mAP": 10.0},
         {"epoch": 1, "method": "DIPKD", "mAP": 12.0}]))
    (tmp_path / "reports/plots/table2.json").write_text(json.dumps(
        [{"method": "Student", "mAP": 10.0}, {"method": "DIPKD", "mAP": 12.0}]))
    out = subprocess.run(["dvc", "plots", "show", "--json"], cwd=tmp_path,
                         capture_output=True, text=True)   # exit 1: no training curves here
    data = json.loads(out.stdout[out.stdout.index("{"):])["data"]
    line = data["reports/plots/val_mAP.json"][0]["content"]
    assert line["encoding"]["color"]["field"] == "method"
    assert {v["method"] for v in line["data"]["values"]} == {"Student", "DIPKD"}
    bars = data["reports/plots/table2.json"][0]["content"]
    assert bars["encoding"]["y"]["field"] == "method"
