"""The paper's effects against a study's resolution: which of the paper's claims a study can
see at all (issue 26, "power before rows").

An effect is a difference of two of the paper's published mAPs (``paper_values.yaml``), named
by the run groups of :mod:`dipkd.reports.pairs` (``student``, ``dipkd``, a method such as
``fgd``, a Table 3 variant such as ``dipkd-kld_rit``):

- every comparison of the study's ``compare.csv`` whose two groups have a published mAP
  (DIPKD minus the student, Tables 1-2; DIPKD minus FGD or MGD, Table 2; DIPKD minus a pair of
  its modules: what the third adds, Table 3), and every Table 3 row minus the student
  (``table3.csv``), each with the half-width of its 95% CI measured here;
- the contrasts the paper reports that the study did not measure: DIPKD minus each method of
  its ``baselines`` and minus each pair of modules (when those runs exist but no pair names
  them), and the spread of Tables 4-5 (largest minus smallest mAP over the paper's values;
  Table 5 also the mask rate 1.0 against the default 0.25). They get the narrowest half-width
  the study measured between two distilled models: an estimate, marked ``est.``.

"Visible here" is ``yes`` when the paper's difference is at least that half-width (an effect
of the paper's size would be resolved by this benchmark) and ``no`` when it is smaller (below
this benchmark's resolution: a run of the same size could not tell it from zero).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..config.params import DIPKD_MODULES, ParamsError, modules_name, parse_modules
from ..models.detectors import display_name as detector_display_name
from .common import paper_values
from .pairs import STUDENT
from .tables.table2 import PAPER_ORDER as TABLE2_ORDER
from .tables.compare import label

TITLE = "The paper's effects vs this study's resolution"
PAIRS = ("sns_kld", "sns_rit", "kld_rit")      # DIPKD minus one of these: what the third adds


@dataclass(frozen=True)
class Effect:
    """One of the paper's differences and what this study resolves of it."""

    claim: str
    paper: float                 # the paper's difference, mAP points
    half_width: float            # the 95% CI's half-width here (nan: nothing measured)
    measured: str = ""           # Δ [95% CI] here, or "" when estimated
    estimated: bool = False      # half-width from the narrowest distilled-vs-distilled pair

    @property
    def visible(self) -> str:
        if not math.isfinite(self.half_width):
            return "-"
        answer = "yes" if abs(self.paper) >= self.half_width else "no"
        return f"{answer} (est.)" if self.estimated else answer


def paper_map(name: str, dataset: str, detector: str) -> float | None:
    """The paper's mAP (%) of a run group on a dataset and detector, or None."""
    published = paper_values()
    table1 = published["table1"].get(dataset, {}).get(detector, {})
    if name == STUDENT:
        return table1.get("student", [None])[0]
    if name == "dipkd":
        return table1.get("distilled/dipkd", [None])[0]
    if detector == "faster_rcnn" and name in published["table2"]:
        return dict(zip(TABLE2_ORDER, published["table2"][name])).get(f"{dataset.upper()} mAP")
    if name.startswith("dipkd-") and (dataset, detector) == ("ssdd", "faster_rcnn"):
        try:
            on = parse_modules(name.split("-", 1)[1])
        except ParamsError:
            return None                 # another variant (tau, mask rate, inherit)
        row = published["table3"].get(" ".join(str(int(on[m])) for m in DIPKD_MODULES))
        return row[0] if row else None
    return None


def _ci(delta: float, low: float, high: float) -> str:
    return f"{delta:+.1f} [{low:+.1f}, {high:+.1f}]"


def effects(params: dict, folder: Path) -> list[Effect]:
    """The effects of a study whose tables (``compare.csv``, ``table3.csv``) are in
    ``folder``, in the order: measured comparisons, Table 3 rows, then the estimates."""
    compare = _read(folder / "compare.csv")
    out: list[Effect] = []
    measured: set[tuple[str, str, str, str]] = set()
    narrowest = math.inf
    for r in compare.itertuples(index=False):
        if r.b != STUDENT and math.isfinite(r.mAP_half_width):
            narrowest = min(narrowest, r.mAP_half_width)
        pa, pb = paper_map(r.a, r.Dataset, r.Detector), paper_map(r.b, r.Dataset, r.Detector)
        measured.add((r.a, r.b, r.Dataset, r.Detector))
        if pa is None or pb is None:
            continue
        out.append(Effect(f"{label(r.a, params)} - {label(r.b, params)} ({r.Dataset.upper()}, "
                          f"{detector_display_name(r.Detector)})", pa - pb, r.mAP_half_width,
                          _ci(r.mAP_delta, r.mAP_ci_low, r.mAP_ci_high)))
    ab = params.get("ablation") or {}
    ds, det = ab.get("dataset", "ssdd"), ab.get("detector", "faster_rcnn")
    table3 = _read(folder / "table3.csv")
    for r in table3.to_dict("records"):
        on = {m: r.get(m.upper()) == "✓" for m in DIPKD_MODULES}
        name = "dipkd" if all(on.values()) else f"dipkd-{modules_name(on)}"
        if not any(on.values()) or (name, STUDENT, ds, det) in measured:
            continue
        if not math.isfinite(r.get("mAP_ci_low", math.nan)):
            continue
        paper = paper_map(name, ds, det)
        student = paper_map(STUDENT, ds, det)
        if paper is None or student is None:
            continue
        out.append(Effect(f"{label(name, params)} - {label(STUDENT, params)} (Table 3)", paper - student,
                          (r["mAP_ci_high"] - r["mAP_ci_low"]) / 2,
                          _ci(r["mAP_delta"], r["mAP_ci_low"], r["mAP_ci_high"])))
    estimate = narrowest if math.isfinite(narrowest) else math.nan
    ran = {f"dipkd-{m}" for m in ab.get("modules") or []}
    wanted = [(m, f"Table 2, {ds.upper()}") for m in params.get("baselines") or []]
    wanted += [(f"dipkd-{p}", "Table 3") for p in PAIRS if f"dipkd-{p}" in ran]
    for b, where in wanted:
        if ("dipkd", b, ds, det) in measured:
            continue
        pa, pb = paper_map("dipkd", ds, det), paper_map(b, ds, det)
        if pa is not None and pb is not None:
            out.append(Effect(f"{label('dipkd', params)} - {label(b, params)} ({where}; not run as a pair)", pa - pb,
                              estimate, estimated=True))
    published = paper_values()
    for key, what in (("table4", "tau"), ("table5", "mask rate")):
        values = published[key]
        maps = [v[0] for k, v in values.items() if not (key == "table5" and float(k) == 1.0)]
        out.append(Effect(f"{what}: largest - smallest mAP (Table {key[-1]})",
                          max(maps) - min(maps), estimate, estimated=True))
    t5 = {float(k): v[0] for k, v in published["table5"].items()}
    out.append(Effect("mask rate 0.25 - 1.0 (Table 5)", t5[0.25] - t5[1.0], estimate,
                      estimated=True))
    return out


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=True) if path.is_file() else pd.DataFrame()


def section(params: dict, folder: Path) -> str:
    """The report's section: one row per effect."""
    rows = effects(params, folder)
    if not rows:
        return ""
    frame = pd.DataFrame([{
        "the paper's difference": e.claim, "paper Δ mAP": f"{e.paper:+.1f}",
        "Δ here [95% CI]": e.measured or "not run",
        "half-width here": ("-" if not math.isfinite(e.half_width) else
                            f"{'~' if e.estimated else ''}±{e.half_width:.1f}"),
        "visible here": e.visible} for e in rows])
    return (f"# {TITLE}\n\n{frame.to_markdown(index=False, disable_numparse=True)}\n\n"
            "paper Δ: the difference of the paper's published mAPs (its Tables 1-5). "
            "half-width: of the 95% CI of the same contrast measured here (compare.md, Table "
            "3), the smallest difference this benchmark resolves; ~ (est.): a contrast not "
            "run, given the narrowest half-width measured here between two distilled models. "
            "visible here: yes when the paper's difference is at least that half-width; no: "
            "an effect of the paper's size is below this benchmark's resolution (a true "
            "difference that small would not be told from 0 here).\n\n")
