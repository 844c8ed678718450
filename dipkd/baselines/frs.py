"""FRS: Distilling Object Detectors with Feature Richness (Du et al., NeurIPS 2021).

The feature-richness score of FPN level l at cell (i, j) is the teacher's largest
classification probability there, over all classes and anchors:
S^l_ij = max_c sigmoid(y^T_{l,c,ij}) (c runs over the head's A*K score channels); it needs no
GT box, so it also selects useful features outside the boxes and drops boxes the teacher
calls background. With N_l = sum_{n,i,j} S^l (over the batch):

- feature imitation  L_FPN  = sum_l 1/N_l sum_{n,c,i,j} S^l_ij (F^T - phi_l(F^S))^2,
  phi_l a 3x3 conv adaptation layer per level;
- head distillation  L_head = sum_l 1/N_l sum_{n,c,i,j} S^l_ij BCE(sigmoid(y^S), sigmoid(y^T)),
  the teacher's probabilities as soft targets for each of the head's sigmoid outputs.
L = alpha L_FPN + beta L_head. The score map is detached, and so is everything of the teacher.

Which head: the distiller's dense head. On RetinaNet that is the ``bbox_head`` (A*K sigmoid
logits, the paper's setting). On Faster R-CNN it is the RPN: the score is the teacher's
largest objectness probability over the A anchors and L_head distils the RPN objectness, as
the authors' two-stage code does; the RoI head is not distilled.

Defaults are the authors' Faster R-CNN settings (duzhixing/FRS, ../shared/notes/official_code.md):
feat_weight (alpha) 0.002, cls_weight (beta) 0.1; RetinaNet: 0.005 and 0.02.

Deviations from the paper:
- Faster R-CNN uses RPN objectness as "classification score" (above); the paper describes the
  classification head of one-stage detectors.
- The authors' code ramps both losses up linearly over the first 500 iterations; the loss
  module sees no iteration counter, so this warm-up is not reproduced (the distiller's LR
  warm-up still applies).
- BCE is computed from the student's logits (``binary_cross_entropy_with_logits``), the same
  value as BCE on sigmoid outputs but without its clamping of log(0).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from mmdet.registry import MODELS

from ..kd.feature_kd import FeatureKDLoss


@MODELS.register_module()
class FRSLoss(FeatureKDLoss):
    method = "frs"
    display_name = "FRS"
    venue = "NeurIPS21"
    reference = "Du et al., Distilling Object Detectors with Feature Richness (NeurIPS 2021)"
    footnote = ("on Faster R-CNN the feature-richness score and the head distillation use the "
                "teacher's RPN objectness, as the authors' two-stage code; their 500-iteration "
                "loss warm-up is not reproduced")
    needs_teacher_head = True   # the distiller then passes ``teacher_cls_scores``

    def __init__(self, feat_weight: float = 0.002, cls_weight: float = 0.1,
                 student_channels: int = 256, teacher_channels: int = 256, num_levels: int = 5):
        super().__init__(student_channels, teacher_channels, num_levels, adapter=nn.ModuleList(
            nn.Conv2d(student_channels, teacher_channels, 3, padding=1)
            for _ in range(num_levels)))
        self.feat_weight, self.cls_weight = feat_weight, cls_weight

    def forward(self, student_feats, teacher_feats, data_samples=None, batch_input_shape=None,
                student_cls_scores=None, teacher_cls_scores=None, fpn_levels=None, **_context) -> dict:
        if student_cls_scores is None or teacher_cls_scores is None:
            raise ValueError("FRSLoss needs the student's and the teacher's dense-head "
                             "classification scores (student_cls_scores, teacher_cls_scores)")
        feat = cls = student_feats[0].new_zeros(())
        for (_, fs, ft), ys, yt in zip(self.level_pairs(student_feats, teacher_feats, fpn_levels),
                                       student_cls_scores, teacher_cls_scores):
            p_t = torch.sigmoid(yt.detach())
            score = p_t.amax(dim=1, keepdim=True)                       # N, 1, H, W
            norm = score.sum().clamp(min=torch.finfo(score.dtype).tiny)
            sq = (ft - fs) ** 2
            feat = feat + (sq * score).sum() / norm
            bce = F.binary_cross_entropy_with_logits(ys, p_t, reduction="none")
            cls = cls + (bce * score).sum() / norm
        return {"loss_frs_feat": self.feat_weight * feat, "loss_frs_cls": self.cls_weight * cls}
