"""Target / background masks of Knowledge Level Decoupling (DIPKD Eq. 8-10).

Box projection, FGD's rule (yzd-v/FGD mmdet/distillation/losses/fgd.py ``forward``; the DIPKD
authors' Mok-kn/Dip mmdet/losses/kd.py keeps it): a GT box (x1, y1, x2, y2) in input pixels
covers the feature rows ``floor(y1*H/H_in) .. ceil(y2*H/H_in)`` and columns
``floor(x1*W/W_in) .. ceil(x2*W/W_in)``, both ends INCLUDED (the cell of the ceil too),
clamped to the map; its scale weight is ``1/((r1 + 1 - r0) * (c1 + 1 - c0))`` from the
unclamped ends, as FGD computes it. A small ship therefore keeps the row and column its far
edge touches.

Remaining difference from FGD: FGD divides by ``img_metas['img_shape']`` (the resized image
before padding) while the feature covers the padded batch; we divide by the padded batch
input shape (H_in, W_in), the geometry the feature map really has. The two agree when no
padding is added (mmdet pads at most 31 pixels at the bottom / right).
"""
from __future__ import annotations

import math

import torch

MASK_RULES = ("keep", "drop")


def _cells(lo: float, hi: float, size: int, full: int) -> tuple[int, int, int]:
    """(first cell, last cell included and clamped, last cell unclamped) of one axis."""
    a = min(max(int(math.floor(lo * size / full)), 0), size - 1)
    b_raw = max(int(math.ceil(hi * size / full)), a)
    return a, min(b_raw, size - 1), b_raw


def target_masks(gt_boxes: list[torch.Tensor], img_shape, feat_shape):
    """Binary target mask M (Eq. 8 without the random part) and scale mask S (Eq. 9-10).

    Returns ``(tar, scale)``, both (N, 1, H, W). ``scale`` is 1/(H_r*W_r) inside a box, H_r
    and W_r being the box's extent in cells (FGD's inclusive count); where boxes overlap the
    larger weight (the smaller box) wins, so small ships are not drowned by large ones.
    Outside boxes it is 1/N_bg with N_bg the number of background cells of that image (Eq. 10
    before the random drop, as FGD and the authors' ``Mask_bg``). An image without boxes is
    all background; an image fully covered has N_bg = 0 and no background weight.
    """
    h_in, w_in = img_shape
    h, w = feat_shape
    n = len(gt_boxes)
    device = gt_boxes[0].device if n else torch.device("cpu")
    tar = torch.zeros(n, 1, h, w, device=device)
    scale = torch.zeros(n, 1, h, w, device=device)
    for i, boxes in enumerate(gt_boxes):
        for x1, y1, x2, y2 in boxes.detach().cpu().tolist():
            r0, r1, r1_raw = _cells(y1, y2, h, h_in)
            c0, c1, c1_raw = _cells(x1, x2, w, w_in)
            weight = 1.0 / ((r1_raw + 1 - r0) * (c1_raw + 1 - c0))
            tar[i, 0, r0:r1 + 1, c0:c1 + 1] = 1.0
            scale[i, 0, r0:r1 + 1, c0:c1 + 1] = torch.clamp(
                scale[i, 0, r0:r1 + 1, c0:c1 + 1], min=weight)
        n_bg = int((tar[i] == 0).sum())
        if n_bg:
            scale[i][tar[i] == 0] = 1.0 / n_bg
    return tar, scale


def random_background_mask(tar: torch.Tensor, mask_rate: float,
                           generator: torch.Generator | None = None,
                           rule: str = "drop") -> torch.Tensor:
    """Background cells kept this step (the random n of Eq. 8, applied to the background).

    ``rule`` says what ``mask_rate`` means:
    - ``"keep"`` (the authors' code, Mok-kn/Dip mmdet/losses/kd.py ``lambda_mask``): each
      background cell is KEPT with probability ``mask_rate`` (0.25 keeps about a quarter;
      1 keeps all: their HRSID config);
    - ``"drop"`` (the paper's Table 5 text: "mask rate 100% = only target-level features"):
      each is DROPPED with probability ``mask_rate``.
    """
    if not 0.0 <= mask_rate <= 1.0:
        raise ValueError(f"mask_rate must be in [0, 1], got {mask_rate}")
    if rule not in MASK_RULES:
        raise ValueError(f"mask_rule must be one of {', '.join(MASK_RULES)}, got {rule!r}")
    u = torch.rand(tar.shape, generator=generator, device=tar.device)
    keep = u < mask_rate if rule == "keep" else u >= mask_rate
    return (1.0 - tar) * keep.to(tar.dtype)
