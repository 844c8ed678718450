"""``metrics/summary.json``: the headline numbers, so that ``dvc exp show`` and
``dvc metrics show`` lead with what matters.

- ``dipkd.<dataset>-<detector>``: DIPKD's mAP (mean over seeds), the student's, and DIPKD's
  Δ mAP over the student with its 95% CI (the paired bootstrap of Table 1's Δ column);
- ``table2``: the best distillation method of Table 2 (highest mAP averaged over the
  datasets; the student and the controls such as inherit-only excluded), its mean mAP and
  DIPKD's rank among the methods.

Everything is read from the Table 1 and Table 2 rows the tables stage built: one place
computes each number.
"""
from __future__ import annotations

from pathlib import Path

from ..evaluation.coco_eval import write_json_atomic
from ..models.detectors import display_name as detector_display_name
from .compare_plots import table2_bars
from .render import Row

SUMMARY_PATH = Path("metrics") / "summary.json"


def _r(v):
    return None if v is None else round(float(v), 2)


def _find(rows: list[Row], **labels) -> Row | None:
    return next((r for r in rows if all(r.labels.get(k) == v for k, v in labels.items())), None)


def summarize(params: dict, table1_rows: list[Row], table2_rows: list[Row]) -> dict:
    """The summary dict (percentages rounded to 0.01)."""
    from .tables.table1 import ROW_LABELS
    from ..kd.methods import display_name, method_class

    depth = params["roles"]["student"]["depth"]
    out: dict = {"dipkd": {}}
    for ds in params["datasets"]:
        for det in params["detectors"]:
            where = {"Dataset": ds.upper(), "Detector": detector_display_name(det)}
            ours = _find(table1_rows, **where,
                         Model=ROW_LABELS["distilled/dipkd"].format(depth=depth))
            student = _find(table1_rows, **where,
                            Model=ROW_LABELS["student"].format(depth=depth))
            if ours is None or student is None:
                continue
            entry = {"mAP": _r(ours.stats("mAP")[0]), "student_mAP": _r(student.stats("mAP")[0])}
            d = ours.delta.get("mAP")
            if d is not None:
                entry.update(delta_mAP=_r(d.delta), delta_mAP_ci_low=_r(d.ci_low),
                             delta_mAP_ci_high=_r(d.ci_high))
            out["dipkd"][f"{ds}-{det}"] = entry
    unranked = {display_name("student")} | {
        display_name(m, params) for m in params.get("baselines", [])
        if method_class(m, params).control}
    scored = [(bar["mAP"], bar["method"]) for bar in table2_bars(params, table2_rows)
              if bar["method"] not in unranked]
    if scored:
        scored.sort(reverse=True)
        dipkd = display_name("dipkd", params)
        out["table2"] = {"best_method": scored[0][1], "best_mAP": _r(scored[0][0]),
                         "dipkd_rank": next((i + 1 for i, (_, n) in enumerate(scored)
                                             if n == dipkd), None),
                         "methods": len(scored)}
    return out


def write_summary(summary: dict, path: Path = SUMMARY_PATH) -> None:
    write_json_atomic(path, summary, indent=2)
