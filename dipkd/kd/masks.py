"""Target / background masks of Knowledge Level Decoupling (DIPKD Eq. 8-10).

Box projection (FGD's convention): a GT box (x1, y1, x2, y2) in input pixels covers the
feature cells rows [floor(y1*H/H_in), ceil(y2*H/H_in)) and columns
[floor(x1*W/W_in), ceil(x2*W/W_in)), clamped to the map; every box covers at least one cell.
(H_in, W_in) is the padded batch input shape, so the stride is H_in/H.
"""
from __future__ import annotations

import math

import torch


def _cells(lo: float, hi: float, size: int, full: int) -> tuple[int, int]:
    a = min(max(int(math.floor(lo * size / full)), 0), size - 1)
    b = min(max(int(math.ceil(hi * size / full)), a + 1), size)
    return a, b


def target_masks(gt_boxes: list[torch.Tensor], img_shape, feat_shape):
    """Binary target mask M (Eq. 8 without the random part) and scale mask S (Eq. 9-10).

    Returns ``(tar, scale)``, both (N, 1, H, W). ``scale`` is 1/(H_r*W_r) inside a box, H_r
    and W_r being the box's extent in cells; where boxes overlap the larger weight (the
    smaller box) wins, so small ships are not drowned by large ones. Outside boxes it is
    1/N_bg with N_bg the number of background cells of that image (Eq. 10 read before the
    random drop: with the random n inside M the normaliser would depend on the drop it is
    meant to normalise). An image without boxes is all background; an image fully covered
    has N_bg = 0 and no background weight (no division by zero).
    """
    h_in, w_in = img_shape
    h, w = feat_shape
    n = len(gt_boxes)
    device = gt_boxes[0].device if n else torch.device("cpu")
    tar = torch.zeros(n, 1, h, w, device=device)
    scale = torch.zeros(n, 1, h, w, device=device)
    for i, boxes in enumerate(gt_boxes):
        for x1, y1, x2, y2 in boxes.detach().cpu().tolist():
            r0, r1 = _cells(y1, y2, h, h_in)
            c0, c1 = _cells(x1, x2, w, w_in)
            weight = 1.0 / ((r1 - r0) * (c1 - c0))
            tar[i, 0, r0:r1, c0:c1] = 1.0
            scale[i, 0, r0:r1, c0:c1] = torch.clamp(scale[i, 0, r0:r1, c0:c1], min=weight)
        n_bg = int((tar[i] == 0).sum())
        if n_bg:
            scale[i][tar[i] == 0] = 1.0 / n_bg
    return tar, scale


def random_background_mask(tar: torch.Tensor, mask_rate: float,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """Background cells kept this step (the random n of Eq. 8, applied to the background).

    ``mask_rate`` is the fraction of background cells DROPPED: each is kept with probability
    1 - mask_rate, so 0 keeps all background and 1.0 distils only target-level features, as
    the paper's Table 5 describes. (The authors' code keeps that fraction instead, the
    opposite reading; we follow the paper's text.)
    """
    if not 0.0 <= mask_rate <= 1.0:
        raise ValueError(f"mask_rate must be in [0, 1], got {mask_rate}")
    keep = torch.rand(tar.shape, generator=generator, device=tar.device) >= mask_rate
    return (1.0 - tar) * keep.to(tar.dtype)
