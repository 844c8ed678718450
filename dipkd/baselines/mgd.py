"""MGD: Masked Generative Distillation (Yang et al., ECCV 2022).

Per FPN level: a random mask drops a fraction ``mask_ratio`` of the student's pixels
(the same mask for all channels), a generation block (conv3x3 - ReLU - conv3x3) must
regenerate the teacher's full feature from what is left:
L = alpha * sum (G(f(F^S) * M) - F^T)^2 / N, summed over levels.
Defaults are the authors' two-stage settings (alpha 5e-7, mask ratio 0.45; RetinaNet:
alpha 2e-5, ratio 0.65) on the levels their Faster R-CNN config hooks, ``neck.fpn_convs.0-3``
= P2-P5 (yzd-v/MGD, det/configs/distillers/mgd/
cascade_mask_rcnn_rx101_32x4d_distill_faster_rcnn_r50_fpn_2x_coco.py); on RetinaNet all five,
0-4 = P3-P7 (their retina config and open-mmlab/mmrazor
configs/distill/mmdet/mgd/mgd_fpn_retina_x101_retina_r50_2x_coco.py); ``methods.mgd.fpn_levels``.
One generation block per level, as in the authors' code.
Initialisation: the authors' generation block (yzd-v/MGD det/mmdet/distillation/losses/mgd.py,
and mmrazor's ``MGDConncetor`` in mmrazor/models/architectures/connectors/mgd_connector.py) has
no init of its own: both convs keep PyTorch's default ``Conv2d`` init (Kaiming-uniform with
a = sqrt(5), bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))), and their distiller never re-initialises
the loss modules. Ours is the same; :meth:`init_weights` (called by the distiller) re-draws
that default.
Left different from the released code: a single student adapter shared by the levels where
theirs has one ``align`` conv per level (both the identity with 256 channels, our case); the
random mask may come from a given ``torch.Generator`` (same distribution: each cell dropped with
probability ``mask_ratio``, shared by the channels).
"""
from __future__ import annotations

import torch
from torch import nn
from mmdet.registry import MODELS

from ..kd.feature_kd import FeatureKDLoss


@MODELS.register_module()
class MGDLoss(FeatureKDLoss):
    method = "mgd"
    display_name = "MGD"
    venue = "ECCV22"
    reference = "Yang et al., Masked Generative Distillation (ECCV 2022)"

    def __init__(self, alpha: float = 5e-7, mask_ratio: float = 0.45,
                 student_channels: int = 256, teacher_channels: int = 256, num_levels: int = 5):
        super().__init__(student_channels, teacher_channels, num_levels)
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.alpha, self.mask_ratio = alpha, mask_ratio
        c = teacher_channels
        self.generation = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True),
                          nn.Conv2d(c, c, 3, padding=1)) for _ in range(num_levels))

    def init_weights(self) -> None:
        """The reference's init: PyTorch's default ``Conv2d`` init of the generation blocks."""
        for block in self.generation:
            for m in block:
                if isinstance(m, nn.Conv2d):
                    m.reset_parameters()

    def forward(self, student_feats, teacher_feats, data_samples=None, batch_input_shape=None,
                student_cls_scores=None, generator: torch.Generator | None = None,
                fpn_levels=None, **_context) -> dict:
        n = student_feats[0].shape[0]
        total = student_feats[0].new_zeros(())
        for level, fs, ft in self.level_pairs(student_feats, teacher_feats, fpn_levels):
            keep = (torch.rand((fs.shape[0], 1, *fs.shape[-2:]), generator=generator,
                               device=fs.device) >= self.mask_ratio).to(fs.dtype)
            total = total + ((self.generation[level](fs * keep) - ft) ** 2).sum()
        return {"loss_mgd": self.alpha * total / n}
