"""FGD: Focal and Global Knowledge Distillation for Detectors (Yang et al., CVPR 2022).

Per FPN level, with the teacher's and student's spatial/channel attention A^S, A^C
(temperature ``temp``; the same maps as DIPKD Eq. 3-6), the GT target mask M and the scale
mask S (1/(H_r W_r) inside boxes, 1/N_bg outside; ``dipkd.kd.masks``):

- focal loss  alpha * sum M S sqrt(A^S_t A^C_t) (F^T - F^S)^2
            + beta  * sum (1-M) S sqrt(A^S_t A^C_t) (F^T - F^S)^2   (teacher attention on both)
- attention loss gamma * ( |A^C_t - A^C_s|_1 + |A^S_t - A^S_s|_1 ) / N
- global loss lambda * sum (GC(F^T) - GC(F^S))^2, GC = GcBlock context modelling
  (softmax-pooled context, conv1x1 -> LayerNorm -> ReLU -> conv1x1 added to the feature),
  one block for the student and one for the teacher, both trained with the KD loss.
All sums over C, H, W and levels, divided by the batch size. Defaults are the authors'
Faster R-CNN settings (temp 0.5, alpha 5e-5, beta 2.5e-5, gamma 5e-5, lambda 5e-7) on the four
levels their Faster R-CNN config hooks, ``neck.fpn_convs.0-3`` = P2-P5 (RetinaNet config: 0-4,
P3-P7; ``methods.fgd.fpn_levels``).
Initialisation as the authors' ``reset_parameters`` (yzd-v/FGD
mmdet/distillation/losses/fgd.py): each context conv (``conv_mask``) Kaiming-normal, fan_in,
ReLU gain, bias 0; the last conv of each ``channel_add_conv`` block all zero (weights and bias),
so GC(F) = F at the start; the other layers keep PyTorch's defaults. Done in ``__init__`` and
again in :meth:`init_weights` (the distiller calls it).
Left different from the released code (yzd-v/FGD mmdet/distillation/losses/fgd.py):
1. One loss object for all distilled levels with one GC block pair per level (theirs: one
   ``FeatureLoss`` per hooked level, the same thing), but a single student adapter shared by the
   levels where theirs has one ``align`` conv per level; with equal channel counts (256, our
   case) both are the identity.
2. Box projection: ``dipkd.kd.masks.target_masks`` divides by the padded batch input shape,
   FGD by ``img_metas['img_shape']`` (see that module).
"""
from __future__ import annotations

import torch
from torch import nn
from mmdet.registry import MODELS

from ..kd.attention import channel_attention, spatial_attention
from ..kd.feature_kd import FeatureKDLoss
from ..kd.masks import target_masks


class _GlobalContext(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.transform = nn.Sequential(nn.Conv2d(channels, channels // 2, kernel_size=1),
                                       nn.LayerNorm([channels // 2, 1, 1]), nn.ReLU(inplace=True),
                                       nn.Conv2d(channels // 2, channels, kernel_size=1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """FGD's ``reset_parameters``: Kaiming-normal (fan_in) context conv with zero bias, the
        transform's last conv all zero."""
        nn.init.kaiming_normal_(self.mask.weight, a=0, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.mask.bias)
        nn.init.zeros_(self.transform[-1].weight)
        nn.init.zeros_(self.transform[-1].bias)

    def forward(self, x):
        n, c, h, w = x.shape
        weights = torch.softmax(self.mask(x).view(n, 1, h * w), dim=2)        # N,1,HW
        context = torch.bmm(x.view(n, c, h * w), weights.transpose(1, 2))      # N,C,1
        return x + self.transform(context.view(n, c, 1, 1))


@MODELS.register_module()
class FGDLoss(FeatureKDLoss):
    method = "fgd"
    display_name = "FGD"
    venue = "CVPR22"
    reference = "Yang et al., Focal and Global Knowledge Distillation for Detectors (CVPR 2022)"

    def __init__(self, temp: float = 0.5, alpha: float = 5e-5, beta: float = 2.5e-5,
                 gamma: float = 5e-5, lambda_: float = 5e-7, student_channels: int = 256,
                 teacher_channels: int = 256, num_levels: int = 5):
        super().__init__(student_channels, teacher_channels, num_levels)
        self.temp, self.alpha, self.beta, self.gamma, self.lambda_ = (temp, alpha, beta,
                                                                      gamma, lambda_)
        self.gc_student = nn.ModuleList(_GlobalContext(teacher_channels)
                                        for _ in range(num_levels))
        self.gc_teacher = nn.ModuleList(_GlobalContext(teacher_channels)
                                        for _ in range(num_levels))

    def init_weights(self) -> None:
        for block in list(self.gc_student) + list(self.gc_teacher):
            block.reset_parameters()

    def forward(self, student_feats, teacher_feats, data_samples, batch_input_shape,
                student_cls_scores=None, fpn_levels=None, **_context) -> dict:
        boxes = self.gt_boxes(data_samples)
        n = student_feats[0].shape[0]
        fg = bg = att = glob = student_feats[0].new_zeros(())
        for level, fs, ft in self.level_pairs(student_feats, teacher_feats, fpn_levels):
            s_t, c_t = spatial_attention(ft, self.temp), channel_attention(ft, self.temp)
            s_s, c_s = spatial_attention(fs, self.temp), channel_attention(fs, self.temp)
            tar, scale = target_masks(boxes, batch_input_shape, fs.shape[-2:])
            weight = torch.sqrt(s_t) * torch.sqrt(c_t)
            sq = ((ft - fs) * weight) ** 2
            fg = fg + (sq * tar * scale).sum()
            bg = bg + (sq * (1 - tar) * scale).sum()
            att = att + (c_t - c_s).abs().sum() + (s_t - s_s).abs().sum()
            glob = glob + ((self.gc_teacher[level](ft) - self.gc_student[level](fs)) ** 2).sum()
        return {"loss_fgd_fg": self.alpha * fg / n, "loss_fgd_bg": self.beta * bg / n,
                "loss_fgd_att": self.gamma * att / n, "loss_fgd_global": self.lambda_ * glob / n}
