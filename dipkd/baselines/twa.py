"""TWA: Two-Way Assistant, a knowledge-distillation object-detection method for remote
sensing images (Xi Yang, Sheng Zhang, Weichao Yang; IEEE TGRS 2024, doi 10.1109/TGRS.2024.3371681).

What the paper publishes that we could read: its abstract only (no public code, no full text
found). TWA has two modules: the compression assistant module (CPAM), which "reduces the
background information and category interference by compressing and redistributing teacher
model features to the student model", and the multiscale adaptive assistant module (MAAM),
which "enhances feature knowledge through multiscale fusion, addressing feature disparities".
Evaluated on LEVIR (optical) and SSDD (SAR) with one- and two-stage detectors. Everything
below that goes beyond those two sentences is OUR reconstruction, built from the closest
well-known methods and stated as such.

Per FPN level l (student F^S after the adapter f, teacher F^T detached; sums over C, H, W):

CPAM (our reading: FGD's attention, Yang et al. CVPR 2022). "Compress": the teacher feature
is squeezed into a spatial map A^S = HW softmax(mean_c|F^T| / T) and a channel vector
A^C = C softmax(mean_hw|F^T| / T) (``dipkd.kd.attention``). "Redistribute": these weight the
imitation of the teacher at every element, decoupled into the GT-box region M and the rest,
each cell scaled by S (1/(H_r W_r) inside a box, 1/N_bg outside; ``dipkd.kd.masks``), so the
background is down-weighted (beta < alpha) and box-size balanced:
    L_fg  = alpha * sum M S A^S_t A^C_t (F^T - f(F^S))^2
    L_bg  = beta  * sum (1-M) S A^S_t A^C_t (F^T - f(F^S))^2
and the student's own compressed maps are pulled onto the teacher's:
    L_att = gamma * ( |A^S_t - A^S_s|_1 + |A^C_t - A^C_s|_1 )
(A^S_t A^C_t enters the squared term as sqrt(A^S_t A^C_t) on the difference, FGD's form.)

MAAM (our reading: ASFF-style adaptive fusion, Liu et al. 2019, followed by MGD's generation
block, Yang et al. ECCV 2022). For each level l the adapted student features of the levels
l-1, l, l+1 that exist are resized to level l's size (bilinear), fused with per-pixel weights
w_k = softmax_k(conv1x1_{l,k}(R_k)) and a generation block G_l (conv3x3-ReLU-conv3x3)
regenerates the teacher's feature of that level:
    L_maam = lambda * sum (G_l(sum_k w_k R_k) - F^T_l)^2
All four terms are summed over levels and divided by the batch size N.

Defaults (OUR choice; the paper's values are not available to us): temp 0.5, alpha 5e-5,
beta 2.5e-5, gamma 5e-5 (FGD's two-stage settings) and lambda 5e-7 (MGD's two-stage
generation weight, the same order as FGD's global-loss weight).

Choices and deviations (all ours, none verifiable against the paper):
- "Compressing" is read as squeezing the teacher feature into attention descriptors, not as a
  learnt channel bottleneck (a teacher-side learnable compressor trained only by the KD loss
  can collapse together with the student). No random mask (MGD's) is used in MAAM: the
  abstract mentions none.
- "Category interference": the GT mask is class-agnostic; SSDD/HRSID have one class (ship),
  so there is nothing to separate. A per-class variant for multi-class data (LEVIR) is not
  implemented.
- MAAM resizes with bilinear interpolation both ways (ASFF uses strided convs / max-pooling
  to downsample and nearest to upsample); it works for any (odd) level size. Each fusion
  weight is a single 1x1 conv C->1 per (target level, source offset), zero-initialised so the
  fusion starts as a plain average (ASFF compresses to 16 channels first). One fusion and one
  generation block per level; all learnable parts live in this module and train with the KD
  loss; the teacher gets no gradient. The fusion and generation modules are FPN level's
  (``fpn_levels: [1, 2, 3]`` uses those of levels 1-3); the fused neighbours are the
  distilled levels next to it.
- No logit / head distillation (the abstract describes feature modules only).
- Images without GT: all cells are background (L_fg = 0 for them), the rest is unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from mmdet.registry import MODELS

from ..kd.attention import channel_attention, spatial_attention
from ..kd.feature_kd import FeatureKDLoss
from ..kd.masks import target_masks

OFFSETS = (-1, 0, 1)   # MAAM fuses the level below, the level itself and the level above


class _AdaptiveFusion(nn.Module):
    """MAAM's fusion for one target level: per-pixel softmax weights over the available
    neighbouring levels (ASFF-like), then an MGD generation block."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.ModuleList(nn.Conv2d(channels, 1, kernel_size=1) for _ in OFFSETS)
        for conv in self.weight:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        self.generation = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1),
                                        nn.ReLU(inplace=True),
                                        nn.Conv2d(channels, channels, 3, padding=1))

    def fuse(self, feats: list[torch.Tensor], level: int) -> torch.Tensor:
        size = feats[level].shape[-2:]
        resized, logits = [], []
        for k, off in enumerate(OFFSETS):
            src = level + off
            if not 0 <= src < len(feats):
                continue
            r = feats[src]
            if r.shape[-2:] != size:
                r = F.interpolate(r, size=size, mode="bilinear", align_corners=False)
            resized.append(r)
            logits.append(self.weight[k](r))
        w = torch.softmax(torch.cat(logits, dim=1), dim=1)           # N, K, H, W
        return sum(w[:, k:k + 1] * r for k, r in enumerate(resized))

    def forward(self, feats: list[torch.Tensor], level: int) -> torch.Tensor:
        return self.generation(self.fuse(feats, level))


@MODELS.register_module()
class TWALoss(FeatureKDLoss):
    method = "twa"
    display_name = "TWA"
    venue = "TGRS24"
    reference = "Yang, Zhang, Yang (IEEE TGRS 2024), from its abstract"
    footnote = ("no public code or full text; reimplemented from the abstract's description of "
                "its two modules (CPAM as FGD-style attention-weighted imitation, MAAM as an "
                "ASFF-style multiscale fusion with an MGD generation block); hyperparameters "
                "are ours, not the paper's")

    def __init__(self, temp: float = 0.5, alpha: float = 5e-5, beta: float = 2.5e-5,
                 gamma: float = 5e-5, lambda_: float = 5e-7, student_channels: int = 256,
                 teacher_channels: int = 256, num_levels: int = 5):
        super().__init__(student_channels, teacher_channels, num_levels)
        if temp <= 0:
            raise ValueError(f"temp must be > 0, got {temp}")
        self.temp, self.alpha, self.beta, self.gamma, self.lambda_ = (temp, alpha, beta,
                                                                      gamma, lambda_)
        self.maam = nn.ModuleList(_AdaptiveFusion(teacher_channels) for _ in range(num_levels))

    def forward(self, student_feats, teacher_feats, data_samples, batch_input_shape,
                fpn_levels=None, **_context) -> dict:
        boxes = self.gt_boxes(data_samples)
        n = student_feats[0].shape[0]
        pairs = list(self.level_pairs(student_feats, teacher_feats, fpn_levels))
        adapted = [fs for _, fs, _ in pairs]       # MAAM fuses every level of the student
        fg = bg = att = maam = student_feats[0].new_zeros(())
        for k, (level, fs, ft) in enumerate(pairs):
            # CPAM: compress the teacher into attention, redistribute it as imitation weights
            s_t, c_t = spatial_attention(ft, self.temp), channel_attention(ft, self.temp)
            s_s, c_s = spatial_attention(fs, self.temp), channel_attention(fs, self.temp)
            tar, scale = target_masks(boxes, batch_input_shape, fs.shape[-2:])
            tar, scale = tar.to(fs), scale.to(fs)
            sq = ((ft - fs) * torch.sqrt(s_t * c_t)) ** 2
            fg = fg + (sq * tar * scale).sum()
            bg = bg + (sq * (1 - tar) * scale).sum()
            att = att + (s_t - s_s).abs().sum() + (c_t - c_s).abs().sum()
            # MAAM: adaptive multiscale fusion of the student's distilled levels around
            # this one (position k), with the fusion of FPN level ``level``
            maam = maam + ((self.maam[level](adapted, k) - ft) ** 2).sum()
        return {"loss_twa_cpam_fg": self.alpha * fg / n, "loss_twa_cpam_bg": self.beta * bg / n,
                "loss_twa_cpam_att": self.gamma * att / n,
                "loss_twa_maam": self.lambda_ * maam / n}
