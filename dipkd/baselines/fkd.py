"""FKD: Improve Object Detection with Feature-based Knowledge Distillation: Towards Accurate
and Efficient Detectors (Zhang & Ma, ICLR 2021); called FBKD in mmrazor.

Per FPN level, with A^S / A^T the student's / teacher's feature (N, C, H, W) and
g^s(A) = mean_k |A_k| (N, 1, H, W), g^c(A) = mean_{i,j} |A_{:,i,j}| (N, C, 1, 1):

- attention masks, from BOTH detectors (temperature T):
  M^s = HW * softmax_{i,j}((g^s(A^S) + g^s(A^T)) / T),
  M^c = C * softmax_k((g^c(A^S) + g^c(A^T)) / T)
  (computed with ``dipkd.kd.attention`` on |A^S| + |A^T|, whose channel / spatial means are
  g(A^S) + g(A^T)); they weight the loss and receive no gradient.
- attention-masked loss   L_AM = ( sum_{n,k,i,j} (A^T - f(A^S))^2 M^s_{ij} M^c_k )^(1/2),
  f a 1x1 conv adaptation layer per level.
- attention transfer loss L_AT = ||g^s(A^S) - g^s(A^T)||_2 + ||g^c(A^S) - g^c(A^T)||_2,
  the spatial and the channel term each with its own weight.
- non-local distillation  L_NLD = ||a(r^S) - r^T||_2, r = z of a non-local block
  (Wang et al. 2018, dot-product form, z = x + W(y), W = 1x1 conv + BN with zero-initialised
  BN so z = x at the start), one block for the student and one for the teacher per level;
  a = 1x1 conv on the student's relation.
Norms are over the whole batch tensor (not squared), as in the paper and the authors' code;
every term is summed over the levels, nothing is divided by the batch size.

Defaults are the authors' two-stage (Faster R-CNN) settings as released in their code and
reproduced in mmrazor (../shared/notes/official_code.md): T 0.5, L_AM weight 7e-5, channel and
spatial L_AT weights 4e-3 each, L_NLD weight 7e-5; non-local inter channels C/4 with max-pool
sub-sampling stride 8 on P2 and 4 on P3, C/2 and stride 2 on the coarser levels.
No GT box is used: images without ships need no special case.

Deviations from the paper (all minor):
- The masks are detached (as in the authors' code); the paper does not say whether gradients
  flow through them.
- The weights and the non-local details (dot-product form, sub-sampling strides, inter
  channels, the student-side adaptation a) come from the authors' code, the paper gives no
  per-term numbers for these. Its code differs from the paper's equations in ways we do NOT
  follow: it averages two separately softmaxed masks instead of one softmax of the summed
  attention, drops the channel mask in its two-stage version, and its L_AT compares signed
  channel / spatial means through extra learnable adaptations (Linear, 3x3 conv) instead of the
  attention maps g.
- The sub-sampling max-pool uses ceil mode and a window clipped to the map, so the coarsest
  levels of small (odd-sized) images keep at least one pooled cell.
- All five FPN levels are distilled (mmrazor's config uses P2-P5; the authors' code all levels).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from mmdet.registry import MODELS

from ..kd.attention import channel_attention, spatial_attention
from ..kd.feature_kd import FeatureKDLoss


class _NonLocal(nn.Module):
    """Dot-product non-local block: z = x + W(theta(x)^T phi(x) g(x) / N_p)."""

    def __init__(self, channels: int, inter_channels: int, stride: int):
        super().__init__()
        self.inter, self.stride = inter_channels, stride
        self.theta = nn.Conv2d(channels, inter_channels, 1)
        self.phi = nn.Conv2d(channels, inter_channels, 1)
        self.g = nn.Conv2d(channels, inter_channels, 1)
        self.out = nn.Sequential(nn.Conv2d(inter_channels, channels, 1), nn.BatchNorm2d(channels))
        self.reset_bn()

    def reset_bn(self) -> None:
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)

    def _pool(self, x):
        if self.stride <= 1:
            return x
        k = (min(self.stride, x.shape[-2]), min(self.stride, x.shape[-1]))
        return F.max_pool2d(x, kernel_size=k, stride=k, ceil_mode=True)

    def forward(self, x):
        n, _, h, w = x.shape
        theta = self.theta(x).reshape(n, self.inter, -1).transpose(1, 2)   # N, HW, c'
        phi = self._pool(self.phi(x)).reshape(n, self.inter, -1)            # N, c', P
        g = self._pool(self.g(x)).reshape(n, self.inter, -1).transpose(1, 2)  # N, P, c'
        rel = torch.bmm(theta, phi) / phi.shape[-1]                         # N, HW, P
        y = torch.bmm(rel, g).transpose(1, 2).reshape(n, self.inter, h, w)
        return x + self.out(y)


def _level_setting(values, level):
    values = tuple(values)
    return values[min(level, len(values) - 1)]


@MODELS.register_module()
class FKDLoss(FeatureKDLoss):
    method = "fkd"
    display_name = "FKD"
    venue = "ICLR21"
    reference = ("Zhang & Ma, Improve Object Detection with Feature-based Knowledge "
                 "Distillation (ICLR 2021)")

    def __init__(self, temp: float = 0.5, mask_weight: float = 7e-5,
                 channel_weight: float = 4e-3, spatial_weight: float = 4e-3,
                 nonlocal_weight: float = 7e-5, student_channels: int = 256,
                 teacher_channels: int = 256, num_levels: int = 5,
                 nonlocal_reduction=(4, 4, 2, 2, 2), nonlocal_stride=(8, 4, 2, 2, 2)):
        super().__init__(student_channels, teacher_channels, num_levels)   # channel match only
        if temp <= 0:
            raise ValueError(f"temp must be > 0, got {temp}")
        self.temp = temp
        self.mask_weight, self.channel_weight = mask_weight, channel_weight
        self.spatial_weight, self.nonlocal_weight = spatial_weight, nonlocal_weight
        c = teacher_channels
        self.feat_adaptation = nn.ModuleList(nn.Conv2d(c, c, 1) for _ in range(num_levels))
        blocks = [(max(1, c // _level_setting(nonlocal_reduction, lv)),
                   int(_level_setting(nonlocal_stride, lv))) for lv in range(num_levels)]
        self.student_nonlocal = nn.ModuleList(_NonLocal(c, i, s) for i, s in blocks)
        self.teacher_nonlocal = nn.ModuleList(_NonLocal(c, i, s) for i, s in blocks)
        self.nonlocal_adaptation = nn.ModuleList(nn.Conv2d(c, c, 1) for _ in range(num_levels))

    def init_weights(self) -> None:
        for block in (*self.student_nonlocal, *self.teacher_nonlocal):
            block.reset_bn()

    def forward(self, student_feats, teacher_feats, data_samples=None, batch_input_shape=None,
                fpn_levels=None, **_context) -> dict:
        mask = spatial = channel = nonlocal_ = student_feats[0].new_zeros(())
        for level, fs, ft in self.level_pairs(student_feats, teacher_feats, fpn_levels):
            with torch.no_grad():
                both = fs.detach().abs() + ft.abs()
                m_s = spatial_attention(both, self.temp)     # HW softmax((g^s_S + g^s_T)/T)
                m_c = channel_attention(both, self.temp)     # C softmax((g^c_S + g^c_T)/T)
            # sqrt(sum (A^T - f(A^S))^2 M^s M^c), as a norm: a zero difference has gradient 0
            weighted = (ft - self.feat_adaptation[level](fs)) * torch.sqrt(m_s * m_c)
            mask = mask + torch.linalg.vector_norm(weighted)
            spatial = spatial + torch.linalg.vector_norm(
                fs.abs().mean(dim=1) - ft.abs().mean(dim=1))
            channel = channel + torch.linalg.vector_norm(
                fs.abs().mean(dim=(2, 3)) - ft.abs().mean(dim=(2, 3)))
            r_s = self.nonlocal_adaptation[level](self.student_nonlocal[level](fs))
            r_t = self.teacher_nonlocal[level](ft)
            nonlocal_ = nonlocal_ + torch.linalg.vector_norm(r_s - r_t)
        return {"loss_fkd_mask": self.mask_weight * mask,
                "loss_fkd_att": self.channel_weight * channel + self.spatial_weight * spatial,
                "loss_fkd_nonlocal": self.nonlocal_weight * nonlocal_}
