"""Data of the comparison plots of ``dvc plots show`` (written by the tables stage):

- ``reports/plots/val_mAP.json``: validation mAP per epoch of the student, every Table 2
  baseline and DIPKD on the first dataset with the baseline detector (Table 2's setting),
  mean over seeds, long format (``epoch``, ``method``, ``mAP`` in %), drawn as one line per
  method by the custom template ``.dvc/plots/by_method.json``;
- ``reports/plots/table2.json``: Table 2 as a bar chart (``method``, ``mAP`` in %, mean over
  seeds and datasets), DVC's built-in ``bar_horizontal_sorted`` template.

DVC's plot definitions cannot loop over ``baselines``, so the method list lives in these
files, not in dvc.yaml.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from ..evaluation.coco_eval import write_json_atomic
from .render import Row

OUT_DIR = Path("reports") / "plots"   # not under plots/: its training-curve plot takes all files
VAL_MAP = OUT_DIR / "val_mAP.json"
TABLE2 = OUT_DIR / "table2.json"


def _curves(path: Path) -> list[dict]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []


def val_map_overlay(params: dict, base: Path = Path(".")) -> list[dict]:
    """One row per (method, epoch with a validation mAP): the mean over the seeds that have
    it, in %. A method whose curves are missing is left out."""
    from .tables.table1 import specs_for
    from ..kd.methods import display_name

    ds, det = params["datasets"][0], params["baseline_detector"]
    rows = []
    for method in ["student", *params["baselines"], "dipkd"]:
        role = "student" if method == "student" else f"distilled/{method}"
        per_epoch: dict[int, list[float]] = {}
        for spec in specs_for(params, role, ds, det):
            for rec in _curves(Path(base) / spec.curves_path):
                if rec.get("mAP") is not None:
                    per_epoch.setdefault(int(rec["epoch"]), []).append(100 * rec["mAP"])
        rows += [{"epoch": e, "method": display_name(method, params),
                  "mAP": round(statistics.fmean(v), 3)} for e, v in sorted(per_epoch.items())]
    return rows


def table2_bars(params: dict, table2_rows: list[Row]) -> list[dict]:
    """Table 2's methods with their mAP (mean over seeds, averaged over the datasets)."""
    out = []
    for row in table2_rows:
        means = [row.stats(f"{ds.upper()} mAP")[0] for ds in params["datasets"]]
        if all(m is not None for m in means):
            out.append({"method": row.labels["Method"].rstrip("*"),
                        "mAP": round(sum(means) / len(means), 3)})
    return out


def write_compare_plots(params: dict, table2_rows: list[Row], base: Path = Path(".")) -> None:
    write_json_atomic(Path(base) / VAL_MAP, val_map_overlay(params, base), indent=1)
    write_json_atomic(Path(base) / TABLE2, table2_bars(params, table2_rows), indent=1)
