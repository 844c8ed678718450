"""Table 1 of the paper: detectors x datasets x {teacher, student, ...}, ten COCO metrics.

Only metrics files that exist are used; a missing run is an error, never a blank or a
made-up number. The header line states profile, data source, seed, epochs and commit, so a
smoke table cannot be mistaken for a reproduction.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..evaluation.coco_eval import TABLE1_METRICS
from .common import atomic_write, read_metrics

ROW_LABELS = {"teacher": "ResNet{depth}(tea)", "student": "ResNet{depth}(stu)",
              "distilled/dipkd": "ours: ResNet{depth} + DIPKD"}
ROLES = ("teacher", "student", "distilled/dipkd")
DETECTOR_NAMES = {"faster_rcnn": "Faster R-CNN", "retinanet": "RetinaNet"}


def collect(params: dict, roles=ROLES, metrics_dir: Path = Path("metrics")):
    """One row per (dataset, detector, role) from ``metrics/<role>/<dataset>-<detector>.json``
    (``role`` is ``teacher``, ``student`` or ``distilled/<method>``)."""
    rows = []
    for ds in params["datasets"]:
        for det in params["detectors"]:
            for role in roles:
                m = read_metrics(metrics_dir, role, f"{ds}-{det}")
                backbone = "teacher" if role == "teacher" else "student"
                depth = params["roles"][backbone]["depth"]
                row = {"Dataset": ds.upper(), "Detector": DETECTOR_NAMES.get(det, det),
                       "Model": ROW_LABELS.get(role, role).format(depth=depth)}
                for name in TABLE1_METRICS:
                    v = m[name]
                    row[name] = None if v is None else round(100.0 * v, 1)
                rows.append(row)
    return pd.DataFrame(rows)


def write_table1(df: pd.DataFrame, head: str, out_dir: Path = Path("reports")) -> None:
    shown = df.rename(columns={"mAP": "mAP", "AP50": "AP50", "AP75": "AP75"})
    md = ("# Table 1: detectors on SAR ship datasets (COCO metrics, %)\n\n" + head + "\n\n"
          + shown.to_markdown(index=False, floatfmt=".1f", missingval="-") + "\n")
    atomic_write(out_dir / "table1.md", md)
    atomic_write(out_dir / "table1.csv", df.to_csv(index=False))
