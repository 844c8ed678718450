"""``SARCocoMetric``: mmengine metric that evaluates detections with :mod:`coco_eval`.

Used as mmdet ``val_evaluator``/``test_evaluator``; gives ``coco/mAP``, ``coco/AP50``, ...
(the twelve COCO numbers; undefined ones, e.g. APl without large ships, are left out because
mmengine's logger cannot format ``None``).
"""
from __future__ import annotations

from mmengine.evaluator import BaseMetric

from .coco_eval import _load_gt, evaluate_detections


class SARCocoMetric(BaseMetric):
    default_prefix = "coco"

    def __init__(self, ann_file: str, prefix: str | None = None,
                 collect_device: str = "cpu") -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.ann_file = ann_file
        self._coco = None

    @property
    def coco(self):
        if self._coco is None:
            self._coco = _load_gt(self.ann_file)
        return self._coco

    def process(self, data_batch, data_samples) -> None:
        cat_ids = sorted(self.coco.getCatIds())
        for sample in data_samples:
            pred = sample["pred_instances"]
            boxes = pred["bboxes"].detach().cpu().numpy()
            scores = pred["scores"].detach().cpu().numpy()
            labels = pred["labels"].detach().cpu().numpy()
            for (x1, y1, x2, y2), score, label in zip(boxes, scores, labels):
                self.results.append({"image_id": int(sample["img_id"]),
                                     "category_id": cat_ids[int(label)],
                                     "bbox": [float(x1), float(y1), float(x2 - x1),
                                              float(y2 - y1)],
                                     "score": float(score)})

    def compute_metrics(self, results: list) -> dict:
        metrics = evaluate_detections(self.coco, results)
        return {k: v for k, v in metrics.items() if v is not None}


def register_metric() -> None:
    """Register :class:`SARCocoMetric` in mmdet's METRICS registry (idempotent)."""
    from mmdet.registry import METRICS
    if "SARCocoMetric" not in METRICS.module_dict:
        METRICS.register_module(module=SARCocoMetric)
