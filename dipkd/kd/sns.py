"""Selective Noise Suppression (SNS, DIPKD Eq. 3-7): two forms, ``methods.dipkd.weighting``.

F' = f_wld( f_dim(A^C) * f_dim(A^S) * F )                                     (Eq. 7)

``authors`` (default): the authors' code (Mok-kn/Dip mmdet/losses/kd.py: ``get_wavelet`` on
the raw ``preds_T``/``preds_S``, then ``get_fea_loss`` multiplies both denoised features by
sqrt(A^S) * sqrt(A^C) of the teacher) denoises the RAW features and weights each by
sqrt(A^S A^C), so the squared difference of Eq. 11-12 carries the attention ONCE:
W * (f_wld(F^T) - f_wld(F^S))^2 with W = A^S A^C. That is the form alpha and beta were tuned
for. ``eq7``: Eq. 7 as printed, the attention multiplies both features before f_wld, so the
squared difference carries it squared (about 10x the mean weight on real-looking features).

with the spatial and channel attention maps of Eq. 3-6 (``attention.py``) broadcast over
the feature (f_dim) and the wavelet denoising f_wld of ``wavelet.py``.

Whose attention: following FGD and the authors' code, the TEACHER's spatial and channel
attention weight BOTH the teacher's feature and the student's (adapted) feature before the
wavelet denoising. Both are purified over the same key pixels and channels, and the student
is compared with the teacher on the teacher's notion of what matters; with the student's own
attention the student could move the weights to where it already agrees. The maps are
detached: they are weights, not something the student is trained to produce.
"""
from __future__ import annotations

import torch
from torch import nn

from .attention import attention_maps
from .wavelet import WaveletDenoiser

WEIGHTINGS = ("authors", "eq7")


class SelectiveNoiseSuppression(nn.Module):
    def __init__(self, tau: float = 0.5, wavelet: str = "db1", levels: int = 3,
                 threshold: str = "std", threshold_scale: float = 0.5,
                 odd_size: str = "resize"):
        super().__init__()
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.tau = tau
        self.denoise = WaveletDenoiser(wavelet, levels, threshold, threshold_scale,
                                       odd_size=odd_size)

    def attention(self, feat: torch.Tensor):
        """(A^S, A^C) of Eq. 5-6, detached (weights, not something to train)."""
        with torch.no_grad():
            return attention_maps(feat, self.tau)

    def forward(self, feat: torch.Tensor, attention_source: torch.Tensor | None = None,
                return_attention: bool = False):
        """Denoise ``feat`` weighted by the attention of ``attention_source`` (the teacher's
        feature) or, when it is None, of ``feat`` itself."""
        a_s, a_c = self.attention(feat if attention_source is None else attention_source)
        out = self.denoise(a_c * a_s * feat)
        return (out, a_s, a_c) if return_attention else out

    def purify_pair(self, student: torch.Tensor, teacher: torch.Tensor,
                    weighting: str = "eq7"):
        """SNS on a student/teacher pair with the teacher's attention, computed once; the
        teacher side without gradient. Returns ``(F^S', F^T', attention)``:

        - ``"eq7"``: ``(f_wld(A^C A^S F^S), f_wld(A^C A^S F^T), None)``;
        - ``"authors"``: ``(f_wld(F^S), f_wld(F^T), (A^S, A^C))``, the attention left for the
          loss to weight the squared difference once."""
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, "
                             f"got {weighting!r}")
        with torch.no_grad():
            a_s, a_c = attention_maps(teacher, self.tau)
            if weighting == "authors":
                teacher_clean = self.denoise(teacher)
            else:
                weight = a_c * a_s
                teacher_clean = self.denoise(teacher * weight)
        if weighting == "authors":
            return self.denoise(student), teacher_clean, (a_s, a_c)
        return self.denoise(student * weight), teacher_clean, None
