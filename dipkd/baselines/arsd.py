"""ARSD: Adaptive Reinforcement Supervision Distillation (Yang et al., IEEE TGRS 2022,
"Adaptive knowledge distillation for lightweight remote sensing object detectors optimizing").

Three terms, all on the FPN levels and the dense head (RetinaNet's ``bbox_head``; for
Faster R-CNN the RPN, the only dense head it has):

- MCFI, multi-scale core feature imitation, with the released code's active mask rule
  (``mask_rule="scale"``, youngfly/Remote-Sensing-Distillation
  mmdet/models/detectors/distill_atss.py ``get_masks_4``, called for both the feature and the
  classification term): every GT box g (w x h) of an image goes to ONE level of the dense
  head's pyramid by its scale relative to the padded input (H_in x W_in),
  k_g = clamp(floor(4 + log2(sqrt(w h) / sqrt(H_in W_in) + 1e-6)), 0, 4)
  (a ship below 1/8 of the image side on the finest level, 0 = P2 on Faster R-CNN's RPN,
  P3 on RetinaNet), and marks on that level the cells rows int(y1 H/H_in) .. int(y2 H/H_in) - 1
  and columns int(x1 W/W_in) .. int(x2 W/W_in) - 1 (truncated, far end excluded: a box that
  crosses no cell boundary marks nothing, as released). M = 1 on the marked cells.
  ``mask_rule="iou"`` is the rule the released code keeps commented out (``get_masks_2``): with
  m_g the largest IoU of g with any anchor over the distilled levels, a cell is core when one
  of its anchors has IoU > ``iou_ratio`` * m_g (0.5).
  Area weighting (``area_weighting``, the paper's small-object emphasis):
  W = 1 + exp(-2 sqrt(w_g h_g) / sqrt(H_in W_in)) on the cells of g (the largest where boxes
  meet), 0 off the core. The released code writes that weight into an integer tensor and then
  binarises the mask (``(mask > 0).float()``), so its imitation weight is the binary M: the
  default is therefore ``area_weighting=False`` (W = M); True is the paper's reading.
  L_feat = ``imitation_weight`` * sum_{n,l,c,h,w} W (f(F^S) - F^T)^2 / (2 sum_{n,l,h,w} M),
  f a 1x1 conv adapter (normal init, std 0.01, bias 0; one shared by the levels, as released),
  used even when the channel counts match.
- Head classification distillation on the same core cells (binary M, raw logits, all A*K
  channels of a cell):
  L_cls = ``cls_weight`` * sum M (z^T - z^S)^2 / (2 sum M).
- SSRD, strict supervision regression distillation. Positive anchors are assigned to GTs the
  MaxIoU way (best IoU >= ``pos_iou_thr``, plus every GT's best anchors); the student's and
  teacher's deltas are decoded on them (DeltaXYWH, the heads' coder) and a positive is kept
  only when IoU(teacher box, g) > IoU(student box, g) > IoU(anchor, g): the teacher is only
  imitated where it is better than the student, and the student already better than its
  anchor. Per level l over the batch, with S_l the kept positives,
  L_reg = ``reg_weight`` * sum_l ``giou_weight`` * sum_{S_l} (1 - GIoU(b^S, b^T)) / max(1, |S_l|).

Defaults are the authors' released settings (distill_atss.py: imitation 0.01, cls 0.01,
reg 0.1, GIoU loss weight 2, the scale mask rule, binary imitation weight) on all five levels of
the dense head, as the released code distils every ATSS level (no Faster R-CNN config was
released; ``methods.arsd.fpn_levels``). With ``fpn_levels`` level k of the input is head level
``fpn_levels[k]``: its anchors are that level's (``single_level_grid_priors``) and the scale
rule assigns boxes over the whole pyramid (a box assigned to a level not distilled is not
imitated). Teacher tensors are detached.
Deviations (the released code targets ATSS on mmdet 2.x):
1. Head terms use the dense head we have: RPN objectness logits (Faster R-CNN) or RetinaNet's
   sigmoid logits, not ATSS's; SSRD's positives come from a MaxIoU assignment (``pos_iou_thr``
   0.5) instead of ATSS's adaptive one, and each kept positive weighs 1 instead of ATSS's
   centerness target (RPN and RetinaNet have no centerness).
2. The released code applies image j's mask to every image of the batch (its own comment calls
   it a bug; ``if_adapt2`` / ``if_cls2`` are the unused fixes); we apply each image's own mask.
3. Normaliser: max(1, 2 sum M) instead of the code's 2 sum M + 1 (no loss where M is empty).
4. The released scale rule multiplies x by H_feat/H_in and y by W_feat/W_in (its comment notes
   the swap, harmless on its square DOTA crops); we scale x by the widths and y by the heights.
   Its level clamp is the constant 4 (five levels); ours is the head's last level
   (``prior_generator.num_levels`` - 1, also 4 on both detectors).
5. With ``mask_rule="iou"`` and a subset of levels, m_g is the best IoU over the distilled
   levels only.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from mmdet.registry import MODELS

from ..kd.feature_kd import FeatureKDLoss


def _tensor(boxes):
    """Anchors as a plain (n, 4) tensor (mmdet may wrap them in HorizontalBoxes)."""
    return boxes.tensor if hasattr(boxes, "tensor") else boxes


def _flat(pred: torch.Tensor, width: int) -> torch.Tensor:
    """(N, A*width, H, W) head map -> (N, H*W*A, width), mmdet's anchor order (h, w, a)."""
    n = pred.shape[0]
    return pred.permute(0, 2, 3, 1).reshape(n, -1, width)


def level_anchors(prior_generator, shapes, levels, device):
    """Anchors of FPN / head levels ``levels`` (sizes ``shapes``), one (H*W*A, 4) tensor each."""
    if list(levels) == list(range(len(shapes))) and not hasattr(prior_generator,
                                                                 "single_level_grid_priors"):
        return [_tensor(a) for a in prior_generator.grid_priors(shapes, device=device)]
    return [_tensor(prior_generator.single_level_grid_priors(torch.Size(s), level_idx=lvl,
                                                             device=device))
            for s, lvl in zip(shapes, levels)]


def scale_levels(boxes: torch.Tensor, batch_input_shape, num_levels: int = 5) -> torch.Tensor:
    """ARSD's level of each box (``get_masks_4``): floor(4 + log2(sqrt(wh) / sqrt(H_in W_in)
    + 1e-6)) clamped to [0, num_levels - 1]."""
    h_in, w_in = batch_input_shape
    side = ((boxes[:, 2] - boxes[:, 0]).clamp(min=0)
            * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)).sqrt()
    return torch.floor(4 + torch.log2(side / math.sqrt(h_in * w_in) + 1e-6)).clamp(
        0, num_levels - 1).long()


MASK_RULES = ("scale", "iou")


def _released_adapter(student_channels: int, teacher_channels: int) -> nn.Conv2d:
    """ARSD's released adapter: a 1x1 conv, weight N(0, 0.01), bias 0."""
    conv = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.zeros_(conv.bias)
    return conv


@MODELS.register_module()
class ARSDLoss(FeatureKDLoss):
    method = "arsd"
    display_name = "ARSD"
    venue = "TGRS22"
    reference = "Yang et al., adaptive reinforcement supervision distillation (IEEE TGRS 2022)"
    footnote = ("released for ATSS; here the head terms use the dense head (the RPN on Faster "
                "R-CNN), MaxIoU positives and unit weights instead of ATSS's assignment and "
                "centerness")
    needs_teacher_head = True

    def __init__(self, imitation_weight: float = 0.01, cls_weight: float = 0.01,
                 reg_weight: float = 0.1, giou_weight: float = 2.0, mask_rule: str = "scale",
                 iou_ratio: float = 0.5, pos_iou_thr: float = 0.5, area_weighting: bool = False,
                 always_adapt: bool = True, target_stds=(1.0, 1.0, 1.0, 1.0),
                 student_channels: int = 256, teacher_channels: int = 256):
        super().__init__(student_channels, teacher_channels, adapter=(
            _released_adapter(student_channels, teacher_channels) if always_adapt else None))
        if mask_rule not in MASK_RULES:
            raise ValueError(f"mask_rule must be one of {MASK_RULES}, got {mask_rule!r}")
        if not 0.0 <= iou_ratio < 1.0:
            raise ValueError(f"iou_ratio must be in [0, 1), got {iou_ratio}")
        self.mask_rule = mask_rule
        self.imitation_weight, self.cls_weight, self.reg_weight = (imitation_weight, cls_weight,
                                                                   reg_weight)
        self.giou_weight, self.iou_ratio, self.pos_iou_thr = giou_weight, iou_ratio, pos_iou_thr
        self.area_weighting = area_weighting
        self.target_stds = tuple(float(s) for s in target_stds)

    # ------------------------------------------------------------------ masks
    def _area_weight(self, gt: torch.Tensor, batch_input_shape) -> torch.Tensor:
        h_in, w_in = batch_input_shape
        side = ((gt[:, 2] - gt[:, 0]).clamp(min=0) * (gt[:, 3] - gt[:, 1]).clamp(min=0)).sqrt()
        if not self.area_weighting:
            return torch.ones_like(side)
        return 1.0 + torch.exp(-side / (math.sqrt(h_in * w_in) / 2))

    def scale_masks(self, boxes: list[torch.Tensor], shapes: list[tuple[int, int]],
                    levels: list[int], batch_input_shape, num_levels: int = 5, device=None):
        """The released rule (``get_masks_4``): per distilled level, binary mask M and weight
        W, both (N, 1, H, W), of the boxes the scale rule assigns to that level."""
        h_in, w_in = batch_input_shape
        masks = [torch.zeros(len(boxes), 1, h, w, device=device) for h, w in shapes]
        weights = [torch.zeros(len(boxes), 1, h, w, device=device) for h, w in shapes]
        for i, gt in enumerate(boxes):
            if gt.numel() == 0:
                continue
            gt = gt.detach().to(device=device, dtype=torch.float32)
            target = scale_levels(gt, batch_input_shape, num_levels).tolist()
            area_w = self._area_weight(gt, batch_input_shape).tolist()
            for k, ((h, w), lvl) in enumerate(zip(shapes, levels)):
                for g, (x1, y1, x2, y2) in enumerate(gt.tolist()):
                    if target[g] != lvl:
                        continue
                    r0, r1 = max(int(y1 * h / h_in), 0), int(y2 * h / h_in)
                    c0, c1 = max(int(x1 * w / w_in), 0), int(x2 * w / w_in)
                    if r1 <= r0 or c1 <= c0:
                        continue
                    masks[k][i, 0, r0:r1, c0:c1] = 1.0
                    weights[k][i, 0, r0:r1, c0:c1] = weights[k][i, 0, r0:r1, c0:c1].clamp(
                        min=area_w[g])
        return masks, weights

    def core_masks(self, boxes: list[torch.Tensor], anchors: list[torch.Tensor],
                   shapes: list[tuple[int, int]], batch_input_shape):
        """The commented-out IoU rule (``get_masks_2``): per level, binary core mask M and
        weight W, both (N, 1, H, W)."""
        from mmdet.structures.bbox import bbox_overlaps
        device = anchors[0].device
        masks = [torch.zeros(len(boxes), 1, h, w, device=device) for h, w in shapes]
        weights = [torch.zeros(len(boxes), 1, h, w, device=device) for h, w in shapes]
        for i, gt in enumerate(boxes):
            gt = gt.to(device=device, dtype=torch.float32)
            if gt.numel() == 0:
                continue
            ious = [bbox_overlaps(a, gt) for a in anchors]               # (H*W*A, G) per level
            best = torch.stack([x.max(dim=0).values for x in ious]).max(dim=0).values  # (G,)
            area_w = self._area_weight(gt, batch_input_shape)
            for level, ((h, w), iou) in enumerate(zip(shapes, ious)):
                core = (iou > self.iou_ratio * best).view(h, w, -1, gt.shape[0]).any(dim=2)
                masks[level][i, 0] = core.any(dim=-1).float()
                weights[level][i, 0] = (core.float() * area_w).max(dim=-1).values
        return masks, weights

    def _assign(self, gt: torch.Tensor, anchors: torch.Tensor):
        """MaxIoU assignment over all levels: (positive flags, GT index) per anchor."""
        from mmdet.structures.bbox import bbox_overlaps
        iou = bbox_overlaps(anchors, gt)                                   # (A_all, G)
        best_iou, best_gt = iou.max(dim=1)
        pos = best_iou >= self.pos_iou_thr
        gt_best = iou.max(dim=0).values                                    # (G,)
        for g in range(gt.shape[0]):
            if gt_best[g] > 0:
                low = iou[:, g] == gt_best[g]
                pos |= low
                best_gt[low] = g
        return pos, best_gt

    # ------------------------------------------------------------------ loss
    def forward(self, student_feats, teacher_feats, data_samples, batch_input_shape,
                student_cls_scores=None, student_bbox_preds=None, teacher_cls_scores=None,
                teacher_bbox_preds=None, prior_generator=None, bbox_coder=None,
                fpn_levels=None, **_context) -> dict:
        if prior_generator is None:
            raise ValueError("ARSD needs the dense head's anchor generator (prior_generator)")
        device = student_feats[0].device
        shapes = [tuple(f.shape[-2:]) for f in student_feats]
        levels = list(range(len(shapes))) if fpn_levels is None else list(fpn_levels)
        anchors = level_anchors(prior_generator, shapes, levels, device)
        boxes = self.gt_boxes(data_samples)
        if self.mask_rule == "scale":
            total = getattr(prior_generator, "num_levels", 5)
            masks, weights = self.scale_masks(boxes, shapes, levels, batch_input_shape,
                                              total, device=device)
        else:
            masks, weights = self.core_masks(boxes, anchors, shapes, batch_input_shape)
        norm = max(1.0, 2.0 * float(sum(m.sum() for m in masks)))

        feat = student_feats[0].new_zeros(())
        for (_, fs, ft), weight in zip(self.level_pairs(student_feats, teacher_feats, levels),
                                       weights):
            feat = feat + (weight * (fs - ft) ** 2).sum()
        losses = {"loss_arsd_feat": self.imitation_weight * feat / norm}

        if student_cls_scores is not None and teacher_cls_scores is not None:
            cls = student_feats[0].new_zeros(())
            for zs, zt, mask in zip(student_cls_scores, teacher_cls_scores, masks):
                cls = cls + (mask * (zt.detach() - zs) ** 2).sum()
            losses["loss_arsd_cls"] = self.cls_weight * cls / norm

        if student_bbox_preds is not None and teacher_bbox_preds is not None:
            losses["loss_arsd_reg"] = self.reg_weight * self._ssrd(
                boxes, anchors, student_bbox_preds, teacher_bbox_preds, bbox_coder)
        return losses

    def _ssrd(self, boxes, anchors, student_preds, teacher_preds, bbox_coder):
        from mmdet.structures.bbox import bbox_overlaps
        if bbox_coder is None:
            from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder
            bbox_coder = DeltaXYWHBBoxCoder(target_means=(0.0,) * 4, target_stds=self.target_stds)
        sizes = [len(a) for a in anchors]
        all_anchors = torch.cat(anchors)
        level_of = torch.cat([torch.full((s,), lvl, device=all_anchors.device)
                              for lvl, s in enumerate(sizes)])
        d_s = torch.cat([_flat(p, 4) for p in student_preds], dim=1)       # (N, A_all, 4)
        d_t = torch.cat([_flat(p.detach(), 4) for p in teacher_preds], dim=1)
        per_level = [[] for _ in sizes]
        for i, gt in enumerate(boxes):
            gt = gt.to(device=all_anchors.device, dtype=torch.float32)
            if gt.numel() == 0:
                continue
            pos, gt_idx = self._assign(gt, all_anchors)
            if not pos.any():
                continue
            a, g, lvl = all_anchors[pos], gt[gt_idx[pos]], level_of[pos]
            b_s = _tensor(bbox_coder.decode(a, d_s[i][pos]))
            b_t = _tensor(bbox_coder.decode(a, d_t[i][pos]))
            iou_a = bbox_overlaps(a, g, is_aligned=True)
            iou_s = bbox_overlaps(b_s.detach(), g, is_aligned=True)
            iou_t = bbox_overlaps(b_t, g, is_aligned=True)
            keep = (iou_t > iou_s) & (iou_s > iou_a)
            if keep.any():
                giou = bbox_overlaps(b_s[keep], b_t[keep], mode="giou", is_aligned=True)
                for level in lvl[keep].unique().tolist():
                    per_level[level].append(1.0 - giou[lvl[keep] == level])
        total = d_s.sum() * 0.0                 # keeps the graph when nothing is kept
        for terms in per_level:
            if terms:
                t = torch.cat(terms)
                total = total + self.giou_weight * t.sum() / max(1, t.numel())
        return total
