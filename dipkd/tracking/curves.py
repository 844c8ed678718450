"""Training curves of one run for ``dvc plots``: loss and validation mAP per epoch.

mmengine's ``LocalVisBackend`` appends one JSON line per logged step to
``<work_dir>/<timestamp>/vis_data/scalars.json`` (training: ``loss``, ``epoch``, ...;
validation: ``coco/mAP``, ``step`` = epoch). A resumed run writes a new timestamp folder;
the folders are read in order and a later record of an epoch replaces the earlier one (a
killed epoch is trained again from its start).
"""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path


def _records(work_dir: Path):
    for path in sorted(Path(work_dir).glob("*/vis_data/scalars.json")):
        run: dict[int, dict] = {}
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill
            if "loss" in rec and "epoch" in rec:
                run.setdefault(int(rec["epoch"]), {"loss": []})["loss"].append(rec["loss"])
            elif "coco/mAP" in rec:
                run.setdefault(int(rec["step"]), {"loss": []})["mAP"] = rec["coco/mAP"]
        yield run


def training_curves(work_dir: Path) -> list[dict]:
    """``[{"epoch": e, "loss": mean logged loss, "mAP": validation mAP or None}, ...]``."""
    epochs: dict[int, dict] = {}
    for run in _records(work_dir):
        for epoch, rec in run.items():
            merged = epochs.setdefault(epoch, {"loss": [], "mAP": None})
            if rec["loss"]:
                merged["loss"] = rec["loss"]
            if "mAP" in rec:
                merged["mAP"] = rec["mAP"]
    return [{"epoch": e,
             "loss": statistics.fmean(r["loss"]) if r["loss"] else None,
             "mAP": r["mAP"]} for e, r in sorted(epochs.items())]


def write_curves(work_dir: Path, out: Path) -> list[dict]:
    """Write :func:`training_curves` to ``out`` (JSON list, atomically); return it."""
    rows = training_curves(work_dir)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(rows, indent=1))
    os.replace(tmp, out)
    return rows
