"""Knowledge Level Decoupling losses (DIPKD Eq. 11-14).

L_tar  = sum_{k,i,j} M_tar * S * (F^T' - f(F^S'))^2                          (Eq. 11)
L_ntar = sum_{k,i,j} M_bg  * S * (F^T' - f(F^S'))^2                          (Eq. 12)
L_fea  = alpha * L_tar + beta * L_ntar                                        (Eq. 14)

M_tar is the binary target mask over the GT boxes and M_bg the background cells kept by the
random mask (``masks.random_background_mask``). Eq. 8/13 literally put the random n into M
itself; we let the random drop act on the non-target mask only, the reading consistent with
Table 5 (mask rate 100% = only target-level features distilled). The paper does not
normalise the losses; as in FGD the sums run over channels, positions and FPN levels and are
divided by the batch size.
"""
from __future__ import annotations

import torch

from .masks import random_background_mask, target_masks


def kld_level_losses(student: torch.Tensor, teacher: torch.Tensor, gt_boxes, img_shape,
                     mask_rate: float, generator: torch.Generator | None = None):
    """(L_tar, L_ntar) of one FPN level, summed over the batch (not yet divided by N)."""
    tar, scale = target_masks(gt_boxes, img_shape, student.shape[-2:])
    bg = random_background_mask(tar, mask_rate, generator)
    # M and S do not depend on the channel k: sum the squared difference over k first, then
    # weight the (N, 1, H, W) map (the same sums, two full-size passes instead of six).
    sq = (teacher.detach() - student).square().sum(dim=1, keepdim=True)
    return (sq * (tar * scale)).sum(), (sq * (bg * scale)).sum()
