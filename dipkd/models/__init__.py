"""Detector definitions (mmdet config dicts)."""
from .detectors import backbone_cfg, detector_cfg

__all__ = ["backbone_cfg", "detector_cfg"]
