"""IFKD: Information Fusion with Knowledge Distillation for fine-grained remote sensing object
detection (Zhang and Yang, ACM MM 2024; public code Ningsui/IFKD).

Per FPN level l, with f a 3x3 conv adapter shared by the levels (the authors' ``ADAP_SINGLE``,
used even when the channel counts match), F^S_a = f(F^S), F^T the (detached) teacher feature and
z^S, z^T the dense head's classification logits (RetinaNet's ``bbox_head``; for Faster R-CNN
the RPN, the only dense head it has):

- HSM, hyperbolic similarity mask (no gradient): per cell, the Poincare-ball distance
  (curvature c) between student and teacher,
  D = 2/sqrt(c) artanh( sqrt(c) |(-x) (+)_c y| ),
  x = exp_0(F^S_a / sqrt(C)), y = exp_0(F^T / sqrt(C)),
  exp_0(v) = tanh(sqrt(c)|v|) v / (sqrt(c)|v|), (+)_c the Moebius addition
  a (+)_c b = ((1 + 2c<a,b> + c|b|^2) a + (1 - c|a|^2) b) / (1 + 2c<a,b> + c^2|a|^2|b|^2).
  Cells where the student is far from the teacher weigh more.
- FDR, frequency domain reconstruction (levels ``fdr_levels`` = 0, 1): with the FRS score map
  S = max_k sigmoid(z^T_k) of the teacher, each feature X is mapped to
  |w_c * IFFT2( shift^-1( shift(FFT2(X)) * (L S + 1 - L) ) )|, FFT with ortho norm, L the
  low-frequency square max(|u - H//2|, |v - W//2|) <= ``low_freq_ratio`` * min(H, W) / 2 of the
  shifted spectrum, w_c a learnable complex weight per channel (init N(0, 0.02^2)). The score
  rescaling is applied with probability ``fdr_prob`` (0.5), one draw per level and step shared
  by teacher and student; otherwise only the complex weight: |w_c X|.
  d = (FDR(F^T) - FDR(F^S_a))^2.
- EDE, external disturbance enhancement (the other levels, 2-4): the teacher feature, masked by
  a foreground mask M, goes through a generation block G (conv3x3-ReLU-conv3x3, one block shared
  by the levels, as in the authors' code) and the student regresses onto it:
  d = (G(F^T * M) - F^S_a)^2.
- L_feat = ``feat_weight`` * sum_l sum_{n,c,h,w} D d / sum_{n,h,w} D,
  L_cls  = ``cls_weight``  * sum_l sum_{n,k,h,w} D BCE(sigmoid(z^S), sigmoid(z^T)) / sum D.

Defaults are the authors' released settings (feat 1e-4, cls 1e-3, low-frequency ratio 0.1,
probability 0.5, curvature 1, FDR on levels 0-1 and EDE on 2-4, all five dense-head levels
distilled, ``methods.ifkd.fpn_levels``; one code for both detector types). ``fdr_levels`` are
FPN indices: with ``fpn_levels`` in the context, level k of the input is FPN level
``fpn_levels[k]``. Teacher tensors are detached; the adapter, the complex weight and G are
trained by this loss with the student.
Deviations:
1. No MobileSAM: EDE's mask M is the SAM segmentation of the image in the paper; its weights
   cannot be downloaded here, so M is the binary GT-box mask of the level (``dipkd.kd.masks``;
   all zero for an image without ships). Table 2 marks the row with a footnote.
2. HSM: the released code applies the Moebius formula to the raw FPN vectors (far outside the
   unit ball) and reduces over the width axis; we take the distance over channels per cell,
   after mapping each cell's vector, scaled to unit RMS (/ sqrt(C)), into the ball with exp_0.
3. FDR: the released code permutes the feature to (N, W, C, H) before its FFT (so it transforms
   channels x height and only runs on square maps) and draws the probability separately for
   teacher and student; we transform over (H, W) and share the draw.
4. The released code's EDE call omits an argument and its SAM mask is resized to (C, H), so it
   does not run as published; we use the mask at each level's own resolution (H, W).
Not deviations: the authors' two-stage code also distils the RPN. The learnable complex weight
scales teacher and student alike, so this loss alone can only shrink it (the authors' design,
kept).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from mmdet.registry import MODELS

from ..kd.feature_kd import FeatureKDLoss
from ..kd.masks import target_masks


def low_frequency_mask(h: int, w: int, ratio: float, device=None) -> torch.Tensor:
    """Bool (H, W): the centred square max(|u - H//2|, |v - W//2|) <= ratio * min(H, W) / 2 of a
    ``fftshift``-ed spectrum (always holds the zero frequency)."""
    u = (torch.arange(h, device=device) - h // 2).abs()
    v = (torch.arange(w, device=device) - w // 2).abs()
    return torch.maximum(u[:, None], v[None, :]) <= ratio * min(h, w) / 2


def poincare_distance(a: torch.Tensor, b: torch.Tensor, c: float = 1.0) -> torch.Tensor:
    """Per-cell Poincare-ball distance of two (N, C, H, W) maps -> (N, H, W), no gradient.

    Each cell's channel vector is scaled to unit RMS, mapped into the ball with exp_0 and the
    distance 2/sqrt(c) artanh(sqrt(c) |(-x) (+)_c y|) taken (float64)."""
    with torch.no_grad():
        sc = math.sqrt(c)
        n_ch = a.shape[1]

        def exp0(v):
            v = v.double() / math.sqrt(n_ch)
            r = v.norm(dim=1, keepdim=True).clamp_min(1e-15)
            return torch.tanh(sc * r) * v / (sc * r)

        x, y = -exp0(a), exp0(b)
        xy = (x * y).sum(1, keepdim=True)
        x2, y2 = (x * x).sum(1, keepdim=True), (y * y).sum(1, keepdim=True)
        num = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
        den = (1 + 2 * c * xy + c * c * x2 * y2).clamp_min(1e-15)
        arg = (sc * (num / den).norm(dim=1)).clamp(max=1 - 1e-5)
        return (2 / sc * torch.atanh(arg)).to(a.dtype)


@MODELS.register_module()
class IFKDLoss(FeatureKDLoss):
    method = "ifkd"
    display_name = "IFKD"
    venue = "ACMMM24"
    reference = "IFKD (ACM MM 2024), the authors' released code (Ningsui/IFKD)"
    footnote = ("MobileSAM weights are unavailable; the SAM mask of the external-disturbance "
                "step is replaced by the ground-truth box mask")
    needs_teacher_head = True

    def __init__(self, feat_weight: float = 1e-4, cls_weight: float = 1e-3,
                 fdr_levels=(0, 1), low_freq_ratio: float = 0.1, fdr_prob: float = 0.5,
                 curvature: float = 1.0, always_adapt: bool = True,
                 student_channels: int = 256, teacher_channels: int = 256):
        c = teacher_channels
        super().__init__(student_channels, c, adapter=(
            nn.Conv2d(student_channels, c, 3, padding=1) if always_adapt else None))
        if not 0.0 <= fdr_prob <= 1.0:
            raise ValueError(f"fdr_prob must be in [0, 1], got {fdr_prob}")
        if curvature <= 0:
            raise ValueError(f"curvature must be > 0, got {curvature}")
        self.feat_weight, self.cls_weight = feat_weight, cls_weight
        self.fdr_levels = tuple(int(x) for x in fdr_levels)
        self.low_freq_ratio, self.fdr_prob, self.curvature = low_freq_ratio, fdr_prob, curvature
        self.complex_weight = nn.Parameter(torch.randn(c, 2) * 0.02)
        self.generation = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True),
                                        nn.Conv2d(c, c, 3, padding=1))

    def fdr(self, x: torch.Tensor, score: torch.Tensor, rescale: bool) -> torch.Tensor:
        """Frequency domain reconstruction of (N, C, H, W) ``x`` with the (N, H, W) score map."""
        spec = torch.fft.fft2(x, norm="ortho")
        if rescale:
            h, w = x.shape[-2:]
            low = low_frequency_mask(h, w, self.low_freq_ratio, device=x.device)
            gain = torch.where(low, score, torch.ones_like(score))            # (N, H, W)
            shifted = torch.fft.fftshift(spec, dim=(-2, -1)) * gain[:, None]
            spec = torch.fft.ifftshift(shifted, dim=(-2, -1))
        out = torch.fft.ifft2(spec, norm="ortho")
        weight = torch.view_as_complex(self.complex_weight)                  # (C,)
        return (out * weight[None, :, None, None]).abs()

    def forward(self, student_feats, teacher_feats, data_samples, batch_input_shape,
                student_cls_scores=None, teacher_cls_scores=None,
                generator: torch.Generator | None = None, fpn_levels=None,
                **_context) -> dict:
        if student_cls_scores is None or teacher_cls_scores is None:
            raise ValueError("IFKD needs the student's and teacher's dense-head scores")
        boxes = self.gt_boxes(data_samples)
        feat = cls = student_feats[0].new_zeros(())
        for (level, fs, ft), zs, zt in zip(self.level_pairs(student_feats, teacher_feats,
                                                            fpn_levels),
                                           student_cls_scores, teacher_cls_scores):
            zt = zt.detach()
            hsm = poincare_distance(fs, ft, self.curvature)                  # (N, H, W)
            norm = hsm.sum().clamp_min(1e-12)
            if level in self.fdr_levels:                # both FPN indices
                score = torch.sigmoid(zt).max(dim=1).values                  # FRS map
                rescale = bool(torch.rand(1, generator=generator).item() < self.fdr_prob)
                d = (self.fdr(ft, score, rescale) - self.fdr(fs, score, rescale)) ** 2
            else:
                fg, _ = target_masks(boxes, batch_input_shape, ft.shape[-2:])
                d = (self.generation(ft * fg.to(ft)) - fs) ** 2
            feat = feat + (d * hsm[:, None]).sum() / norm
            bce = F.binary_cross_entropy_with_logits(zs, torch.sigmoid(zt), reduction="none")
            cls = cls + (bce * hsm[:, None]).sum() / norm
        return {"loss_ifkd_feat": self.feat_weight * feat, "loss_ifkd_cls": self.cls_weight * cls}
