"""Baseline KD methods of the paper's Table 2, as KD-loss components of the distiller.

Each module is one method, registered in mmdet's MODELS registry under its class name and
listed in :data:`METHODS` (params.yaml name -> class). They share the distiller's interface:
``forward(student_feats, teacher_feats, data_samples, batch_input_shape,
student_cls_scores) -> dict of named losses``.
"""
from .defeat import DeFeatLoss
from .fgd import FGDLoss
from .mgd import MGDLoss

METHODS = {"fgd": "FGDLoss", "mgd": "MGDLoss", "defeat": "DeFeatLoss"}


def register() -> None:
    from mmdet.registry import MODELS
    for cls in (FGDLoss, MGDLoss, DeFeatLoss):
        if cls.__name__ not in MODELS.module_dict:
            MODELS.register_module(module=cls)


__all__ = ["DeFeatLoss", "FGDLoss", "MGDLoss", "METHODS", "register"]
