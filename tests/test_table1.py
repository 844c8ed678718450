import json

import pandas as pd
import pytest

from dipkd.reports.common import header
from dipkd.reports.table1 import collect, write_table1

NAMES = ("mAP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "mAR", "ARs", "ARm", "ARl")


def _write(root, role, key, values):
    path = root / "metrics" / role / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": dict(zip(NAMES, values))}))


def test_table_from_metrics_files(tmp_path, params):
    params["datasets"], params["detectors"] = ["ssdd"], ["faster_rcnn"]
    _write(tmp_path, "teacher", "ssdd-faster_rcnn", [0.589, 0.945, 0.656, 0.539, 0.663, None,
                                                     0.1, 0.2, 0.643, 0.607, 0.711, 0.605])
    _write(tmp_path, "student", "ssdd-faster_rcnn", [0.574] * 12)
    _write(tmp_path, "distilled/dipkd", "ssdd-faster_rcnn", [0.602] * 12)
    df = collect(params, metrics_dir=tmp_path / "metrics")
    assert list(df["Model"]) == ["ResNet50(tea)", "ResNet18(stu)", "ours: ResNet18 + DIPKD"]
    assert df.loc[2, "mAP"] == 60.2
    assert df.loc[0, "mAP"] == 58.9 and df.loc[0, "mAR"] == 64.3 and pd.isna(df.loc[0, "APl"])
    assert "AR1" not in df.columns  # Table 1 has ten metric columns
    write_table1(df, header(params, "0123456789abcdef"), tmp_path / "reports")
    md = (tmp_path / "reports" / "table1.md").read_text()
    assert "Profile `smoke`" in md and "commit `0123456789ab`" in md and "only prove" in md
    assert "| SSDD" in md and "58.9" in md
    csv = pd.read_csv(tmp_path / "reports" / "table1.csv")
    assert csv.shape == (3, 13)


def test_missing_run_is_an_error_not_a_blank(tmp_path, params):
    with pytest.raises(FileNotFoundError, match="no metrics for teacher ssdd-faster_rcnn"):
        collect(params, metrics_dir=tmp_path / "metrics")
