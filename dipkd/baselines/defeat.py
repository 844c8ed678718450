"""DeFeat: Distilling Object Detectors via Decoupled Features (Guo et al., CVPR 2021),
neck part.

The FPN features are decoupled by the GT mask (cells inside boxes vs outside) and each part
is imitated with its own weight, each normalised by twice its element count:
L = w_fg * sum M (F^T - F^S)^2 / (2 |M|) + w_bg * sum (1-M) (F^T - F^S)^2 / (2 |1-M|),
summed over levels. Defaults follow the authors' public code (neck fg 3, bg 12 as recorded in
../shared/notes/official_code.md).
Deviations: DeFeat also distils the RoI head's classification outputs with decoupled
foreground / background proposals (head cls fg/bg 2/2, temperature 1); that head part is not
implemented here, only the neck part, which is the part DIPKD's KLD builds on. Table 2 marks
the row with a footnote.
"""
from __future__ import annotations

from torch import nn

from ..kd.adapter import build_adapter
from ..kd.masks import target_masks


class DeFeatLoss(nn.Module):
    def __init__(self, weight_fg: float = 3.0, weight_bg: float = 12.0,
                 student_channels: int = 256, teacher_channels: int = 256):
        super().__init__()
        self.weight_fg, self.weight_bg = weight_fg, weight_bg
        self.adapter = build_adapter(student_channels, teacher_channels)

    def forward(self, student_feats, teacher_feats, data_samples, batch_input_shape,
                student_cls_scores=None, **_context) -> dict:
        boxes = [s.gt_instances.bboxes for s in data_samples]
        fg = bg = student_feats[0].new_zeros(())
        for fs, ft in zip(student_feats, teacher_feats):
            fs, ft = self.adapter(fs), ft.detach()
            tar, _ = target_masks(boxes, batch_input_shape, fs.shape[-2:])
            sq = (ft - fs) ** 2
            c = fs.shape[1]
            fg = fg + (sq * tar).sum() / max(1.0, 2.0 * c * float(tar.sum()))
            bg = bg + (sq * (1 - tar)).sum() / max(1.0, 2.0 * c * float((1 - tar).sum()))
        return {"loss_defeat_fg": self.weight_fg * fg, "loss_defeat_bg": self.weight_bg * bg}
