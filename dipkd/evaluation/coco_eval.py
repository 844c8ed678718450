"""COCO bbox evaluation with pycocotools: the twelve numbers of ``COCOeval.stats``.

Names follow the DIPKD paper's Table 1 (``mAP, AP50, AP75, APs, APm, APl, mAR, ARs, ARm,
ARl``; ``mAR`` = AR at 100 detections) plus ``AR1``/``AR10``. Values are fractions in [0, 1];
where pycocotools reports -1 (no ground truth in that size range) the value is ``None``.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

METRIC_NAMES = ("mAP", "AP50", "AP75", "APs", "APm", "APl",
                "AR1", "AR10", "mAR", "ARs", "ARm", "ARl")
TABLE1_METRICS = ("mAP", "AP50", "AP75", "APs", "APm", "APl", "mAR", "ARs", "ARm", "ARl")


def _load_gt(gt) -> COCO:
    if isinstance(gt, COCO):
        return gt
    path = Path(gt)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ground-truth annotation file not found")
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _check(dets: list[dict], coco: COCO) -> None:
    image_ids = set(coco.getImgIds())
    for i, d in enumerate(dets):
        if d["image_id"] not in image_ids:
            raise ValueError(f"detection {i}: image_id {d['image_id']} is not in the ground truth")
        x, y, w, h = d["bbox"]
        if w < 0 or h < 0:
            raise ValueError(f"detection {i}: bbox {d['bbox']} has a negative width or height")


def evaluate_detections(gt, detections: list[dict], verbose: bool = False) -> dict:
    """COCO bbox metrics of ``detections`` (``{image_id, category_id, bbox xywh, score}``)."""
    coco = _load_gt(gt)
    dets = [dict(d, bbox=[float(v) for v in d["bbox"]], score=float(d["score"]))
            for d in detections]
    _check(dets, coco)
    if not dets:
        stats = np.full(len(METRIC_NAMES), -1.0)
        # Defined metrics are 0 when nothing is detected: run COCOeval's bookkeeping on
        # an impossible detection so the undefined (-1) cells stay the same as with results.
        probe = [{"image_id": coco.getImgIds()[0], "category_id": coco.getCatIds()[0],
                  "bbox": [0.0, 0.0, 1e-3, 1e-3], "score": 1e-9}] if coco.getImgIds() else []
        if probe:
            stats = _run(coco, probe, verbose)
            stats = np.where(stats < 0, -1.0, 0.0)
    else:
        stats = _run(coco, dets, verbose)
    return {name: (None if v < 0 else float(v)) for name, v in zip(METRIC_NAMES, stats)}


def _run(coco: COCO, dets: list[dict], verbose: bool) -> np.ndarray:
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        res = coco.loadRes(dets)
        ev = COCOeval(coco, res, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, dtype=float)


def write_metrics_json(path, metrics: dict, extra: dict | None = None) -> None:
    """Write ``{"metrics": metrics, **extra}`` atomically (temp file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"metrics": metrics, **(extra or {})}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
