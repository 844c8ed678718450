"""Reverse Information Transfer (DIPKD Eq. 15-19): two forms, ``methods.dipkd.rit_form``.

``authors`` (default, :class:`ResidualScoreRIT`): what the authors' code computes
(Mok-kn/Dip mmdet/losses/kd.py, the "RIT" block of ``FeatureLoss.forward``), per distilled
level with its own block: the dense head's score logits s (N, A*Cls, H, W) of the level go
through a residual conv3x3-ReLU-conv3x3 block (A*Cls -> A*Cls channels), are clamped to
[-10, 10] and squashed, m = max over channels of sigmoid(s + block(s)) (+1e-6), the student
feature is multiplied by that map, and the channel mean of the product is regressed onto the
map with a mean-squared error: L_rit = mean_{n,i,j} (mean_k(F^S * m) - m)^2, summed over
levels. F^S is the student feature after the adaptation layer, as theirs is after
``self.align`` (the same feature while student and teacher necks have the same width); each
level's block is that FPN level's (``fpn_levels: [1, 2, 3]`` uses the blocks of levels 1-3).
Differences from their code, each a defect listed in ../shared/notes/official_code.md
that we do not copy: the scores are the student head's on the STUDENT's own features (their
distiller feeds the teacher's FPN features to the student's RPN, the paper says the
student's); the channel count is the head's anchors x classes (they hard-code 3, which breaks
RetinaNet); every level has a matching score map (no undefined-variable path). As in their
code the scores are not detached, so RIT also reaches the dense head. Their student-side
feature loss also takes F^S * m as the student's input of the wavelet step; with their
detached wavelet step that product never trained anything, and we keep F^S there (Eq. 11-12).

``paper`` (:class:`ReverseInformationTransfer`, below): Eq. 15-19 as printed.

The student's own FPN feature F^S of each level goes through the student's own
classification branch (captured by the distiller while the student computes its detection
loss, so no second forward):
- RetinaNet: ``bbox_head``'s classification map (N, A*Cls, H, W), sigmoid scores;
- Faster R-CNN: the RPN's objectness map (N, A*1, H, W) - the region proposals' scores.

Reading of the paper: a "feature region" is an anchor at a location; p_c = sigmoid(logit)
(Eq. 15); P^F = max over classes (Eq. 16). "Cls > 1" does not hold for one-class SAR ship
data: the max over one class is the identity. Eq. 17 sums P^F of the A anchors at each
location into the reverse-information map F^ri (N, 1, H, W). Eq. 18: F^fm = sigmoid(F^ri +
conv(F^ri)) with one learnable conv (1->1 channel, shared by all levels, trained with the
student). Eq. 19 sums over (i, j) only, so the student feature enters as its channel mean
(as in the authors' code): L_rit = sum_{ij} (sigmoid(F^fm * mean_k F^S) - F^fm)^2, summed
over levels and divided by the batch size; Eq. 20 weights it by gamma.

The class scores are detached: RIT shapes the student's features toward its own predictions,
it does not train the classifier to agree with them.
"""
from __future__ import annotations

import torch
from torch import nn


def _check_level(level: int, feat: torch.Tensor, logits: torch.Tensor) -> None:
    """A level's feature and score map must share the batch and the spatial size."""
    if feat.shape[-2:] != logits.shape[-2:] or feat.shape[0] != logits.shape[0]:
        raise ValueError(f"RIT level {level}: feature {tuple(feat.shape)} and scores "
                         f"{tuple(logits.shape)} do not match")


def _fpn_levels(student_feats, cls_logits, fpn_levels) -> list[int]:
    """The FPN level of each input level (``fpn_levels``, else 0, 1, ...), after checking
    that features, scores and levels come in the same number."""
    levels = list(range(len(student_feats))) if fpn_levels is None else list(fpn_levels)
    if not len(student_feats) == len(cls_logits) == len(levels):
        raise ValueError(f"RIT: {len(student_feats)} feature levels, {len(cls_logits)} score "
                         f"levels, FPN levels {levels}")
    return levels


class ReverseInformationTransfer(nn.Module):
    def __init__(self, num_classes: int = 1, conv_kernel: int = 3):
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2d(1, 1, conv_kernel, padding=conv_kernel // 2)

    def reverse_map(self, logits: torch.Tensor, level: int = 0) -> torch.Tensor:
        """F^ri of Eq. 15-17: (N, A*Cls, H, W) logits -> (N, 1, H, W)."""
        n, ch, h, w = logits.shape
        if ch % self.num_classes:
            raise ValueError(f"RIT level {level}: {ch} score channels are not a multiple of "
                             f"num_classes={self.num_classes}")
        probs = logits.detach().sigmoid().view(n, ch // self.num_classes, self.num_classes, h, w)
        return probs.max(dim=2).values.sum(dim=1, keepdim=True)

    def matcher(self, reverse_map: torch.Tensor) -> torch.Tensor:
        """F^fm of Eq. 18."""
        return torch.sigmoid(reverse_map + self.conv(reverse_map))

    def forward(self, student_feats, cls_logits, fpn_levels=None) -> torch.Tensor:
        """L_rit of Eq. 19 (not yet weighted by gamma); ``fpn_levels`` names the FPN level
        of each input level in errors."""
        levels = _fpn_levels(student_feats, cls_logits, fpn_levels)
        total = student_feats[0].new_zeros(())
        for level, feat, logits in zip(levels, student_feats, cls_logits):
            _check_level(level, feat, logits)
            fm = self.matcher(self.reverse_map(logits, level))
            total = total + ((torch.sigmoid(fm * feat.mean(dim=1, keepdim=True)) - fm) ** 2).sum()
        return total / student_feats[0].shape[0]


class ResidualScoreRIT(nn.Module):
    """The authors' RIT (module docstring, ``authors`` form): one residual score block per
    distilled level; ``forward`` returns the un-weighted L_rit summed over levels."""

    def __init__(self, score_channels: int, num_levels: int, clamp: float = 10.0):
        super().__init__()
        c = int(score_channels)
        self.clamp = clamp
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(c, c, 3, padding=1)) for _ in range(num_levels))

    def score_map(self, logits: torch.Tensor, level: int) -> torch.Tensor:
        """m (N, 1, H, W): max over channels of sigmoid(clamp(s + block(s))) + 1e-6."""
        residual = (self.blocks[level](logits) + logits).clamp(-self.clamp, self.clamp)
        return residual.sigmoid().max(dim=1, keepdim=True).values + 1e-6

    def forward(self, student_feats, cls_logits, fpn_levels=None) -> torch.Tensor:
        """The un-weighted L_rit; level k of the input is FPN level ``fpn_levels[k]`` (else
        k) and goes through that FPN level's block."""
        levels = _fpn_levels(student_feats, cls_logits, fpn_levels)
        if max(levels) >= len(self.blocks):
            raise ValueError(f"RIT: FPN levels {levels} but blocks for levels "
                             f"0-{len(self.blocks) - 1}")
        total = student_feats[0].new_zeros(())
        for level, feat, logits in zip(levels, student_feats, cls_logits):
            _check_level(level, feat, logits)
            if logits.shape[1] != self.blocks[level][0].in_channels:
                raise ValueError(f"RIT level {level}: {logits.shape[1]} score channels, the "
                                 f"block expects {self.blocks[level][0].in_channels}")
            m = self.score_map(logits, level)
            total = total + ((feat * m).mean(dim=1, keepdim=True) - m).square().mean()
        return total
