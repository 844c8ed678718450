import json

import pandas as pd
import pytest

from dipkd.reports.table2 import collect, write_table2


def _write(root, group, key, m_ap, ap50):
    path = root / "metrics" / group / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": {"mAP": m_ap, "AP50": ap50}}))


def test_table2_rows_order_bold_and_footnote(tmp_path, params):
    values = {"student": (0.574, 0.924), "distilled/fitnet": (0.570, 0.942),
              "distilled/defeat": (0.577, 0.928), "distilled/fgd": (0.565, 0.935),
              "distilled/mgd": (0.581, 0.933), "distilled/dipkd": (0.602, 0.953)}
    for group, (a, b) in values.items():
        for ds in ("ssdd", "hrsid"):
            _write(tmp_path, group, f"{ds}-faster_rcnn", a, b - (0.1 if ds == "hrsid" else 0))
    _write(tmp_path, "distilled/fitnet", "hrsid-faster_rcnn", 0.700, 0.5)  # best HRSID mAP
    df = collect(params, metrics_dir=tmp_path / "metrics")
    assert list(df["Method"]) == ["Student", "FitNet", "DeFeat*", "FGD", "MGD", "DIPKD"]
    assert list(df.columns) == ["Method", "Ref", "SSDD mAP", "SSDD AP50", "HRSID mAP",
                                "HRSID AP50"]
    write_table2(df, "header line", params, tmp_path / "reports")
    md = (tmp_path / "reports/table2.md").read_text()
    assert "**60.2**" in md and "| 57.4 " in md  # the best value is bold, the others not
    assert "**70.0**" in md and "**95.3**" in md and "\\* neck (feature) part only" in md
    tex = (tmp_path / "reports/table2.tex").read_text()
    assert "\\toprule" in tex and "\\textbf{60.2}" in tex and "\\textbf{70.0}" in tex
    assert "DeFeat$^*$" in tex
    assert pd.read_csv(tmp_path / "reports/table2.csv").shape == (6, 6)


def test_missing_method_run_is_an_error(tmp_path, params):
    with pytest.raises(FileNotFoundError, match="no metrics for student ssdd-faster_rcnn"):
        collect(params, metrics_dir=tmp_path / "metrics")
