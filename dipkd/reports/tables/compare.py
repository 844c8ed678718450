"""The paired comparisons of ``params.yaml``'s ``compare`` (:mod:`dipkd.reports.pairs`) as a
table: ``reports/tables/compare.{md,tex,csv}``, not one of the paper's.

One row per comparison and dataset/detector: each pair's names vs the student first, then the
pairs; columns Δ mAP (a minus b) with its 95% CI, the CI's half-width, and the shares of its
variance that come from seeds and from test images (two one-factor bootstraps,
:func:`dipkd.evaluation.bootstrap.variance_split`). The CSV has the numbers: ``mAP_delta``,
``mAP_ci_low``, ``mAP_ci_high``, ``mAP_half_width``, ``var_seeds``, ``var_images`` (pp^2),
``seed_share``, ``image_share``, ``n_seeds``, ``n_images``.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ...config.params import ParamsError, parse_modules
from ...evaluation.bootstrap import RESAMPLES
from ...kd.methods import display_name
from ...models.detectors import display_name as detector_display_name
from ..common import PaperTable, TABLES_DIR, atomic_write
from ..pairs import METRIC, STUDENT, TABLE_NAME, Comparison, compare_runs, run_groups, planned
from ..render import DASH, SIGNIFICANT, _tex, delta_text

TITLE = "Paired comparisons: Δ mAP of a over b on the same test images and seeds"
DELTA_COLUMN = f"Δ {METRIC} (a - b) [95% CI]"
NOTE = (f"Δ: a minus b, percentage points, runs paired by seed on the same test images; [95% "
        f"CI] from the paired bootstrap of the tables' Δ vs student ({RESAMPLES} resamples, "
        f"seeded; with several seeds: seeds, then images); {SIGNIFICANT} = the interval "
        f"excludes 0. half-width: half the CI's width, the smallest difference this benchmark "
        f"resolves. from seeds / from images: the shares of the CI's variance from the seeds "
        f"and from the test images (bootstrap variances of Δ with only the seeds resampled, "
        f"the images fixed, and with only the images resampled, every seed kept; {DASH} with "
        f"one seed). Pairs: params.yaml `compare`; each name also vs the student.")


def label(name: str, params: dict) -> str:
    """A run group's name in every report (this table, the study's resolution section): the
    method's display name, ``Student``, ``DIPKD (KLD+RIT only)`` for a Table 3 module row, or
    ``<method> (<variant>)`` for another variant (``DIPKD (inheritfalse)``)."""
    method, _, variant = name.partition("-")
    if name == STUDENT or name in params.get("methods", {}) or not variant:
        return display_name(name, params)
    try:
        modules = "+".join(m.upper() for m, on in parse_modules(variant).items() if on)
    except ParamsError:
        modules = ""
    return f"{display_name(method, params)} ({f'{modules} only' if modules else variant})"


def runs(params: dict) -> list:
    groups = run_groups(params)
    return [spec for a, b, cell, _ in planned(params, groups)
            for name in (a, b) for spec in groups[name][cell]]


def collect(params: dict, metrics_dir: Path = Path("metrics")) -> list[Comparison]:
    return compare_runs(params, Path(metrics_dir).parent)


def _share(value: float) -> str:
    return DASH if not math.isfinite(value) else f"{100 * value:.0f}%"


def _r(value: float, digits: int = 2):
    return round(value, digits) if math.isfinite(value) else None


def display_frame(rows: list[Comparison], params: dict) -> pd.DataFrame:
    return pd.DataFrame([{
        "Dataset": c.dataset.upper(), "Detector": detector_display_name(c.detector),
        "a": label(c.a, params), "b": label(c.b, params),
        DELTA_COLUMN: delta_text(c.delta),
        "half-width": DASH if not math.isfinite(c.half_width) else f"±{c.half_width:.1f}",
        "from seeds": _share(c.split.share("seeds")),
        "from images": _share(c.split.share("images")),
        "seeds x test images": f"{c.n_seeds} x {c.n_images}"} for c in rows],
        columns=["Dataset", "Detector", "a", "b", DELTA_COLUMN, "half-width", "from seeds",
                 "from images", "seeds x test images"])


def csv_frame(rows: list[Comparison], params: dict) -> pd.DataFrame:
    return pd.DataFrame([{
        "Dataset": c.dataset, "Detector": c.detector, "a": c.a, "b": c.b,
        "a_label": label(c.a, params), "b_label": label(c.b, params), "named": c.named,
        "n_seeds": c.n_seeds, "n_images": c.n_images,
        f"{METRIC}_delta": _r(c.delta.delta), f"{METRIC}_ci_low": _r(c.delta.ci_low),
        f"{METRIC}_ci_high": _r(c.delta.ci_high), f"{METRIC}_half_width": _r(c.half_width),
        "var_seeds": _r(c.split.seeds, 3), "var_images": _r(c.split.images, 3),
        "seed_share": _r(c.split.share("seeds"), 3),
        "image_share": _r(c.split.share("images"), 3)} for c in rows],
        columns=["Dataset", "Detector", "a", "b", "a_label", "b_label", "named", "n_seeds",
                 "n_images", f"{METRIC}_delta", f"{METRIC}_ci_low", f"{METRIC}_ci_high",
                 f"{METRIC}_half_width", "var_seeds", "var_images", "seed_share",
                 "image_share"])


def write_compare(rows: list[Comparison], head: str, params: dict,
                  out_dir: Path = TABLES_DIR) -> None:
    """``compare.md``, ``compare.tex`` and ``compare.csv`` in ``out_dir``."""
    frame = display_frame(rows, params)
    body = frame.to_markdown(index=False) if rows else "No pairs (params.yaml `compare`)."
    atomic_write(out_dir / f"{TABLE_NAME}.md", f"# {TITLE}\n\n{head}\n\n{body}\n\n{NOTE}\n")
    tex = frame.map(lambda v: _tex(v.replace("±", "$\\pm$")) if isinstance(v, str) else v)
    tex.columns = [_tex(c) for c in tex.columns]
    atomic_write(out_dir / f"{TABLE_NAME}.tex",
                 f"% {TITLE}\n% {head}\n" + tex.to_latex(index=False, escape=False)
                 + f"% {NOTE}\n")
    atomic_write(out_dir / f"{TABLE_NAME}.csv", csv_frame(rows, params).to_csv(index=False))


TABLE = PaperTable(TABLE_NAME, runs, collect, write_compare)
