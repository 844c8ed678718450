"""COCO evaluation (pycocotools) and its mmengine metric.

The metric lives in :mod:`dipkd.evaluation.metric` (imports mmengine, not mmdet).
"""
from .coco_eval import METRIC_NAMES, TABLE1_METRICS, evaluate_detections, write_metrics_json

__all__ = ["METRIC_NAMES", "TABLE1_METRICS", "evaluate_detections", "write_metrics_json"]
