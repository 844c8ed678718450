"""Knowledge Level Decoupling losses (DIPKD Eq. 11-14).

L_tar  = sum_{k,i,j} M_tar * S * W * (F^T' - f(F^S'))^2                      (Eq. 11)
L_ntar = sum_{k,i,j} M_bg  * S * W * (F^T' - f(F^S'))^2                      (Eq. 12)
L_fea  = alpha * L_tar + beta * L_ntar                                        (Eq. 14)

M_tar is the binary target mask over the GT boxes, M_bg the background cells kept by the
random mask (``masks.random_background_mask``), S the scale mask of Eq. 9-10 and W the
attention weight A^S * A^C of the teacher when the loss carries it once (the authors' form,
see :mod:`dipkd.kd.dipkd_loss`; ``None`` = 1, Eq. 11-12 as printed). Eq. 8/13 literally put
the random n into M itself; the random drop acts on the non-target mask only, as in the
authors' code (``Mask_bg_mask``). Sums run over channels, positions (and, in the caller, FPN
levels) and are divided by the batch size by the caller, as FGD and the authors do.

The authors' non-target branch with its generation block ``f`` (Mok-kn/Dip
mmdet/losses/kd.py ``get_fea_loss``), :func:`generated_ntar_loss`:

L_ntar = sum_{k,i,j} ( m_keep * G(sqrt(m_keep) * sqrt(W) * F^S') - sqrt(m_bg) * sqrt(W) * F^T' )^2

with m_bg = M_bg_all / N_bg (all background cells) and m_keep the kept background cells
renormalised to sum 1 per image (their ``Mask_bg_mask /= sum``). The student's side is
scaled by m_keep twice (inside and after G) and the teacher's by sqrt(m_bg) once, exactly as
their code does; dropped cells leave the teacher's term as a constant.
"""
from __future__ import annotations

import torch

from .masks import random_background_mask, target_masks


def _weighted_sq(student, teacher, attention):
    """(N, 1, H, W): sum over channels of W * (F^T - F^S)^2; W = A^S * A^C or 1."""
    diff2 = (teacher.detach() - student).square()
    if attention is None:
        return diff2.sum(dim=1, keepdim=True)
    a_s, a_c = attention
    return (diff2 * a_c).sum(dim=1, keepdim=True) * a_s


def kld_level_losses(student: torch.Tensor, teacher: torch.Tensor, gt_boxes, img_shape,
                     mask_rate: float, generator: torch.Generator | None = None,
                     attention=None, mask_rule: str = "drop", generation=None):
    """(L_tar, L_ntar) of one FPN level, summed over the batch (not yet divided by N).

    ``attention``: the teacher's ``(A^S, A^C)`` weighting the squared difference once (None:
    unweighted). ``generation``: the authors' generation block on the student's non-target
    branch (:func:`generated_ntar_loss`); None: the identity, Eq. 12 as printed."""
    tar, scale = target_masks(gt_boxes, img_shape, student.shape[-2:])
    bg = random_background_mask(tar, mask_rate, generator, rule=mask_rule)
    sq = _weighted_sq(student, teacher, attention)
    l_tar = (sq * (tar * scale)).sum()
    if generation is None:
        return l_tar, (sq * (bg * scale)).sum()
    return l_tar, generated_ntar_loss(student, teacher, tar, scale, bg, attention, generation)


def generated_ntar_loss(student, teacher, tar, scale, kept, attention, generation):
    """The authors' L_ntar through the generation block (module docstring)."""
    m_bg = (1.0 - tar) * scale                                     # 1/N_bg on background
    n_kept = kept.sum(dim=(1, 2, 3), keepdim=True)
    m_keep = kept / n_kept.clamp(min=1.0)
    if attention is None:
        root_w = 1.0
    else:
        a_s, a_c = attention
        root_w = a_s.sqrt() * a_c.sqrt()
    fea_s = student * root_w
    fea_t = teacher.detach() * root_w
    gen = generation(fea_s * m_keep.sqrt()) * m_keep
    return (gen - fea_t * m_bg.sqrt()).square().sum()


def unsplit_level_loss(student: torch.Tensor, teacher: torch.Tensor, attention=None):
    """The feature loss with KLD off (Table 3's rows without KLD): Eq. 11-12 without the
    target / non-target split, i.e. M = 0 everywhere so S = 1/N_bg = 1/(H*W) on every cell:
    sum_{k,i,j} W * (F^T' - F^S')^2 / (H*W), summed over the batch. The caller weights it by
    alpha and divides by the batch size, so it is on the scale of the full model's loss."""
    sq = _weighted_sq(student, teacher, attention)
    return sq.sum() / (student.shape[-2] * student.shape[-1])
