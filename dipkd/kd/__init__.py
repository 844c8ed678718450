"""Knowledge-distillation losses: DIPKD (SNS, KLD, RIT) and FitNet (Eq. 2)."""
from .dipkd_loss import DIPKDLoss, FitNetLoss


def register() -> None:
    """Register the KD losses in mmdet's MODELS registry (idempotent)."""
    from mmdet.registry import MODELS
    for cls in (DIPKDLoss, FitNetLoss):
        if cls.__name__ not in MODELS.module_dict:
            MODELS.register_module(module=cls)


__all__ = ["DIPKDLoss", "FitNetLoss", "register"]
