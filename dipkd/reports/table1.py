"""Table 1 of the paper: detectors x datasets x {teacher, student, DIPKD}, ten COCO metrics.

Every cell comes from the metrics files of runs that really happened (one per seed; a
missing run is an error, never a blank or a made-up number), next to the paper's value.
"""
from __future__ import annotations

from pathlib import Path

from ..config.params import distill_spec, run_spec
from ..evaluation.coco_eval import TABLE1_METRICS
from .common import paper_values, read_seeds
from .render import Row, write_table

ROW_LABELS = {"teacher": "ResNet{depth}(tea)", "student": "ResNet{depth}(stu)",
              "distilled/dipkd": "ours: ResNet{depth} + DIPKD"}
ROLES = ("teacher", "student", "distilled/dipkd")
DETECTOR_NAMES = {"faster_rcnn": "Faster R-CNN", "retinanet": "RetinaNet"}
TITLE = "Table 1: detectors on SAR ship datasets (COCO metrics, %)"


def specs_for(params: dict, role: str, dataset: str, detector: str) -> list:
    """The runs (one per seed) of a role: ``teacher``, ``student`` or ``distilled/<method>``."""
    if role.startswith("distilled/"):
        return [distill_spec(params, role.split("/", 1)[1], dataset, detector, s)
                for s in params["seeds"]]
    return [run_spec(params, role, dataset, detector, s) for s in params["seeds"]]


def collect(params: dict, metrics_dir: Path = Path("metrics")) -> list[Row]:
    published = paper_values()["table1"]
    rows = []
    for ds in params["datasets"]:
        for det in params["detectors"]:
            for role in ROLES:
                depth = params["roles"]["teacher" if role == "teacher" else "student"]["depth"]
                paper = published.get(ds, {}).get(det, {}).get(role)
                rows.append(Row(
                    labels={"Dataset": ds.upper(), "Detector": DETECTOR_NAMES.get(det, det),
                            "Model": ROW_LABELS[role].format(depth=depth)},
                    seeds=read_seeds(metrics_dir, specs_for(params, role, ds, det),
                                     TABLE1_METRICS),
                    paper=dict(zip(TABLE1_METRICS, paper)) if paper else {}))
    return rows


def write_table1(rows: list[Row], head: str, out_dir: Path = Path("reports")) -> None:
    write_table("table1", TITLE, head, rows, TABLE1_METRICS,
                group_by=("Dataset", "Detector"), out_dir=out_dir)
