"""Knowledge-distillation losses: DIPKD (SNS, KLD, RIT) and FitNet (Eq. 2), registered in
mmdet's MODELS registry on import; KD methods by name: :mod:`dipkd.kd.methods`."""
from .dipkd_loss import DIPKDLoss, FitNetLoss
from .methods import KDMethod

__all__ = ["DIPKDLoss", "FitNetLoss", "KDMethod"]
