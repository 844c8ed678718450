"""DeFeat: Distilling Object Detectors via Decoupled Features (Guo et al., CVPR 2021),
neck part, as the authors' released code runs it (ggjy/DeFeat.pytorch: the loop over the neck
levels in ``mmdet/apis/train.py::batch_processor_kd``, the GT mask of
``mmdet/models/dense_heads/anchor_head.py::get_gt_mask`` and ``_map_roi_levels``, the per-level
adapter of ``mmdet/models/detectors/two_stage_kd.py``; config
``configs/kd_faster_rcnn/voc_stu_faster_rcnn_r50_decouple_neck.py``).

- Level assignment: each GT box goes to ONE level of the dense head's pyramid (the RPN's on
  Faster R-CNN, all its levels, P2-P6), the FPN / RoI rule
  ``k = clamp(floor(log2(sqrt((w + 1)(h + 1)) / 56 + 1e-6)), 0, L - 1)``, L the number of the
  head's levels (``prior_generator.num_levels``): side < 112 px -> P2, < 224 -> P3, ...
- Projection on its level (stride s of that level, ``prior_generator.strides``): cells
  columns ``int(x1/s) .. int(x2/s) - 1`` and rows ``int(y1/s) .. int(y2/s) - 1`` (truncated
  coordinates, far end EXCLUDED, clamped to the map); a box whose truncated span is empty on an
  axis marks the single cell ``(int(y1/s), int(x1/s))``. ``projection="fgd"`` uses FGD's rule
  instead (:func:`dipkd.kd.masks.target_masks`, every box on every level).
- Adapter: one 3x3 conv per distilled level (no ReLU), weights N(0, 1) folded into (-2, 2)
  (``fmod``) times 1e-4, PyTorch's default bias init; used even when the channel counts match
  (``always_adapt``; off = identity when they match, for hand-made tests).
- Loss, per level l with M_l the mask broadcast over channels and D = (f_l(F^S) - F^T)^2:
  fg_l = sum M D / max(1, 2 sum M), bg_l = sum (1-M) D / max(1, 2 sum (1-M)) (sums over the
  batch, channels and cells), and
  L = w_fg * sum_l fg_l / L_d + w_bg * sum_l bg_l / L_d, L_d the number of distilled levels.
Defaults: w_fg 3, w_bg 12 (``hint_neck_w`` / ``hint_neck_back_w``), all five levels
(``methods.defeat.fpn_levels``). With ``fpn_levels`` a level k of the input is FPN / head level
``fpn_levels[k]``: the assignment still runs over the whole pyramid, a box assigned to a level
that is not distilled is not imitated anywhere.

Left different from the released code:
1. DeFeat also distils the RoI head's classification outputs with decoupled foreground /
   background proposals (head cls fg/bg 2/2, temperature 1); that head part is not implemented,
   only the neck part, which is the part DIPKD's KLD builds on. Table 2 marks the row with a
   footnote.
2. Without a ``prior_generator`` (hand-made tests) the stride is the input / feature size ratio
   and L the number of levels given.
3. The released code marks the single cell with ``mask[ly, lx]`` unclamped (an index error for a
   box starting on the last column); we clamp it to the map.
"""
from __future__ import annotations

import torch
from torch import nn
from mmdet.registry import MODELS

from ..kd.feature_kd import FeatureKDLoss
from ..kd.masks import target_masks

PROJECTIONS = ("defeat", "fgd")


def assign_levels(boxes: torch.Tensor, num_levels: int) -> torch.Tensor:
    """DeFeat's (FPN's) level of each (x1, y1, x2, y2) box: floor(log2(sqrt((w+1)(h+1)) / 56
    + 1e-6)) clamped to [0, num_levels - 1]."""
    scale = torch.sqrt((boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1))
    return torch.floor(torch.log2(scale / 56 + 1e-6)).clamp(0, num_levels - 1).long()


def defeat_gt_mask(boxes: list[torch.Tensor], feat_shape, stride, level: int,
                   num_levels: int, device=None) -> torch.Tensor:
    """(N, 1, H, W) binary mask of the boxes assigned to head level ``level`` (DeFeat's
    ``get_gt_mask``); ``stride`` = (s_x, s_y) of that level."""
    h, w = feat_shape
    s_x, s_y = stride
    mask = torch.zeros(len(boxes), 1, h, w, device=device)
    for i, gt in enumerate(boxes):
        if gt.numel() == 0:
            continue
        gt = gt.detach().float()
        levels = assign_levels(gt, num_levels)
        for x1, y1, x2, y2 in gt[levels == level].cpu().tolist():
            lx, ly = max(int(x1 / s_x), 0), max(int(y1 / s_y), 0)
            rx, ry = min(int(x2 / s_x), w), min(int(y2 / s_y), h)
            if lx >= rx or ly >= ry:
                mask[i, 0, min(ly, h - 1), min(lx, w - 1)] = 1.0
            else:
                mask[i, 0, ly:ry, lx:rx] = 1.0
    return mask


def _stride(prior_generator, level: int, feat_shape, batch_input_shape):
    if prior_generator is not None and hasattr(prior_generator, "strides"):
        s = prior_generator.strides[level]
        return (float(s[0]), float(s[1])) if isinstance(s, (tuple, list)) else (float(s),) * 2
    return (batch_input_shape[1] / feat_shape[1], batch_input_shape[0] / feat_shape[0])


@MODELS.register_module()
class DeFeatLoss(FeatureKDLoss):
    method = "defeat"
    display_name = "DeFeat"
    venue = "CVPR21"
    reference = "Guo et al., Distilling Object Detectors via Decoupled Features (CVPR 2021)"
    footnote = ("neck (feature) part only; DeFeat's RoI-head logit distillation is not "
                "implemented")

    def __init__(self, weight_fg: float = 3.0, weight_bg: float = 12.0,
                 projection: str = "defeat", always_adapt: bool = True,
                 student_channels: int = 256, teacher_channels: int = 256, num_levels: int = 5):
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
        adapt = always_adapt or student_channels != teacher_channels
        super().__init__(student_channels, teacher_channels, num_levels, adapter=nn.ModuleList(
            nn.Conv2d(student_channels, teacher_channels, kernel_size=3, padding=1)
            if adapt else nn.Identity() for _ in range(num_levels)))
        self.weight_fg, self.weight_bg, self.projection = weight_fg, weight_bg, projection
        self.always_adapt = adapt
        self.init_weights()

    def init_weights(self) -> None:
        """DeFeat's adapter init: weight N(0, 1).fmod(2) * 1e-4 (bias left at PyTorch's)."""
        with torch.no_grad():
            for conv in self.adapter:
                if isinstance(conv, nn.Conv2d):
                    conv.weight.normal_().fmod_(2).mul_(1e-4)

    def forward(self, student_feats, teacher_feats, data_samples, batch_input_shape,
                student_cls_scores=None, prior_generator=None, fpn_levels=None,
                **_context) -> dict:
        levels = list(range(len(student_feats))) if fpn_levels is None else list(fpn_levels)
        total = (prior_generator.num_levels if hasattr(prior_generator, "num_levels")
                 else max(levels) + 1)
        boxes = self.gt_boxes(data_samples)
        fg = bg = student_feats[0].new_zeros(())
        for level, fs, ft in self.level_pairs(student_feats, teacher_feats, levels):
            shape = tuple(fs.shape[-2:])
            if self.projection == "defeat":
                stride = _stride(prior_generator, level, shape, batch_input_shape)
                tar = defeat_gt_mask(boxes, shape, stride, level, total, device=fs.device)
            else:
                tar, _ = target_masks(boxes, batch_input_shape, shape)
                tar = tar.to(fs.device)
            sq = (ft - fs) ** 2
            c = fs.shape[1]
            fg = fg + (sq * tar).sum() / max(1.0, 2.0 * c * float(tar.sum()))
            bg = bg + (sq * (1 - tar)).sum() / max(1.0, 2.0 * c * float((1 - tar).sum()))
        n_levels = len(student_feats)
        return {"loss_defeat_fg": self.weight_fg * fg / n_levels,
                "loss_defeat_bg": self.weight_bg * bg / n_levels}
