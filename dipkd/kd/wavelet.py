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
2*N_c - L + 2 samples, exactly as pywt's ``idwt``. Both axes at once: the 2-D filters are
the separable products, so one level is one ``conv2d`` (one ``conv_transpose2d`` back).
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


def _symmetric_index(n: int, pad: int, device) -> torch.Tensor:
    """Indices of x extended by ``pad`` half-sample-symmetric samples on both sides, minus the
    first one (the alignment of pywt's ``dwt``)."""
    i = torch.arange(-pad, n + pad, device=device) % (2 * n)
    return torch.where(i < n, i, 2 * n - 1 - i)[1:]


def _extend(x: torch.Tensor, dim: int, pad: int, used: int) -> torch.Tensor:
    """The first ``used`` samples along ``dim`` of x extended by ``pad`` half-sample symmetric
    samples on both sides minus the first one (indices :func:`_symmetric_index`), built from
    flipped edge slices; only what the filter reaches is materialised (nothing at all for
    Haar on an even length)."""
    n = x.shape[dim]
    if pad > n:  # the mirror wraps more than once: gather
        return _take(x.index_select(dim, _symmetric_index(n, pad, x.device)), dim, 0, used)
    parts = [_take(x, dim, 0, pad - 1).flip(dim)] if pad > 1 else []
    parts.append(x)
    right = used - (pad - 1) - n
    if right > 0:
        parts.append(_take(x, dim, n - right, n).flip(dim))
    out = torch.cat(parts, dim) if len(parts) > 1 else x
    return _take(out, dim, 0, used)


def _take(x: torch.Tensor, dim: int, start: int, stop: int, step: int = 1) -> torch.Tensor:
    index = [slice(None)] * x.dim()
    index[dim] = slice(start, stop, step)
    return x[tuple(index)]


def _dwt_axis(x: torch.Tensor, wavelet: pywt.Wavelet, dim: int):
    """One analysis step along ``dim``: (approximation, detail). With the symmetric extension
    x_ext, ``c[i] = sum_k h[L-1-k] x_ext[2i + 1 + k]``, written as L strided slices (a
    polyphase form: cheaper on CPU than a convolution with one input channel)."""
    n, length = x.shape[dim], wavelet.dec_len
    n_out = (n + length - 1) // 2
    xp = _extend(x, dim, length - 1, length + 2 * n_out - 2)
    lo = hi = None
    for k in range(length):
        tap = _take(xp, dim, k, k + 2 * n_out - 1, 2)
        lo_k = wavelet.dec_lo[length - 1 - k] * tap
        hi_k = wavelet.dec_hi[length - 1 - k] * tap
        lo = lo_k if lo is None else lo + lo_k
        hi = hi_k if hi is None else hi + hi_k
    return lo, hi


def _idwt_axis(a: torch.Tensor, d: torch.Tensor, wavelet: pywt.Wavelet, dim: int):
    """One synthesis step along ``dim`` (pywt ``idwt``, symmetric mode): the transposed
    filtering ``full[2i + k] = sum rec_lo[k] a[i] + rec_hi[k] d[i]``, cropped to
    2*N_c - L + 2 samples from L - 2 on. Output sample m gets the taps k = m + L - 2 - 2i of
    its parity, so each parity is a sum of L/2 shifted slices."""
    length, nc = wavelet.rec_len, a.shape[dim]
    out_len = 2 * nc - length + 2
    phases = []
    for parity in (0, 1):  # full index m' = m + L - 2, m = 2j + parity
        acc = None
        for k in range((length - 2 + parity) % 2, length, 2):
            # full[m'] with m' - k = 2i: i = (m' - k) / 2 for m = 2j + parity
            first_i = (length - 2 + parity - k) // 2    # i for j = 0
            count = (out_len - parity + 1) // 2
            lo_i, hi_i = first_i, first_i + count
            pad_lo, pad_hi = max(0, -lo_i), max(0, hi_i - nc)
            seg = None
            for coef, band in ((wavelet.rec_lo[k], a), (wavelet.rec_hi[k], d)):
                part = coef * _take(band, dim, max(lo_i, 0), min(hi_i, nc))
                seg = part if seg is None else seg + part
            if pad_lo or pad_hi:
                pads = [0, 0] * (seg.dim() - dim % seg.dim() - 1) + [pad_lo, pad_hi]
                seg = F.pad(seg, pads)
            acc = seg if acc is None else acc + seg
        phases.append(acc)
    even, odd = phases
    if odd.shape[dim] < even.shape[dim]:
        pads = [0, 0] * (odd.dim() - dim % odd.dim() - 1) + [0, 1]
        odd = F.pad(odd, pads)
    out = torch.stack([even, odd], dim=dim % even.dim() + 1).flatten(dim % even.dim(),
                                                                     dim % even.dim() + 1)
    return _take(out, dim, 0, out_len)


def dwt2(x: torch.Tensor, wavelet):
    """One 2-D level on the last two axes: ``(cA, (cH, cV, cD))`` as ``pywt.dwt2``."""
    wavelet = _wavelet(wavelet) if isinstance(wavelet, str) else wavelet
    lo_w, hi_w = _dwt_axis(x, wavelet, -1)                  # along width
    ca, ch = _dwt_axis(lo_w, wavelet, -2)                    # ch: detail along height
    cv, cd = _dwt_axis(hi_w, wavelet, -2)
    return ca, (ch, cv, cd)


def idwt2(ca: torch.Tensor, details, wavelet) -> torch.Tensor:
    """Inverse of :func:`dwt2` (``pywt.idwt2``)."""
    wavelet = _wavelet(wavelet) if isinstance(wavelet, str) else wavelet
    ch, cv, cd = details
    lo_w = _idwt_axis(ca, ch, wavelet, -2)
    hi_w = _idwt_axis(cv, cd, wavelet, -2)
    return _idwt_axis(lo_w, hi_w, wavelet, -1)


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
