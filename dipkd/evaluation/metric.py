"""``SARCocoMetric``: mmengine metric that evaluates detections with :mod:`coco_eval`.

Used as mmdet ``val_evaluator``/``test_evaluator``; gives ``coco/mAP``, ``coco/AP50``, ...
(the twelve COCO numbers; undefined ones, e.g. APl without large ships, are left out because
mmengine's logger cannot format ``None``). Importable without mmdet; call
:func:`register_metric` to make ``type='SARCocoMetric'`` resolvable in mmdet configs.
"""
from __future__ import annotations

import numpy as np
from mmengine.evaluator import BaseMetric

from .coco_eval import _load_gt, evaluate_detections, write_json_atomic


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, possibly on GPU
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class SARCocoMetric(BaseMetric):
    """COCO bbox metric over mmdet 3.x predictions, evaluated against ``ann_file``.

    Labels are 0-based indices into the GT json's sorted category ids; boxes are xyxy in
    original image coordinates (mmdet's ``rescale=True`` output).
    """

    default_prefix = "coco"

    def __init__(self, ann_file: str, prefix: str | None = "coco",
                 collect_device: str = "cpu", collect_dir: str | None = None,
                 detections_out: str | None = None) -> None:
        # collect_dir: where the ranks of a multi-process run pool their results (mmengine
        # otherwise makes a temporary dir under ./.dist_test); unused in one process.
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        self.ann_file = ann_file
        self.detections_out = detections_out   # also write the detections (COCO results)
        self._coco = None
        self._cat_ids = None

    @property
    def coco(self):
        """The ground truth, loaded on first use."""
        if self._coco is None:
            self._coco = _load_gt(self.ann_file)
            self._cat_ids = sorted(self._coco.getCatIds())
        return self._coco

    def process(self, data_batch, data_samples) -> None:
        """Store one entry per image: its COCO-format detections (xywh, GT category id)."""
        self.coco  # loads the GT and its sorted category ids once
        cat_ids = self._cat_ids
        for sample in data_samples:
            pred = sample["pred_instances"]
            boxes = _numpy(pred["bboxes"]).reshape(-1, 4).astype(float)
            scores = _numpy(pred["scores"]).reshape(-1)
            labels = _numpy(pred["labels"]).reshape(-1).astype(int)
            if labels.size and (labels.min() < 0 or labels.max() >= len(cat_ids)):
                raise ValueError(f"image {sample['img_id']}: label {labels.max()} outside the "
                                 f"{len(cat_ids)} categories of {self.ann_file}")
            image_id = int(sample["img_id"])
            # One results entry per image: mmengine's collect_results truncates the list
            # to the dataset size (and drops distributed padding by position).
            self.results.append([
                {"image_id": image_id, "category_id": cat_ids[label],
                 "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)}
                for (x1, y1, x2, y2), score, label in zip(boxes.tolist(), scores, labels)])

    def compute_metrics(self, results: list) -> dict:
        """The defined COCO metrics (``None`` values dropped) of all collected images."""
        detections = [d for per_image in results for d in per_image]
        metrics = evaluate_detections(self.coco, detections)
        if self.detections_out:
            write_json_atomic(self.detections_out, detections)
        return {k: v for k, v in metrics.items() if v is not None}


def register_metric() -> None:
    """Register :class:`SARCocoMetric` in mmdet's ``METRICS`` registry (idempotent).

    Imports mmdet, so call it only where mmdet is installed (e.g. via ``custom_imports``).
    """
    from mmdet.registry import METRICS
    if "SARCocoMetric" not in METRICS.module_dict:
        METRICS.register_module(name="SARCocoMetric", module=SARCocoMetric, force=False)
