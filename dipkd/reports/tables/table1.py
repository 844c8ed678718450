"""Table 1 of the paper: detectors x datasets x {teacher, student, DIPKD}, ten COCO metrics;
ours adds DIPKD without inheritance and, on Table 2's detector, the inherit-only control.

Every cell comes from the metrics files of runs that really happened (one per seed; a
missing run is an error, never a blank or a made-up number), next to the paper's value.
"""
from __future__ import annotations

from pathlib import Path

from ...config.params import distill_spec, run_spec
from ...evaluation.coco_eval import TABLE1_METRICS
from ...models.detectors import display_name as detector_display_name
from ..common import PaperTable, TABLES_DIR, paper_values, read_seeds
from ..deltas import delta_vs_student
from ..render import Row, write_table

ROW_LABELS = {"teacher": "ResNet{depth}(tea)", "student": "ResNet{depth}(stu)",
              "distilled/dipkd": "ours: ResNet{depth} + DIPKD",
              "distilled/dipkd-inheritfalse": "ours: ResNet{depth} + DIPKD without inheritance",
              "distilled/inherit_only": "ResNet{depth} + teacher init, no KD"}
ROLES = tuple(ROW_LABELS)
# Table 1 rows that are baselines (``baselines``, dipkd/baselines/): a row only where the
# baseline runs, i.e. when listed in ``baselines`` and on ``baseline_detector``. The
# inherit-only control (methods.inherit_only: the student's neck and heads from the teacher,
# no KD loss) shows how much of DIPKD's gain the inheritance alone gives.
BASELINE_ROLES = ("distilled/inherit_only",)
# Table 1 rows that are DIPKD variants: the row key -> the overrides of methods.dipkd (the
# DVC stage ``distill_noinherit`` runs them with ``--set inherit=false``). The row shows how
# much of DIPKD's gain comes from initialising the student's neck and heads from the teacher.
VARIANT_OVERRIDES = {"distilled/dipkd-inheritfalse": {"inherit": "false"}}
DELTA_METRICS = ("mAP",)   # "Δ vs student" with its 95% CI on the distilled rows
TITLE = "Table 1: detectors on SAR ship datasets (COCO metrics, %)"


def specs_for(params: dict, role: str, dataset: str, detector: str) -> list:
    """The runs (one per seed) of a role: ``teacher``, ``student`` or ``distilled/<method>``."""
    if role in VARIANT_OVERRIDES:
        return [distill_spec(params, "dipkd", dataset, detector, s, VARIANT_OVERRIDES[role])
                for s in params["seeds"]]
    if role.startswith("distilled/"):
        return [distill_spec(params, role.split("/", 1)[1], dataset, detector, s)
                for s in params["seeds"]]
    if role == "teacher":   # one teacher per dataset and detector (teacher_seed)
        return [run_spec(params, role, dataset, detector)]
    return [run_spec(params, role, dataset, detector, s) for s in params["seeds"]]


def roles(params: dict, detector: str) -> list[str]:
    """The rows of one detector's block: :data:`ROLES`, less the baseline rows whose method
    is not run there (not in ``baselines``, or another detector than ``baseline_detector``)."""
    return [role for role in ROLES if role not in BASELINE_ROLES or (
        role.split("/", 1)[1] in params.get("baselines", [])
        and detector == params.get("baseline_detector"))]


def collect(params: dict, metrics_dir: Path = Path("metrics")) -> list[Row]:
    published = paper_values()["table1"]
    rows = []
    for ds in params["datasets"]:
        for det in params["detectors"]:
            for role in roles(params, det):
                depth = params["roles"]["teacher" if role == "teacher" else "student"]["depth"]
                paper = published.get(ds, {}).get(det, {}).get(role)  # none for variants
                specs = specs_for(params, role, ds, det)
                seeds = read_seeds(metrics_dir, specs, TABLE1_METRICS)   # missing: error first
                delta = (delta_vs_student(specs, specs_for(params, "student", ds, det),
                                          DELTA_METRICS, Path(metrics_dir).parent)
                         if role.startswith("distilled/") else {})
                rows.append(Row(
                    labels={"Dataset": ds.upper(), "Detector": detector_display_name(det),
                            "Model": ROW_LABELS[role].format(depth=depth)},
                    seeds=seeds,
                    paper=dict(zip(TABLE1_METRICS, paper)) if paper else {}, delta=delta))
    return rows


def write_table1(rows: list[Row], head: str, out_dir: Path = TABLES_DIR) -> None:
    write_table("table1", TITLE, head, rows, TABLE1_METRICS,
                group_by=("Dataset", "Detector"), out_dir=out_dir)


def runs(params: dict) -> list:
    return [spec for ds in params["datasets"] for det in params["detectors"]
            for role in roles(params, det) for spec in specs_for(params, role, ds, det)]


TABLE = PaperTable("table1", runs, collect,
                   lambda rows, head, params, out_dir=TABLES_DIR:
                   write_table1(rows, head, out_dir))
