"""Baseline KD methods of the paper's Table 2, as KD-loss components of the distiller.

Each module is one method: one class registered in mmdet's MODELS registry by its
decorator, carrying its name, venue, reference and deviation footnote
(:class:`dipkd.kd.methods.KDMethod`). They share the distiller's interface:
``forward(student_feats, teacher_feats, data_samples, batch_input_shape, **context) -> dict
of named losses`` (see :mod:`dipkd.distill.distiller` for the context). A new method is one
module here (imported below) and one ``methods.<name>`` entry with its ``type`` in
params.yaml.
"""
from .arsd import ARSDLoss
from .defeat import DeFeatLoss
from .fgd import FGDLoss
from .fkd import FKDLoss
from .frs import FRSLoss
from .ifkd import IFKDLoss
from .mgd import MGDLoss
from .twa import TWALoss

__all__ = ["ARSDLoss", "DeFeatLoss", "FGDLoss", "FKDLoss", "FRSLoss", "IFKDLoss", "MGDLoss",
           "TWALoss"]
