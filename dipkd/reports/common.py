"""Shared pieces of the report tables: reading metrics files, the header line, writing."""
from __future__ import annotations

import json
import math
import os
from functools import lru_cache
from pathlib import Path

from collections.abc import Callable
from dataclasses import dataclass

import yaml

from ..config.params import run_spec, teacher_seed

PAPER_VALUES = Path(__file__).with_name("paper_values.yaml")
TABLES_DIR = Path("reports") / "tables"     # the tables stage's one output directory


@dataclass(frozen=True)
class PaperTable:
    """What every table module offers (the ``TABLE`` of ``table1``, ...; the list of them
    is :data:`dipkd.reports.tables.TABLES`): its name (``reports/tables/<name>.{md,tex,csv}``),
    the runs it reads, its rows from their metrics files, and how it is written."""

    name: str
    runs: Callable            # (params) -> list[RunSpec]
    collect: Callable         # (params, metrics_dir=Path("metrics")) -> list[Row]
    write: Callable           # (rows, head, params, out_dir=TABLES_DIR) -> None


def read_metrics(metrics_dir: Path, group: str, key: str) -> dict:
    """The metrics of ``metrics/<group>/<key>.json``; a missing run is an error, never a
    blank or a made-up number."""
    path = Path(metrics_dir) / group / f"{key}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics for {group} {key}; run its training "
                                "stage first (it tests the model)")
    return json.loads(path.read_text())["metrics"]


def read_seeds(metrics_dir: Path, specs, metrics) -> dict:
    """``{metric: [value in % or None per seed]}`` from the metrics files of ``specs`` (the
    same run repeated per seed; each spec's ``metrics_path`` under ``metrics_dir``)."""
    out = {m: [] for m in metrics}
    for spec in specs:
        rel = spec.metrics_path.relative_to("metrics")
        values = read_metrics(metrics_dir, str(rel.parent), rel.stem)
        for m in metrics:
            v = values[m]
            out[m].append(None if v is None else 100.0 * v)
    return out


@lru_cache(maxsize=1)
def paper_values() -> dict:
    """The paper's published numbers (``paper_values.yaml``, typed from the paper)."""
    return yaml.safe_load(PAPER_VALUES.read_text())


def _train_images(metrics_dir: Path, dataset: str) -> int | None:
    """Training images of a prepared dataset (its summary ``metrics/data/<ds>.json``)."""
    path = Path(metrics_dir) / "data" / f"{dataset}.json"
    try:
        return int(json.loads(path.read_text())["metrics"]["train"]["images"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def header(params: dict, commit: str, metrics_dir: Path = Path("metrics")) -> str:
    """The line under every table's title: profile, data, seeds, schedule (epochs and, when
    the dataset summary exists, iterations), commit."""
    prof = params["profile"]
    sources = sorted({f"{ds}: {params['data'][ds]['source']}"
                      + (f" ({params['data'][ds].get('preset')})"
                         if params['data'][ds]['source'] == 'synthetic' else "")
                      for ds in params["datasets"]})
    schedule = []
    for det in params["detectors"]:
        for ds in params["datasets"]:
            student = run_spec(params, "student", ds, det)      # the typed schedule
            epochs, batch = student.schedule.epochs, student.train.batch_size
            images = _train_images(metrics_dir, ds)
            iters = (f" (~{epochs * math.ceil(images / batch)} it: {images} train images, "
                     f"batch {batch})" if images else "")
            schedule.append(f"{det}/{ds} {epochs} ep{iters}")
    note = " Smoke profile: these numbers only prove the plumbing." if prof == "smoke" else ""
    seeds = params["seeds"]
    seed_text = (f"seed {seeds[0]} (one run per cell)" if len(seeds) == 1 else
                 f"{len(seeds)} seeds {seeds} (cells: mean ± sample std)")
    seed_text += f"; one teacher per dataset and detector (teacher seed {teacher_seed(params)})"
    return (f"Profile `{prof}`; data {'; '.join(sources)}; {seed_text}; "
            f"schedule {', '.join(sorted(schedule))}; commit `{commit[:12]}`. COCO bbox "
            f"metrics (pycocotools, maxDets 100; at most 100 detections per image, so equal to "
            f"mmdet's maxDets 1000).{note}")


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
