"""Table 2 of the paper: KD methods on Faster R-CNN R50 -> R18, mAP and AP50 per dataset.

Rows: the student without KD, each method of ``params['baselines']`` in order, DIPKD last;
the best value of each column in bold (Markdown and LaTeX/booktabs). Methods implemented
with a deviation from their paper carry a footnote.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .common import atomic_write, read_metrics

NAMES = {"student": "Student", "fitnet": "FitNet", "defeat": "DeFeat", "fgd": "FGD",
         "mgd": "MGD", "dipkd": "DIPKD"}
REFS = {"student": "", "fitnet": "arXiv14", "defeat": "CVPR21", "fgd": "CVPR22",
        "mgd": "ECCV22", "dipkd": "AAAI25"}
FOOTNOTES = {"defeat": "neck (feature) part only; DeFeat's RoI-head logit distillation is "
                       "not implemented"}


def collect(params: dict, metrics_dir: Path = Path("metrics")) -> pd.DataFrame:
    det = params["baseline_detector"]
    rows = []
    for method in ["student", *params["baselines"], "dipkd"]:
        group = "student" if method == "student" else f"distilled/{method}"
        name = NAMES.get(method, method) + ("*" if method in FOOTNOTES else "")
        row = {"Method": name, "Ref": REFS.get(method, "")}
        for ds in params["datasets"]:
            m = read_metrics(metrics_dir, group, f"{ds}-{det}")
            for metric in ("mAP", "AP50"):
                v = m[metric]
                row[f"{ds.upper()} {metric}"] = None if v is None else round(100 * v, 1)
        rows.append(row)
    return pd.DataFrame(rows)


def _bold(df: pd.DataFrame, fmt) -> pd.DataFrame:
    out = df.copy().astype(object)
    for col in df.columns[2:]:
        best = df[col].max()
        out[col] = [("-" if pd.isna(v) else fmt(f"{v:.1f}") if v == best else f"{v:.1f}")
                    for v in df[col]]
    return out


def write_table2(df: pd.DataFrame, head: str, params: dict,
                 out_dir: Path = Path("reports")) -> None:
    notes = [f"\\* {FOOTNOTES[m]}." for m in params["baselines"] if m in FOOTNOTES]
    md_df = _bold(df, lambda s: f"**{s}**")
    md = ("# Table 2: KD methods, Faster R-CNN ResNet50 -> ResNet18 (COCO %)\n\n" + head
          + "\n\n" + md_df.to_markdown(index=False) + "\n\n" + "\n".join(notes) + "\n")
    tex_df = _bold(df, lambda s: f"\\textbf{{{s}}}")
    tex = tex_df.to_latex(index=False, escape=False, column_format="ll" + "r" * (len(df.columns) - 2))
    tex = tex.replace("\\toprule", "\\toprule").replace("*", "$^*$")
    tex = f"% {head}\n" + tex + "".join(f"% {n}\n" for n in notes)
    atomic_write(out_dir / "table2.md", md)
    atomic_write(out_dir / "table2.tex", tex)
    atomic_write(out_dir / "table2.csv", df.to_csv(index=False))
