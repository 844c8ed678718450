"""Speckle metrics with their standard definitions (DIPKD Figure 3 compares them for the
original, FFT low-pass and SNS-denoised teacher FPN features).

- ENL, equivalent number of looks: mean^2 / variance over a homogeneous region; for L-look
  intensity speckle it equals L. Higher = smoother.
- SSI, speckle suppression index (Sheng & Xia 1996): the denoised image's coefficient of
  variation over the original's, sqrt(var(D))/mean(D) * mean(O)/sqrt(var(O)); below 1 means
  speckle was suppressed (the paper plots SSI^-1, higher = better).
- SMPI, speckle suppression and mean preservation index (Shamsoddini & Trinder 2010):
  Q * sqrt(var(D))/sqrt(var(O)) with Q = 1 + |mean(O) - mean(D)|; lower is better, it also
  penalises a shifted mean (the paper plots SMPI^-1).
All take numpy arrays or tensors and an optional boolean mask of the region to use.
"""
from __future__ import annotations

import numpy as np


def _values(x, mask=None) -> np.ndarray:
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    arr = arr.astype(np.float64)
    return arr[np.asarray(mask, bool)] if mask is not None else arr.ravel()


def enl(x, mask=None) -> float:
    v = _values(x, mask)
    var = v.var()
    return float(v.mean() ** 2 / var) if var > 0 else float("inf")


def ssi(original, denoised, mask=None) -> float:
    o, d = _values(original, mask), _values(denoised, mask)
    return float((d.std() / d.mean()) * (o.mean() / o.std()))


def smpi(original, denoised, mask=None) -> float:
    o, d = _values(original, mask), _values(denoised, mask)
    q = 1.0 + abs(o.mean() - d.mean())
    return float(q * d.std() / o.std())


def fft_lowpass(x: np.ndarray, keep: float = 0.25) -> np.ndarray:
    """The FFT baseline of Figure 3: keep the central ``keep`` fraction of the (shifted)
    spectrum along each of the last two axes, zero the rest, transform back."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    spec = np.fft.fftshift(np.fft.fft2(x, axes=(-2, -1)), axes=(-2, -1))
    h, w = x.shape[-2:]
    kh, kw = max(1, int(round(h * keep / 2))), max(1, int(round(w * keep / 2)))
    mask = np.zeros((h, w), bool)
    mask[h // 2 - kh:h // 2 + kh + 1, w // 2 - kw:w // 2 + kw + 1] = True
    out = np.fft.ifft2(np.fft.ifftshift(spec * mask, axes=(-2, -1)), axes=(-2, -1))
    return out.real.astype(x.dtype)
