"""Baseline KD methods of the paper's Table 2, as KD-loss components of the distiller.

Each module is one method, registered in mmdet's MODELS registry under its class name and
listed in :data:`METHODS` (params.yaml name -> class name). They share the distiller's
interface: ``forward(student_feats, teacher_feats, data_samples, batch_input_shape,
**context) -> dict of named losses`` (see :mod:`dipkd.distill.distiller` for the context).
A new method is one module here, one entry in :data:`LOSSES` and one ``methods.<name>``
entry in params.yaml.
"""
from .arsd import ARSDLoss
from .defeat import DeFeatLoss
from .fgd import FGDLoss
from .fkd import FKDLoss
from .frs import FRSLoss
from .ifkd import IFKDLoss
from .mgd import MGDLoss
from .twa import TWALoss

LOSSES = {"defeat": DeFeatLoss, "fkd": FKDLoss, "frs": FRSLoss, "fgd": FGDLoss,
          "mgd": MGDLoss, "arsd": ARSDLoss, "twa": TWALoss, "ifkd": IFKDLoss}
METHODS = {name: cls.__name__ for name, cls in LOSSES.items()}


def register() -> None:
    from mmdet.registry import MODELS
    for cls in LOSSES.values():
        if cls.__name__ not in MODELS.module_dict:
            MODELS.register_module(module=cls)


__all__ = ["ARSDLoss", "DeFeatLoss", "FGDLoss", "FKDLoss", "FRSLoss", "IFKDLoss", "MGDLoss",
           "TWALoss", "LOSSES", "METHODS", "register"]
