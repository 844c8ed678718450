"""The paper tables from metrics files: rows, seeds (mean +- std), the paper's values and the
difference, bold best values, and no table from a run that did not happen."""
import json

import pandas as pd
import pytest

from dipkd.reports.tables import sensitivity, table1, table2, table3
from dipkd.reports.common import header
from dipkd.reports.render import Row, write_table

NAMES = ("mAP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "mAR", "ARs", "ARm", "ARl")


GT = {"images": [{"id": i, "width": 64, "height": 64, "file_name": f"{i}.png"}
                  for i in (1, 2, 3)],
      "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [10, 10, 20, 20],
                       "area": 400, "iscrowd": 0} for i in (1, 2, 3)],
      "categories": [{"id": 1, "name": "ship"}]}


def _write(root, group, key, values, seed=0, hits=3):
    """A run's metrics file and its detections (the first ``hits`` GT ships found)."""
    path = root / "metrics" / group / f"{key}-seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not isinstance(values, dict):
        values = dict(zip(NAMES, values))
    path.write_text(json.dumps({"metrics": values}))
    gt = root / "data" / key.split("-")[0] / "annotations" / "test.json"
    gt.parent.mkdir(parents=True, exist_ok=True)
    gt.write_text(json.dumps(GT))
    dets = root / "detections" / group / f"{key}-seed{seed}.json"
    dets.parent.mkdir(parents=True, exist_ok=True)
    dets.write_text(json.dumps([{"image_id": i, "category_id": 1, "bbox": [10, 10, 20, 20],
                                 "score": 0.9} for i in (1, 2, 3)[:hits]]))


def test_render_mean_std_paper_diff_and_bold(tmp_path):
    rows = [Row({"Model": "a"}, {"mAP": [50.0, 52.0]}, {"mAP": 50.0}),
            Row({"Model": "b*"}, {"mAP": [40.0, None]}, {}),
            Row({"Model": "c**"}, {"mAP": [None]}, {"mAP": 45.0})]
    write_table("t", "Title", "head line", rows, ["mAP"], notes=["\\* note"], out_dir=tmp_path)
    md = (tmp_path / "t.md").read_text()
    # a: mean 51, sample std sqrt(2) = 1.4; paper 50 -> diff +1.0; best of the column: bold
    assert "**51.0 ± 1.4**" in md and "+1.0" in md
    assert "| b*" in md and "40.0" in md and "**40.0" not in md   # b's missing seed ignored
    lines = md.splitlines()
    c = lines.index(next(line for line in lines if line.startswith("| c**")))
    assert lines[c].split("|")[3].strip() == "-"                   # no value: a dash
    assert lines[c + 1].split("|")[3].strip() == "45.0"            # the paper's value
    assert lines[c + 2].split("|")[3].strip() == "-"               # no difference
    tex = (tmp_path / "t.tex").read_text()
    assert "\\textbf{51.0 $\\pm$ 1.4}" in tex and "b$^{*}$" in tex and "\\toprule" in tex
    assert "c$^{**}$" in tex
    csv = pd.read_csv(tmp_path / "t.csv")
    assert list(csv.columns) == ["Model", "n_seeds", "mAP", "mAP_std", "mAP_paper", "mAP_diff"]
    assert csv.loc[0, "mAP"] == 51.0 and csv.loc[0, "mAP_diff"] == 1.0
    assert csv.loc[0, "mAP_std"] == pytest.approx(1.41)


def test_table1_from_metrics_files_with_paper_values(tmp_path, params):
    params["datasets"], params["detectors"] = ["ssdd"], ["faster_rcnn"]
    _write(tmp_path, "teacher", "ssdd-faster_rcnn", [0.589, 0.945, 0.656, 0.539, 0.663, None,
                                                     0.1, 0.2, 0.643, 0.607, 0.711, 0.605])
    _write(tmp_path, "student", "ssdd-faster_rcnn", [0.574] * 12)
    _write(tmp_path, "distilled/dipkd", "ssdd-faster_rcnn", [0.602] * 12)
    _write(tmp_path, "distilled/dipkd-inheritfalse", "ssdd-faster_rcnn", [0.58] * 12)
    _write(tmp_path, "distilled/inherit_only", "ssdd-faster_rcnn", [0.59] * 12)
    rows = table1.collect(params, metrics_dir=tmp_path / "metrics")
    assert [r.labels["Model"] for r in rows] == ["ResNet50(tea)", "ResNet18(stu)",
                                                 "ours: ResNet18 + DIPKD",
                                                 "ours: ResNet18 + DIPKD without inheritance",
                                                 "ResNet18 + teacher init, no KD"]
    assert rows[3].paper == {} and set(rows[2].delta) == {"mAP"} and not rows[1].delta
    assert rows[2].delta["mAP"].delta == 0.0      # identical detections: no difference
    assert rows[2].stats("mAP")[0] == pytest.approx(60.2)
    assert rows[0].paper["mAP"] == 58.9 and rows[0].stats("APl") == (None, None)
    summary = tmp_path / "metrics/data/ssdd.json"
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"metrics": {"train": {"images": 12}}}))
    head = header(params, "0123456789abcdef", tmp_path / "metrics")
    assert "faster_rcnn/ssdd 2 ep (~12 it: 12 train images, batch 2)" in head
    table1.write_table1(rows, head, tmp_path / "reports" / "tables")
    md = (tmp_path / "reports" / "tables" / "table1.md").read_text()
    assert "Profile `smoke`" in md and "commit `0123456789ab`" in md and "only prove" in md
    assert "seed 0 (one run per cell)" in md
    assert "| SSDD" in md and "AR1" not in md  # ten metric columns
    csv = pd.read_csv(tmp_path / "reports" / "tables" / "table1.csv")
    assert csv.shape == (5, 3 + 1 + 4 * 10 + 3)   # + mAP_delta, _ci_low, _ci_high
    assert csv.loc[2, "mAP_delta"] == 0.0 and pd.isna(csv.loc[1, "mAP_delta"])
    assert "Δ mAP vs student [95% CI]" in md and "paired bootstrap" in md
    assert csv.loc[0, "mAP_diff"] == 0.0 and csv.loc[1, "mAP_paper"] == 57.4
    assert (tmp_path / "reports" / "tables" / "table1.tex").is_file()


def test_seeds_average_and_header(tmp_path, params):
    params["datasets"], params["detectors"], params["seeds"] = ["ssdd"], ["retinanet"], [0, 1]
    _write(tmp_path, "teacher", "ssdd-retinanet", [0.5] * 12, seed=0)   # one teacher
    for role, base in (("student", 0.4), ("distilled/dipkd", 0.45),
                       ("distilled/dipkd-inheritfalse", 0.42)):
        _write(tmp_path, role, "ssdd-retinanet", [base] * 12, seed=0)
        _write(tmp_path, role, "ssdd-retinanet", [base + 0.02] * 12, seed=1, hits=2)
    rows = table1.collect(params, metrics_dir=tmp_path / "metrics")
    mean, std = rows[1].stats("mAP")
    assert mean == pytest.approx(41.0) and std == pytest.approx(2 ** 0.5)
    assert rows[0].seeds["mAP"] == [50.0]                      # the teacher: one run
    assert "2 seeds [0, 1] (cells: mean ± sample std)" in header(params, "abc")
    assert "one teacher per dataset and detector (teacher seed 0)" in header(params, "abc")
    (tmp_path / "metrics/student/ssdd-retinanet-seed1.json").unlink()
    with pytest.raises(FileNotFoundError, match="student ssdd-retinanet-seed1"):
        table1.collect(params, metrics_dir=tmp_path / "metrics")


def test_table2_rows_order_bold_and_footnote(tmp_path, params):
    values = {"student": (0.574, 0.924), "distilled/fitnet": (0.570, 0.942),
              "distilled/defeat": (0.577, 0.928), "distilled/fgd": (0.565, 0.935),
              "distilled/mgd": (0.581, 0.933), "distilled/dipkd": (0.602, 0.953)}
    params["baselines"] = ["fitnet", "defeat", "fgd", "mgd"]
    for group, (a, b) in values.items():
        for ds in ("ssdd", "hrsid"):
            _write(tmp_path, group, f"{ds}-faster_rcnn",
                   {"mAP": a, "AP50": b - (0.1 if ds == "hrsid" else 0)})
    _write(tmp_path, "distilled/fitnet", "hrsid-faster_rcnn", {"mAP": 0.700, "AP50": 0.5})
    rows = table2.collect(params, metrics_dir=tmp_path / "metrics")
    assert [r.labels["Method"] for r in rows] == ["Student", "FitNet", "DeFeat*", "FGD", "MGD",
                                                  "DIPKD"]
    assert rows[3].paper == {"SSDD mAP": 56.5, "SSDD AP50": 93.5, "HRSID mAP": 57.1,
                             "HRSID AP50": 76.9}
    table2.write_table2(rows, "header line", params, tmp_path / "reports" / "tables")
    md = (tmp_path / "reports/tables/table2.md").read_text()
    assert "**60.2**" in md and "| 57.4 " in md
    assert "**70.0**" in md and "**95.3**" in md and "\\* DeFeat: neck (feature) part only" in md
    tex = (tmp_path / "reports/tables/table2.tex").read_text()
    assert "\\textbf{60.2}" in tex and "\\textbf{70.0}" in tex and "DeFeat$^{*}$" in tex
    # + a Δ with its CI (3 columns) for mAP and AP50 of each dataset
    assert pd.read_csv(tmp_path / "reports/tables/table2.csv").shape == (6, 3 + 4 * 4 + 4 * 3)


def test_table3_shares_student_and_dipkd_runs(tmp_path, params):
    ab = params["ablation"]
    ab["modules"] = ["rit", "sns"]
    _write(tmp_path, "student", "ssdd-faster_rcnn", {"mAP": 0.5, "APs": 0.4, "APm": 0.6,
                                                     "APl": None})
    _write(tmp_path, "distilled/dipkd", "ssdd-faster_rcnn", {m: 0.7 for m in table3.METRICS})
    _write(tmp_path, "distilled/dipkd-rit", "ssdd-faster_rcnn", {m: 0.6 for m in table3.METRICS})
    with pytest.raises(FileNotFoundError, match="dipkd-sns ssdd-faster_rcnn-seed0"):
        table3.collect(params, metrics_dir=tmp_path / "metrics")
    _write(tmp_path, "distilled/dipkd-sns", "ssdd-faster_rcnn", {m: 0.55 for m in table3.METRICS})
    rows = table3.collect(params, metrics_dir=tmp_path / "metrics")
    assert [tuple(r.labels.values()) for r in rows] == [
        ("-", "-", "-"), ("✓", "-", "-"), ("-", "-", "✓"), ("✓", "✓", "✓")]
    assert rows[0].paper["mAP"] == 57.4 and rows[2].paper["APl"] == 59.6
    assert rows[3].stats("mAP")[0] == pytest.approx(70.0)
    table3.write_table3(rows, "head", params, tmp_path / "reports" / "tables")
    assert "SSDD" in (tmp_path / "reports/tables/table3.md").read_text()


@pytest.mark.parametrize("key,values,default_group", [
    ("tau", [1.0, 0.25], "distilled/dipkd"), ("mask_rate", [0.0, 1.0], "distilled/dipkd")])
def test_sensitivity_rows_sorted_with_the_shared_default(tmp_path, params, key, values,
                                                         default_group):
    params["ablation"][key] = values
    default = params["methods"]["dipkd"][key]
    _write(tmp_path, default_group, "ssdd-faster_rcnn", {"mAP": 0.6, "mAR": 0.65})
    _write(tmp_path, "student", "ssdd-faster_rcnn", {"mAP": 0.5, "mAR": 0.6}, hits=2)
    for i, v in enumerate(values):
        _write(tmp_path, f"distilled/dipkd-{key}{v}", "ssdd-faster_rcnn",
               {"mAP": 0.5 + i / 100, "mAR": 0.6})
    rows = sensitivity.collect(params, key, metrics_dir=tmp_path / "metrics")
    labels = [next(iter(r.labels.values())) for r in rows]
    assert labels == sorted(labels, key=lambda s: float(s.split()[0]))
    assert f"{default} (default)" in labels
    assert all(r.paper for r in rows)   # the paper has every default value
    sensitivity.write_sensitivity(rows, key, "head", params, tmp_path / "reports" / "tables")
    name = sensitivity.TABLES[key][0]
    assert pd.read_csv(tmp_path / f"reports/tables/{name}.csv").shape[0] == 3
    md = (tmp_path / f"reports/tables/{name}.md").read_text()
    assert ("mask_rule `keep`: the mask rate is the fraction of background cells KEPT" in md) \
        == (key == "mask_rate")
