"""Plain feature imitation (DIPKD Eq. 2, FitNet):
L_fea = 1/(CHW) sum_{k,i,j} (F^T - f_adp(F^S))^2, averaged over the batch, summed over levels."""
from __future__ import annotations

import torch


def feature_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Eq. 2 for one level: mean over C, H, W and the batch."""
    return ((teacher.detach() - student) ** 2).mean()
