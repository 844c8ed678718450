"""The data: each configured dataset's layout under ``data/<dataset>`` beside the params file
(where the ``prepare`` stage writes it), checked as training checks it
(:func:`dipkd.datasets.coco_layout.validate_layout`: annotation files, every listed image
present and decodable).

An absent dataset is a FAIL, not a SKIP: a training run needs it. Its line says how to make
it: ``dvc repro prepare@<dataset>``, or without DVC ``python -m pipeline.prepare_data
--dataset <dataset>``.
"""
from __future__ import annotations

import json
from pathlib import Path

from .core import Check, CheckFailed, Context
from ..datasets.coco_layout import SPLITS


def dataset_root(ctx: Context, dataset: str) -> Path:
    """``data/<dataset>`` under the folder of the params file."""
    return ctx.base / "data" / dataset


def counts(root: Path) -> str:
    """``N train / M test images, K boxes`` of a valid layout."""
    images, boxes = {}, 0
    for split in SPLITS:
        coco = json.loads((root / "annotations" / f"{split}.json").read_text())
        images[split] = len(coco["images"])
        boxes += len(coco.get("annotations", []))
    return " / ".join(f"{n} {s}" for s, n in images.items()) + f" images, {boxes} boxes"


def data_check(dataset: str) -> Check:
    """The ``data <dataset>`` check."""
    def run(ctx: Context) -> str:
        from ..datasets.coco_layout import validate_layout
        root = dataset_root(ctx, dataset)
        if not root.is_dir():
            raise CheckFailed(f"{root}: not found; run `dvc repro prepare@{dataset}` (or "
                              f"`python -m pipeline.prepare_data --dataset {dataset}`) first")
        try:
            validate_layout(root)
        except (FileNotFoundError, ValueError) as exc:
            raise CheckFailed(str(exc)) from None
        return f"{root}: {counts(root)}"
    return Check(f"data {dataset}", run, needs_device=False)


def checks(params: dict) -> list[Check]:
    return [data_check(ds) for ds in params["datasets"]]
