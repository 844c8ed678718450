"""Table 3 of the paper: DIPKD's modules (SNS, KLD, RIT) switched on and off, on one dataset
and detector (``params['ablation']``; the paper: SSDD, Faster R-CNN), mAP, APs, APm, APl.

Rows in the paper's order. The "none" row is the student run and the all-modules row the
DIPKD run of Table 1 (run once, shared); the other rows are the ``ablation@<modules>-<seed>``
runs listed in ``ablation.modules``.
"""
from __future__ import annotations

from pathlib import Path

from ...config.params import DIPKD_MODULES, distill_spec, modules_name, parse_modules
from ...models.detectors import display_name as detector_display_name
from ..common import PaperTable, TABLES_DIR, paper_values, read_seeds
from ..render import Row, write_table
from ..deltas import delta_vs_student
from .table1 import specs_for

METRICS = ("mAP", "APs", "APm", "APl")
# The paper's row order: none, each module alone, pairs, all.
ORDER = ("none", "sns", "kld", "rit", "sns_kld", "sns_rit", "kld_rit", "sns_kld_rit")
TITLE = "Table 3: DIPKD modules ablation, {detector} ResNet50 -> ResNet18 on {dataset} (COCO %)"


def _specs(params: dict, modules: str, default: str) -> list:
    ab = params["ablation"]
    if modules == "none":
        return specs_for(params, "student", ab["dataset"], ab["detector"])
    if modules == default:
        return specs_for(params, "distilled/dipkd", ab["dataset"], ab["detector"])
    return [distill_spec(params, "dipkd", ab["dataset"], ab["detector"], s,
                         parse_modules(modules)) for s in params["seeds"]]


def _module_sets(params: dict) -> tuple[str, list[str]]:
    """(the default modules, every row's modules in the paper's order)."""
    default = modules_name({m: params["methods"]["dipkd"].get(m, True) for m in DIPKD_MODULES})
    return default, sorted({"none", default, *params["ablation"]["modules"]}, key=ORDER.index)


def runs(params: dict) -> list:
    default, module_sets = _module_sets(params)
    return [spec for modules in module_sets for spec in _specs(params, modules, default)]


def collect(params: dict, metrics_dir: Path = Path("metrics")) -> list[Row]:
    default, module_sets = _module_sets(params)
    published = paper_values()["table3"]
    rows = []
    for modules in module_sets:
        on = parse_modules(modules)
        paper = published.get(" ".join(str(int(on[m])) for m in DIPKD_MODULES))
        specs = _specs(params, modules, default)
        seeds = read_seeds(metrics_dir, specs, METRICS)   # a missing run: error first
        delta = ({} if modules == "none" else
                 delta_vs_student(specs, _specs(params, "none", default), ("mAP",),
                                  Path(metrics_dir).parent))
        rows.append(Row(labels={m.upper(): "✓" if on[m] else "-" for m in DIPKD_MODULES},
                        seeds=seeds, paper=dict(zip(METRICS, paper)) if paper else {},
                        delta=delta))
    return rows


def write_table3(rows: list[Row], head: str, params: dict,
                 out_dir: Path = TABLES_DIR) -> None:
    ab = params["ablation"]
    title = TITLE.format(detector=detector_display_name(ab["detector"]),
                         dataset=ab["dataset"].upper())
    write_table("table3", title, head, rows, METRICS, out_dir=out_dir)


TABLE = PaperTable("table3", runs, collect, write_table3)
