"""Render a paper-style table (Markdown, LaTeX/booktabs, CSV) with ours next to the paper's.

A table is a list of :class:`Row`: label columns (dataset, model, ...), our per-seed values
of each metric and the paper's published value. Every row is shown as three lines: ours
(mean, or mean +- sample std over the seeds when there is more than one), the paper's value,
and the difference ours - paper. The best "ours" value of each metric column is bold, within
each group of rows sharing the ``group_by`` labels (Table 1 compares models of one dataset
and detector; the other tables compare all their rows). The CSV has one line per row:
``<metric>``, ``<metric>_std``, ``<metric>_paper``, ``<metric>_diff`` and ``n_seeds``.

Distilled rows also carry "Δ vs student" of some metrics (``Row.delta``: the paired
bootstrap of :mod:`dipkd.evaluation.bootstrap`): a column ``Δ <metric> [95% CI]`` on the
"ours" line, ``+1.2 [+0.3, +2.1]†`` with † where the interval excludes 0, and in the CSV
``<metric>_delta``, ``<metric>_ci_low``, ``<metric>_ci_high``.
"""
from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .common import TABLES_DIR, atomic_write

DASH = "-"


@dataclass
class Row:
    labels: dict                                 # column -> text
    seeds: dict                                  # metric -> per-seed values in % (None: n/a)
    paper: dict = field(default_factory=dict)    # metric -> published value in % (or None)
    delta: dict = field(default_factory=dict)    # metric -> Delta vs the student (distilled)

    def stats(self, metric: str) -> tuple[float | None, float | None]:
        """Mean and sample std (None with one seed) of the seeds that have a value."""
        vals = [v for v in self.seeds.get(metric, []) if v is not None]
        if not vals:
            return None, None
        mean = statistics.fmean(vals)
        return mean, (statistics.stdev(vals) if len(vals) > 1 else None)


def _fmt(v: float | None) -> str:
    return DASH if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


def _best(rows: list[Row], metrics, group_by) -> set[tuple[int, str]]:
    """(row index, metric) of the best mean per metric within each group of rows."""
    best = set()
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(tuple(row.labels.get(c) for c in group_by), []).append(i)
    for members in groups.values():
        for m in metrics:
            means = {i: rows[i].stats(m)[0] for i in members}
            top = max((v for v in means.values() if v is not None), default=None)
            if top is None or len(members) < 2:
                continue
            best |= {(i, m) for i, v in means.items() if v is not None and round(v, 1) ==
                     round(top, 1)}
    return best


SIGNIFICANT = "†"
DELTA_NOTE = ("Δ vs student: distilled minus student, percentage points, on the same test "
              "images; [95% CI] from a paired bootstrap over the test images (1000 resamples, "
              "seeded; with several seeds: seeds, then images); † = the interval excludes 0.")


def delta_text(d) -> str:
    """``+1.2 [+0.3, +2.1]†`` (percentage points; † when the 95% CI excludes 0)."""
    if d is None or not math.isfinite(d.delta):
        return DASH
    return (f"{d.delta:+.1f} [{d.ci_low:+.1f}, {d.ci_high:+.1f}]"
            + (SIGNIFICANT if d.significant else ""))


def delta_columns(rows: list[Row], metrics) -> list[str]:
    """The metrics some row has a Δ for, in the table's column order."""
    return [m for m in metrics if any(m in r.delta for r in rows)]


def display_frame(rows: list[Row], metrics, bold, group_by=()) -> pd.DataFrame:
    """The three display lines per row; ``bold(text)`` marks the best values."""
    best = _best(rows, metrics, group_by)
    label_cols = list(rows[0].labels) if rows else []
    deltas = delta_columns(rows, metrics)
    lines = []
    for i, row in enumerate(rows):
        ours, paper, diff = dict(row.labels), {c: "" for c in label_cols}, \
            {c: "" for c in label_cols}
        ours[""], paper[""], diff[""] = "ours", "paper", "diff"
        for m in metrics:
            mean, std = row.stats(m)
            text = _fmt(mean) + (f" ± {std:.1f}" if std is not None else "")
            ours[m] = bold(text) if (i, m) in best else text
            p = row.paper.get(m)
            paper[m] = _fmt(p)
            diff[m] = DASH if mean is None or p is None else f"{round(mean, 1) - p:+.1f}"
        for m in deltas:
            col = f"Δ {m} vs student [95% CI]"
            ours[col] = delta_text(row.delta.get(m)) if m in row.delta else ""
            paper[col] = diff[col] = ""
        lines += [ours, paper, diff]
    return pd.DataFrame(lines, columns=[*label_cols, "", *metrics,
                                        *(f"Δ {m} vs student [95% CI]" for m in deltas)])


def csv_frame(rows: list[Row], metrics) -> pd.DataFrame:
    deltas = delta_columns(rows, metrics)
    out = []
    for row in rows:
        line = dict(row.labels)
        line["n_seeds"] = max((len(v) for v in row.seeds.values()), default=0)
        for m in metrics:
            mean, std = row.stats(m)
            p = row.paper.get(m)
            line[m] = None if mean is None else round(mean, 2)
            line[f"{m}_std"] = None if std is None else round(std, 2)
            line[f"{m}_paper"] = p
            line[f"{m}_diff"] = None if mean is None or p is None else round(mean - p, 2)
            if m in deltas:
                d = row.delta.get(m)
                ok = d is not None and math.isfinite(d.delta)
                line[f"{m}_delta"] = round(d.delta, 2) if ok else None
                line[f"{m}_ci_low"] = round(d.ci_low, 2) if ok else None
                line[f"{m}_ci_high"] = round(d.ci_high, 2) if ok else None
        out.append(line)
    return pd.DataFrame(out)


def _tex(text: str) -> str:
    return (text.replace("Δ", "$\\Delta$").replace(SIGNIFICANT, "$^\\dagger$")
            .replace("%", "\\%"))


def write_table(name: str, title: str, head: str, rows: list[Row], metrics, *,
                group_by=(), notes=(), out_dir: Path = TABLES_DIR) -> None:
    """Write ``<name>.md``, ``<name>.tex`` and ``<name>.csv`` into ``out_dir``."""
    metrics = list(metrics)
    md_df = display_frame(rows, metrics, lambda s: f"**{s}**", group_by)
    if delta_columns(rows, metrics):
        notes = [*notes, DELTA_NOTE]
    notes_md = "".join(f"\n{n}\n" for n in notes)
    md = (f"# {title}\n\n{head}\n\n" + md_df.to_markdown(index=False) + "\n" + notes_md)
    tex_df = display_frame(rows, metrics, lambda s: f"\\textbf{{{s}}}", group_by)
    tex_df = tex_df.map(lambda v: _tex(re.sub(r"\*+", lambda m: f"$^{{{m.group()}}}$",
                                              v.replace("±", "$\\pm$")))
                        if isinstance(v, str) else v)
    tex_df.columns = [_tex(c.replace("_", "\\_")) for c in tex_df.columns]
    n_labels = len(rows[0].labels) + 1 if rows else 1
    tex = tex_df.to_latex(index=False, escape=False,
                          column_format="l" * n_labels + "r" * (len(tex_df.columns)
                                                                 - n_labels))
    tex = (f"% {title}\n% {head}\n" + tex + "".join(f"% {n}\n" for n in notes))
    atomic_write(out_dir / f"{name}.md", md)
    atomic_write(out_dir / f"{name}.tex", tex)
    atomic_write(out_dir / f"{name}.csv", csv_frame(rows, metrics).to_csv(index=False))
