"""Render a paper-style table (Markdown, LaTeX/booktabs, CSV) with ours next to the paper's.

A table is a list of :class:`Row`: label columns (dataset, model, ...), our per-seed values
of each metric and the paper's published value. Every row is shown as three lines: ours
(mean, or mean +- sample std over the seeds when there is more than one), the paper's value,
and the difference ours - paper. The best "ours" value of each metric column is bold, within
each group of rows sharing the ``group_by`` labels (Table 1 compares models of one dataset
and detector; the other tables compare all their rows). The CSV has one line per row:
``<metric>``, ``<metric>_std``, ``<metric>_paper``, ``<metric>_diff`` and ``n_seeds``.
"""
from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .common import atomic_write

DASH = "-"


@dataclass
class Row:
    labels: dict                                 # column -> text
    seeds: dict                                  # metric -> per-seed values in % (None: n/a)
    paper: dict = field(default_factory=dict)    # metric -> published value in % (or None)

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


def display_frame(rows: list[Row], metrics, bold, group_by=()) -> pd.DataFrame:
    """The three display lines per row; ``bold(text)`` marks the best values."""
    best = _best(rows, metrics, group_by)
    label_cols = list(rows[0].labels) if rows else []
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
        lines += [ours, paper, diff]
    return pd.DataFrame(lines, columns=[*label_cols, "", *metrics])


def csv_frame(rows: list[Row], metrics) -> pd.DataFrame:
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
        out.append(line)
    return pd.DataFrame(out)


def write_table(name: str, title: str, head: str, rows: list[Row], metrics, *,
                group_by=(), notes=(), out_dir: Path = Path("reports")) -> None:
    """Write ``<name>.md``, ``<name>.tex`` and ``<name>.csv`` into ``out_dir``."""
    metrics = list(metrics)
    md_df = display_frame(rows, metrics, lambda s: f"**{s}**", group_by)
    notes_md = "".join(f"\n{n}\n" for n in notes)
    md = (f"# {title}\n\n{head}\n\n" + md_df.to_markdown(index=False) + "\n" + notes_md)
    tex_df = display_frame(rows, metrics, lambda s: f"\\textbf{{{s}}}", group_by)
    tex_df = tex_df.map(lambda v: re.sub(r"\*+", lambda m: f"$^{{{m.group()}}}$",
                                         v.replace("±", "$\\pm$"))
                        if isinstance(v, str) else v)
    tex_df.columns = [c.replace("_", "\\_") for c in tex_df.columns]
    n_labels = len(rows[0].labels) + 1 if rows else 1
    tex = tex_df.to_latex(index=False, escape=False,
                          column_format="l" * n_labels + "r" * len(metrics))
    tex = (f"% {title}\n% {head}\n" + tex + "".join(f"% {n}\n" for n in notes))
    atomic_write(out_dir / f"{name}.md", md)
    atomic_write(out_dir / f"{name}.tex", tex)
    atomic_write(out_dir / f"{name}.csv", csv_frame(rows, metrics).to_csv(index=False))
