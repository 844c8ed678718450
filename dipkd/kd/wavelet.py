"""Differentiable 2-D discrete wavelet transform and wavelet denoising in torch (f_wld of
DIPKD Eq. 7).

Filters come from PyWavelets; the transform reproduces ``pywt.wavedec2``/``pywt.waverec2``
with ``mode='symmetric'`` (half-sample symmetric extension) for any size, odd included.
Everything stays on the features' device, batched, with gradients (the authors' code goes
through numpy and cuts them).

One level along an axis of length N with filters of length L:
analysis ``c[i] = sum_j h[j] * x_ext[2i + 1 + (L-1) - j]`` over the signal extended by
L-1 mirrored samples on both sides (N_out = floor((N + L - 1) / 2)); synthesis is the
transposed convolution of the coefficients with the reconstruction filters, cropped to
2*N_c - L + 2 samples, exactly as pywt's ``idwt``.
"""
from __future__ import annotations

import math

import pywt
import torch
import torch.nn.functional as F
from torch import nn

THRESHOLD_RULES = ("std", "mad")


def _wavelet(name: str) -> pywt.Wavelet:
    if name not in pywt.wavelist(kind="discrete"):
        raise ValueError(f"unknown wavelet {name!r}; valid: discrete PyWavelets names such "
                         "as db1 (haar), db2, sym4, coif1")
    return pywt.Wavelet(name)


def _filters(wavelet: pywt.Wavelet, x: torch.Tensor, kind: str) -> torch.Tensor:
    lo, hi = ((wavelet.dec_lo, wavelet.dec_hi) if kind == "dec"
              else (wavelet.rec_lo, wavelet.rec_hi))
    w = torch.tensor([lo, hi], dtype=x.dtype, device=x.device).unsqueeze(1)  # (2, 1, L)
    return w.flip(-1) if kind == "dec" else w  # conv1d correlates: flip for a convolution


def _symmetric_index(n: int, pad: int, device) -> torch.Tensor:
    i = torch.arange(-pad, n + pad, device=device) % (2 * n)
    return torch.where(i < n, i, 2 * n - 1 - i)


def _dwt_last(x: torch.Tensor, wavelet: pywt.Wavelet):
    """One analysis step along the last axis: (approximation, detail)."""
    n, length = x.shape[-1], wavelet.dec_len
    xp = x.index_select(-1, _symmetric_index(n, length - 1, x.device))[..., 1:]
    lead = xp.shape[:-1]
    out = F.conv1d(xp.reshape(-1, 1, xp.shape[-1]), _filters(wavelet, x, "dec"), stride=2)
    out = out.reshape(*lead, 2, out.shape[-1])
    return out[..., 0, :], out[..., 1, :]


def _idwt_last(a: torch.Tensor, d: torch.Tensor, wavelet: pywt.Wavelet) -> torch.Tensor:
    """One synthesis step along the last axis (pywt ``idwt``, symmetric mode)."""
    length, nc = wavelet.rec_len, a.shape[-1]
    lead = a.shape[:-1]
    coeffs = torch.stack([a, d], dim=-2).reshape(-1, 2, nc)
    full = F.conv_transpose1d(coeffs, _filters(wavelet, a, "rec"), stride=2)
    out = full[..., length - 2:length - 2 + 2 * nc - length + 2]
    return out.reshape(*lead, out.shape[-1])


def dwt2(x: torch.Tensor, wavelet):
    """One 2-D level on the last two axes: ``(cA, (cH, cV, cD))`` as ``pywt.dwt2``."""
    wavelet = _wavelet(wavelet) if isinstance(wavelet, str) else wavelet
    lo_w, hi_w = _dwt_last(x, wavelet)                     # along width (axis -1)
    def along_h(t):
        a, d = _dwt_last(t.transpose(-1, -2), wavelet)
        return a.transpose(-1, -2), d.transpose(-1, -2)
    ca, ch = along_h(lo_w)                                  # ch: detail along height
    cv, cd = along_h(hi_w)
    return ca, (ch, cv, cd)


def idwt2(ca: torch.Tensor, details, wavelet) -> torch.Tensor:
    """Inverse of :func:`dwt2` (``pywt.idwt2``)."""
    wavelet = _wavelet(wavelet) if isinstance(wavelet, str) else wavelet
    ch, cv, cd = details
    def along_h(a, d):
        return _idwt_last(a.transpose(-1, -2), d.transpose(-1, -2), wavelet).transpose(-1, -2)
    lo_w = along_h(ca, ch)
    hi_w = along_h(cv, cd)
    return _idwt_last(lo_w, hi_w, wavelet)


def max_level(size: int, wavelet) -> int:
    wavelet = _wavelet(wavelet) if isinstance(wavelet, str) else wavelet
    return pywt.dwt_max_level(size, wavelet.dec_len)


def wavedec2(x: torch.Tensor, wavelet, level: int):
    """``[cA_n, (cH_n, cV_n, cD_n), ..., (cH_1, cV_1, cD_1)]`` as ``pywt.wavedec2``."""
    wavelet = _wavelet(wavelet) if isinstance(wavelet, str) else wavelet
    coeffs = []
    a = x
    for _ in range(level):
        a, details = dwt2(a, wavelet)
        coeffs.append(details)
    return [a, *reversed(coeffs)]


def waverec2(coeffs, wavelet) -> torch.Tensor:
    """Inverse of :func:`wavedec2` (``pywt.waverec2``: crop the approximation to the next
    detail size when it came out one sample larger)."""
    wavelet = _wavelet(wavelet) if isinstance(wavelet, str) else wavelet
    a = coeffs[0]
    for details in coeffs[1:]:
        h, w = details[0].shape[-2:]
        a = idwt2(a[..., :h, :w], details, wavelet)
    return a


def soft_threshold(x: torch.Tensor, thr) -> torch.Tensor:
    """``pywt.threshold(x, thr, mode='soft')``: sign(x) * max(|x| - thr, 0)."""
    return torch.sign(x) * torch.clamp(x.abs() - thr, min=0)


class WaveletDenoiser(nn.Module):
    """f_wld of Eq. 7: multi-level DWT, soft-thresholded detail bands, inverse DWT.

    Threshold rules (per sample, over all channels of that sample):
    - ``'std'`` (default, the authors' rule): at each level thr = ``threshold_scale`` x std of
      that level's horizontal detail band cH (population std), applied to cH, cV and cD;
    - ``'mad'``: Donoho-Johnstone universal threshold, sigma = median(|cD_1|) / 0.6745 of the
      finest diagonal band, thr = ``threshold_scale`` x sigma x sqrt(2 ln(H*W)) at every level
      (use ``threshold_scale=1`` for the textbook rule).
    Levels are capped by the input size (``pywt.dwt_max_level``); the output has exactly the
    input's H x W.
    """

    def __init__(self, wavelet: str = "db1", levels: int = 3, threshold: str = "std",
                 threshold_scale: float = 0.5):
        super().__init__()
        if threshold not in THRESHOLD_RULES:
            raise ValueError(f"unknown threshold rule {threshold!r}; valid: "
                             f"{', '.join(THRESHOLD_RULES)}")
        if levels < 1:
            raise ValueError("levels must be >= 1")
        self.wavelet = _wavelet(wavelet)
        self.levels = levels
        self.threshold = threshold
        self.threshold_scale = threshold_scale

    def levels_for(self, h: int, w: int) -> int:
        return max(0, min(self.levels, max_level(min(h, w), self.wavelet)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        level = self.levels_for(h, w)
        if level == 0:
            return x
        coeffs = wavedec2(x, self.wavelet, level)
        n = x.shape[0]
        shape = (n,) + (1,) * (x.dim() - 1)
        if self.threshold == "mad":
            finest = coeffs[-1][2].reshape(n, -1).abs()
            sigma = torch.quantile(finest, 0.5, dim=1) / 0.6745
            thr_all = (self.threshold_scale * sigma * math.sqrt(2 * math.log(h * w))).view(shape)
        out = [coeffs[0]]
        for ch, cv, cd in coeffs[1:]:
            if self.threshold == "std":
                thr = self.threshold_scale * ch.reshape(n, -1).std(dim=1, correction=0)
                thr = thr.view(shape)
            else:
                thr = thr_all
            out.append(tuple(soft_threshold(b, thr) for b in (ch, cv, cd)))
        return waverec2(out, self.wavelet)[..., :h, :w]


def denoise_reference_numpy(x, wavelet: str = "db1", levels: int = 3, threshold: str = "std",
                            threshold_scale: float = 0.5):
    """The same denoising with PyWavelets on numpy, one sample at a time (the reference for
    tests and the benchmark; no gradient)."""
    import numpy as np
    out = np.empty_like(x)
    h, w = x.shape[-2:]
    wav = pywt.Wavelet(wavelet)
    level = min(levels, pywt.dwt_max_level(min(h, w), wav.dec_len))
    if level < 1:
        return x.copy()
    for i, sample in enumerate(x):
        coeffs = pywt.wavedec2(sample, wav, mode="symmetric", level=level, axes=(-2, -1))
        if threshold == "mad":
            sigma = np.median(np.abs(coeffs[-1][2])) / 0.6745
            thr_all = threshold_scale * sigma * np.sqrt(2 * np.log(h * w))
        new = [coeffs[0]]
        for ch, cv, cd in coeffs[1:]:
            thr = threshold_scale * np.std(ch) if threshold == "std" else thr_all
            new.append(tuple(pywt.threshold(b, thr, mode="soft") for b in (ch, cv, cd)))
        rec = pywt.waverec2(new, wav, mode="symmetric", axes=(-2, -1))
        out[i] = rec[..., :h, :w]
    return out
