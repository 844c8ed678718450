"""Table 2 of the paper: KD methods on Faster R-CNN R50 -> R18, mAP and AP50 per dataset.

Rows: the student without KD, each method of ``params['baselines']`` in order, DIPKD last;
the best value of each column in bold. Methods implemented with a deviation from their paper
carry a footnote.
"""
from __future__ import annotations

from pathlib import Path

from .common import paper_values, read_seeds
from .render import Row, write_table
from .deltas import delta_vs_student
from .table1 import DETECTOR_NAMES, specs_for

NAMES = {"student": "Student", "fitnet": "FitNet", "defeat": "DeFeat", "fgd": "FGD",
         "mgd": "MGD", "fkd": "FKD", "frs": "FRS", "arsd": "ARSD", "twa": "TWA",
         "ifkd": "IFKD", "dipkd": "DIPKD"}
REFS = {"student": "", "fitnet": "arXiv14", "defeat": "CVPR21", "fgd": "CVPR22",
        "mgd": "ECCV22", "fkd": "ICLR21", "frs": "NeurIPS21", "arsd": "TGRS22",
        "twa": "TGRS24", "ifkd": "ACMMM24", "dipkd": "AAAI25"}
FOOTNOTES = {
    "defeat": "neck (feature) part only; DeFeat's RoI-head logit distillation is not "
              "implemented",
    "frs": "on Faster R-CNN the feature-richness score and the head distillation use the "
           "teacher's RPN objectness, as the authors' two-stage code; their 500-iteration "
           "loss warm-up is not reproduced",
    "arsd": "released for ATSS; here the head terms use the dense head (the RPN on Faster "
            "R-CNN), MaxIoU positives and unit weights instead of ATSS's assignment and "
            "centerness",
    "twa": "no public code or full text; reimplemented from the abstract's description of "
           "its two modules (CPAM as FGD-style attention-weighted imitation, MAAM as an "
           "ASFF-style multiscale fusion with an MGD generation block); hyperparameters are "
           "ours, not the paper's",
    "ifkd": "MobileSAM weights are unavailable; the SAM mask of the external-disturbance "
            "step is replaced by the ground-truth box mask",
}
PAPER_ORDER = ("SSDD mAP", "SSDD AP50", "HRSID mAP", "HRSID AP50")
TITLE = "Table 2: KD methods, {detector} ResNet50 -> ResNet18 (COCO %)"


def _footnoted(params: dict) -> list[str]:
    return [m for m in params["baselines"] if m in FOOTNOTES]


def _mark(params: dict, method: str) -> str:
    """``*``, ``**``, ... for the first, second, ... footnoted method of the table."""
    listed = _footnoted(params)
    return "*" * (listed.index(method) + 1) if method in listed else ""


def columns(params: dict) -> list[str]:
    return [f"{ds.upper()} {m}" for ds in params["datasets"] for m in ("mAP", "AP50")]


def collect(params: dict, metrics_dir: Path = Path("metrics")) -> list[Row]:
    det = params["baseline_detector"]
    published = paper_values()["table2"] if det == "faster_rcnn" else {}
    rows = []
    for method in ["student", *params["baselines"], "dipkd"]:
        role = "student" if method == "student" else f"distilled/{method}"
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
        rows.append(Row(labels={"Method": NAMES.get(method, method) + _mark(params, method),
                                "Ref": REFS.get(method, "")},
                        seeds=values, paper=paper, delta=delta))
    return rows


def write_table2(rows: list[Row], head: str, params: dict,
                 out_dir: Path = Path("reports")) -> None:
    det = params["baseline_detector"]
    star = "\\*"  # a literal asterisk in Markdown
    notes = [f"{star * len(_mark(params, m))} {NAMES.get(m, m)}: {FOOTNOTES[m]}."
             for m in _footnoted(params)]
    write_table("table2", TITLE.format(detector=DETECTOR_NAMES.get(det, det)), head, rows,
                columns(params), notes=notes, out_dir=out_dir)
