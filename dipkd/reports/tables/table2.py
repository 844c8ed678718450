"""Table 2 of the paper: KD methods on Faster R-CNN R50 -> R18, mAP and AP50 per dataset.

Rows: the student without KD, each method of ``params['baselines']`` in order, DIPKD last;
the best value of each column in bold. Names, venues and footnotes (methods implemented with
a deviation from their paper) come from the methods' classes (:mod:`dipkd.kd.methods`).
"""
from __future__ import annotations

from pathlib import Path

from ...kd.methods import display_name, method_class
from ...models.detectors import display_name as detector_display_name
from ..common import PaperTable, TABLES_DIR, paper_values, read_seeds
from ..render import Row, write_table
from ..deltas import delta_vs_student
from .table1 import specs_for

PAPER_ORDER = ("SSDD mAP", "SSDD AP50", "HRSID mAP", "HRSID AP50")
TITLE = "Table 2: KD methods, {detector} ResNet50 -> ResNet18 (COCO %)"


def _footnoted(params: dict) -> list[str]:
    """The methods of the table whose implementation carries a footnote (a deviation from
    the published method, :attr:`dipkd.kd.methods.KDMethod.footnote`)."""
    return [m for m in params["baselines"] if method_class(m, params).footnote]


def _mark(params: dict, method: str) -> str:
    """``*``, ``**``, ... for the first, second, ... footnoted method of the table."""
    listed = _footnoted(params)
    return "*" * (listed.index(method) + 1) if method in listed else ""


def _venue(method: str, params: dict) -> str:
    """Table 2's "Ref" column: the method's venue (none for the student)."""
    return "" if method == "student" else method_class(method, params).venue


def columns(params: dict) -> list[str]:
    return [f"{ds.upper()} {m}" for ds in params["datasets"] for m in ("mAP", "AP50")]


def _methods(params: dict) -> list[str]:
    return ["student", *params["baselines"], "dipkd"]


def _role(method: str) -> str:
    return "student" if method == "student" else f"distilled/{method}"


def runs(params: dict) -> list:
    return [spec for method in _methods(params) for ds in params["datasets"]
            for spec in specs_for(params, _role(method), ds, params["baseline_detector"])]


def collect(params: dict, metrics_dir: Path = Path("metrics")) -> list[Row]:
    det = params["baseline_detector"]
    published = paper_values()["table2"] if det == "faster_rcnn" else {}
    rows = []
    for method in _methods(params):
        role = _role(method)
        values, delta = {}, {}
        for ds in params["datasets"]:
            specs = specs_for(params, role, ds, det)
            per_ds = read_seeds(metrics_dir, specs, ("mAP", "AP50"))
            values.update({f"{ds.upper()} {m}": v for m, v in per_ds.items()})
            if method != "student":
                d = delta_vs_student(specs, specs_for(params, "student", ds, det),
                                     ("mAP", "AP50"), Path(metrics_dir).parent)
                delta.update({f"{ds.upper()} {m}": v for m, v in d.items()})
        paper = dict(zip(PAPER_ORDER, published.get(method, [])))
        rows.append(Row(labels={"Method": display_name(method, params) + _mark(params, method),
                                "Ref": _venue(method, params)},
                        seeds=values, paper=paper, delta=delta))
    return rows


def write_table2(rows: list[Row], head: str, params: dict,
                 out_dir: Path = TABLES_DIR) -> None:
    det = params["baseline_detector"]
    star = "\\*"  # a literal asterisk in Markdown
    notes = [f"{star * len(_mark(params, m))} {display_name(m, params)}: "
             f"{method_class(m, params).footnote}." for m in _footnoted(params)]
    write_table("table2", TITLE.format(detector=detector_display_name(det)), head, rows,
                columns(params), notes=notes, out_dir=out_dir)


TABLE = PaperTable("table2", runs, collect, write_table2)
