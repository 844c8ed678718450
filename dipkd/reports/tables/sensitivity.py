"""Tables 4 and 5 of the paper: DIPKD's sensitivity to the temperature tau (Eq. 5-6) and to
the mask rate (Eq. 8), mAP and mAR, on the ablation dataset and detector.

Rows: the values of ``params['ablation'][key]`` plus the default of ``methods.dipkd`` (that
row is the DIPKD run of Table 1, run once and shared), in increasing order.
"""
from __future__ import annotations

from pathlib import Path

from ...config.params import distill_spec
from ...models.detectors import display_name as detector_display_name
from ..common import PaperTable, TABLES_DIR, paper_values, read_seeds
from ..render import Row, write_table
from ..deltas import delta_vs_student
from .table1 import specs_for

METRICS = ("mAP", "mAR")
TABLES = {"tau": ("table4", "Table 4: sensitivity to the temperature tau"),
          "mask_rate": ("table5", "Table 5: sensitivity to the mask rate")}
LABELS = {"tau": "tau", "mask_rate": "mask rate"}


def _rows(params: dict, key: str) -> list[tuple]:
    """(value, its runs) per row, in increasing order of the value."""
    ab = params["ablation"]
    default = params["methods"]["dipkd"][key]
    out = []
    for value in sorted({*ab[key], default}, key=float):
        if float(value) == float(default):
            specs = specs_for(params, "distilled/dipkd", ab["dataset"], ab["detector"])
        else:
            specs = [distill_spec(params, "dipkd", ab["dataset"], ab["detector"], s,
                                  {key: value}) for s in params["seeds"]]
        out.append((value, specs))
    return out


def runs(params: dict, key: str) -> list:
    return [spec for _, specs in _rows(params, key) for spec in specs]


def collect(params: dict, key: str, metrics_dir: Path = Path("metrics")) -> list[Row]:
    ab = params["ablation"]
    default = params["methods"]["dipkd"][key]
    published = {float(k): v for k, v in paper_values()[TABLES[key][0]].items()}
    rows = []
    for value, specs in _rows(params, key):
        label = str(value) + (" (default)" if float(value) == float(default) else "")
        paper = published.get(float(value))
        student = specs_for(params, "student", ab["dataset"], ab["detector"])
        seeds = read_seeds(metrics_dir, specs, METRICS)   # a missing run: error first
        rows.append(Row(labels={LABELS[key]: label},
                        seeds=seeds,
                        paper=dict(zip(METRICS, paper)) if paper else {},
                        delta=delta_vs_student(specs, student, ("mAP",),
                                               Path(metrics_dir).parent)))
    return rows


def write_sensitivity(rows: list[Row], key: str, head: str, params: dict,
                      out_dir: Path = TABLES_DIR) -> None:
    ab = params["ablation"]
    name, title = TABLES[key]
    title += (f", {detector_display_name(ab['detector'])} ResNet50 -> ResNet18 "
              f"on {ab['dataset'].upper()} (COCO %)")
    notes = []
    if key == "mask_rate":
        rule = params["methods"]["dipkd"].get("mask_rule", "drop")
        notes.append(f"mask_rule `{rule}`: the mask rate is the fraction of background cells "
                     + ("KEPT each step (the authors' lambda_mask; 1.0 keeps all)." if rule ==
                        "keep" else "DROPPED each step (the paper's text; 1.0 = targets only)."))
    write_table(name, title, head, rows, METRICS, notes=notes, out_dir=out_dir)


def _table(key: str) -> PaperTable:
    return PaperTable(
        TABLES[key][0], lambda params: runs(params, key),
        lambda params, metrics_dir=Path("metrics"): collect(params, key, metrics_dir),
        lambda rows, head, params, out_dir=TABLES_DIR:
        write_sensitivity(rows, key, head, params, out_dir))


TABLE4, TABLE5 = _table("tau"), _table("mask_rate")
