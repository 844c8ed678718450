"""COCO bbox evaluation with pycocotools: the twelve numbers of ``COCOeval.stats``.

Names follow the DIPKD paper's Table 1 (``mAP, AP50, AP75, APs, APm, APl, mAR, ARs, ARm,
ARl``; ``mAR`` = AR at 100 detections) plus ``AR1``/``AR10``. Values are fractions in [0, 1];
where pycocotools reports -1 (no ground truth in that size range) the value is ``None``.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import tempfile
from pathlib import Path

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

#: The twelve ``COCOeval.stats`` in pycocotools' order (``mAR`` is AR@100).
METRIC_NAMES = ("mAP", "AP50", "AP75", "APs", "APm", "APl",
                "AR1", "AR10", "mAR", "ARs", "ARm", "ARl")
#: The columns of the DIPKD paper's Table 1.
TABLE1_METRICS = ("mAP", "AP50", "AP75", "APs", "APm", "APl", "mAR", "ARs", "ARm", "ARl")


def _quiet(verbose: bool):
    return contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())


def _load_gt(gt, verbose: bool = False) -> COCO:
    """``gt`` as a :class:`COCO` object (a path is loaded, a COCO object returned as is)."""
    if isinstance(gt, COCO):
        return gt
    path = Path(gt)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ground-truth annotation file not found")
    with _quiet(verbose):
        return COCO(str(path))


def _normalise(i: int, d: dict, image_ids: set, cat_ids: set) -> dict:
    """A checked copy of detection ``d`` (float bbox/score); ValueError on bad input."""
    missing = {"image_id", "category_id", "bbox", "score"} - set(d)
    if missing:
        raise ValueError(f"detection {i}: missing key(s) {sorted(missing)}")
    if d["image_id"] not in image_ids:
        raise ValueError(f"detection {i}: image_id {d['image_id']} is not in the ground truth")
    if d["category_id"] not in cat_ids:
        raise ValueError(f"detection {i}: category_id {d['category_id']} "
                         f"is not in the ground truth")
    try:
        bbox = [float(v) for v in d["bbox"]]
        score = float(d["score"])
    except (TypeError, ValueError):
        raise ValueError(f"detection {i}: bbox/score are not numbers") from None
    if len(bbox) != 4 or not all(map(math.isfinite, bbox + [score])):
        raise ValueError(f"detection {i}: bbox {d['bbox']} / score {d['score']} "
                         f"is not 4 finite numbers + a finite score")
    if bbox[2] < 0 or bbox[3] < 0:
        raise ValueError(f"detection {i}: bbox {d['bbox']} has a negative width or height")
    return dict(d, bbox=bbox, score=score)


def _empty_results(coco: COCO) -> COCO:
    """A result object without detections (``COCO.loadRes`` cannot take an empty list)."""
    res = COCO()
    res.dataset = {"info": copy.deepcopy(coco.dataset.get("info", {})),
                   "images": list(coco.dataset.get("images", [])),
                   "categories": copy.deepcopy(coco.dataset.get("categories", [])),
                   "annotations": []}
    res.createIndex()
    return res


def evaluate_detections(gt, detections: list[dict], verbose: bool = False) -> dict:
    """COCO bbox metrics of ``detections`` against ``gt`` (json path or :class:`COCO`).

    ``detections``: dicts ``{image_id, category_id, bbox: [x, y, w, h], score}``. Returns
    ``{name: fraction or None}`` for :data:`METRIC_NAMES`, in that order; ``None`` where
    pycocotools reports -1. An empty list gives 0.0 for every defined metric. Raises
    ValueError for an unknown image/category id, a negative width/height or non-numbers.
    """
    coco = _load_gt(gt, verbose)
    image_ids, cat_ids = set(coco.getImgIds()), set(coco.getCatIds())
    dets = [_normalise(i, d, image_ids, cat_ids) for i, d in enumerate(detections)]
    with _quiet(verbose):
        res = coco.loadRes(dets) if dets else _empty_results(coco)
        ev = COCOeval(coco, res, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: (None if v < 0 else float(v)) for name, v in zip(METRIC_NAMES, ev.stats)}


def write_metrics_json(path, metrics: dict, extra: dict | None = None) -> None:
    """Write ``{"metrics": metrics, **extra}`` to ``path`` atomically (sorted keys, indent 2)."""
    write_json_atomic(path, {"metrics": metrics, **(extra or {})}, indent=2)


def write_json_atomic(path, payload, indent: int | None = None) -> None:
    """Write ``payload`` as JSON to ``path`` atomically: temp file in the same directory,
    then ``os.replace``; sorted keys. Parent directories are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=indent, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
