"""The DIPKD distillation loss: SNS -> KLD (or Eq. 2) on every FPN level, plus RIT.

L = L_gt + alpha * L_tar + beta * L_ntar + gamma * L_rit                      (Eq. 14, 20)

Switches for the ablation (Table 3): ``sns`` (Eq. 7 denoising of both features, teacher's
attention), ``kld`` (Eq. 11-14; when off while SNS is on, the feature loss is the plain Eq. 2
MSE on the denoised features, weighted by ``mse_weight``), ``rit`` (Eq. 15-19). A feature
loss exists when SNS or KLD is on: with all three off nothing is distilled, which is how the
paper's Table 3 reads (its first row repeats the student baseline of Table 1), and "RIT only"
is RIT alone.

Returned names: ``loss_kd_tar``, ``loss_kd_ntar`` (KLD on), ``loss_kd_mse`` (KLD off, SNS on),
``loss_rit`` (RIT on).
"""
from __future__ import annotations

import torch
from torch import nn

from .adapter import build_adapter
from .feature_mse import feature_mse
from .kld import kld_level_losses
from .rit import ReverseInformationTransfer
from .sns import SelectiveNoiseSuppression


class DIPKDLoss(nn.Module):
    def __init__(self, sns: bool = True, kld: bool = True, rit: bool = True,
                 alpha: float = 5e-5, beta: float = 3.5e-5, gamma: float = 4.5e-7,
                 tau: float = 0.5, mask_rate: float = 0.25, wavelet: str = "db1",
                 levels: int = 3, threshold: str = "std", threshold_scale: float = 0.5,
                 mse_weight: float = 1.0, student_channels: int = 256,
                 teacher_channels: int = 256, num_classes: int = 1, rit_kernel: int = 3):
        super().__init__()
        if not 0.0 <= mask_rate <= 1.0:
            raise ValueError(f"mask_rate must be in [0, 1], got {mask_rate}")
        self.use_sns, self.use_kld, self.use_rit = sns, kld, rit
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.mask_rate, self.mse_weight = mask_rate, mse_weight
        self.adapter = build_adapter(student_channels, teacher_channels)
        self.sns = SelectiveNoiseSuppression(tau, wavelet, levels, threshold, threshold_scale)
        self.rit = ReverseInformationTransfer(num_classes, rit_kernel) if rit else None

    def forward(self, student_feats, teacher_feats, data_samples, batch_input_shape,
                student_cls_scores=None, **_context) -> dict:
        losses = {}
        n = student_feats[0].shape[0]
        if self.use_sns or self.use_kld:
            boxes = [s.gt_instances.bboxes for s in data_samples]
            tar = ntar = mse = student_feats[0].new_zeros(())
            for fs, ft in zip(student_feats, teacher_feats):
                fs = self.adapter(fs)
                ft = ft.detach()
                if self.use_sns:
                    fs, ft = self.sns.purify_pair(fs, ft)
                if self.use_kld:
                    lt, ln = kld_level_losses(fs, ft, boxes, batch_input_shape, self.mask_rate)
                    tar, ntar = tar + lt, ntar + ln
                else:
                    mse = mse + feature_mse(fs, ft)
            if self.use_kld:
                losses["loss_kd_tar"] = self.alpha * tar / n
                losses["loss_kd_ntar"] = self.beta * ntar / n
            else:
                losses["loss_kd_mse"] = self.mse_weight * mse
        if self.use_rit:
            if student_cls_scores is None:
                raise ValueError("RIT needs the student's classification maps")
            losses["loss_rit"] = self.gamma * self.rit(student_feats, student_cls_scores)
        return losses


class FitNetLoss(nn.Module):
    """FitNet / DIPKD Eq. 2: plain MSE between adapted student and teacher FPN features."""

    def __init__(self, weight: float = 1.0, student_channels: int = 256,
                 teacher_channels: int = 256):
        super().__init__()
        self.weight = weight
        self.adapter = build_adapter(student_channels, teacher_channels)

    def forward(self, student_feats, teacher_feats, data_samples=None, batch_input_shape=None,
                student_cls_scores=None, **_context) -> dict:
        total = student_feats[0].new_zeros(())
        for fs, ft in zip(student_feats, teacher_feats):
            total = total + feature_mse(self.adapter(fs), ft)
        return {"loss_kd_mse": self.weight * total}
