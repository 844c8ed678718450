"""What the feature-distillation losses share (DIPKD, FitNet and the Table 2 baselines).

Every KD loss compares the student's FPN features, mapped by an adaptation layer into the
teacher's channels (DIPKD Eq. 2 and 11: f_adp), with the teacher's, level by level, and most
read the ground-truth boxes. :class:`FeatureKDLoss` holds that once:

- ``adapter``: one 1x1 conv when the channel counts differ, identity otherwise
  (:func:`dipkd.kd.adapter.build_adapter`), unless the method passes its own (a per-level
  ``nn.ModuleList``, as DeFeat and FRS release, or a conv the method always applies);
- :meth:`level_pairs`: ``(FPN level, adapted student, detached teacher)`` per distilled
  level, after :meth:`check_levels`. Per-level modules are indexed by FPN level (0 = the
  finest output), not by position in the distilled list: the distiller passes the distilled
  levels as ``fpn_levels`` in every call's context, and a loss built with ``num_levels`` has
  modules for FPN levels 0 .. num_levels - 1 (``fpn_levels: [1, 2, 3]`` uses those of levels
  1-3; the config builder sizes ``num_levels`` to the last distilled level + 1);
- :meth:`gt_boxes`: the images' ground-truth boxes (x1, y1, x2, y2), from the data samples;
- ``needs_teacher_head`` (:class:`dipkd.kd.methods.KDMethod`): the distiller then passes the
  teacher's dense-head scores too.

What each method computes from those pairs stays in its own ``forward``.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from .adapter import build_adapter
from .methods import KDMethod


class FeatureKDLoss(KDMethod, nn.Module):
    """Base of the KD losses: adapter, level check, per-level pairs, GT boxes."""

    def __init__(self, student_channels: int = 256, teacher_channels: int = 256,
                 num_levels: int | None = None, adapter: nn.Module | None = None):
        nn.Module.__init__(self)
        self.num_levels = num_levels
        self.adapter = (build_adapter(student_channels, teacher_channels) if adapter is None
                        else adapter)

    def adapt(self, level: int, feat: torch.Tensor) -> torch.Tensor:
        """The student's level-``level`` features in the teacher's channels: the shared
        adapter, or the level's own when ``adapter`` is a ``ModuleList``."""
        if isinstance(self.adapter, nn.ModuleList):
            return self.adapter[level](feat)
        return self.adapter(feat)

    def check_levels(self, student_feats: Sequence[torch.Tensor],
                     teacher_feats: Sequence[torch.Tensor] | None = None,
                     fpn_levels: Sequence[int] | None = None) -> list[int]:
        """The FPN level of each input level (``fpn_levels``, else 0, 1, ...), after one line
        naming the mismatch: a different number of student and teacher levels or of FPN
        indices, or an FPN level beyond the loss's per-level modules (``num_levels``)."""
        name = type(self).__name__
        if teacher_feats is not None and len(student_feats) != len(teacher_feats):
            raise ValueError(f"{name}: {len(student_feats)} student levels vs "
                             f"{len(teacher_feats)} teacher levels")
        levels = list(range(len(student_feats))) if fpn_levels is None else list(fpn_levels)
        if len(levels) != len(student_feats):
            raise ValueError(f"{name}: {len(student_feats)} feature levels but fpn_levels "
                             f"{levels}")
        if self.num_levels is not None and levels and max(levels) >= self.num_levels:
            raise ValueError(f"{name}: FPN levels {levels} but the loss was built for "
                             f"num_levels={self.num_levels} (levels 0-{self.num_levels - 1})")
        return levels

    def level_pairs(self, student_feats: Sequence[torch.Tensor],
                    teacher_feats: Sequence[torch.Tensor],
                    fpn_levels: Sequence[int] | None = None
                    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """``(FPN level, adapted student features, detached teacher features)`` per level;
        ``fpn_levels`` (the distiller's context) gives the FPN level of each input level."""
        levels = self.check_levels(student_feats, teacher_feats, fpn_levels)
        for level, fs, ft in zip(levels, student_feats, teacher_feats):
            yield level, self.adapt(level, fs), ft.detach()

    @staticmethod
    def gt_boxes(data_samples) -> list[torch.Tensor]:
        """Each image's ground-truth boxes, (n_i, 4) x1, y1, x2, y2 in input pixels."""
        return [s.gt_instances.bboxes for s in data_samples]
