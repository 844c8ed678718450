"""Differentiable 2-D discrete wavelet transform and wavelet denoising in torch (f_wld of
DIPKD Eq. 7).

Filters come from PyWavelets; the transform reproduces ``pywt.wavedec2``/``pywt.waverec2``
with ``mode='symmetric'`` (half-sample symmetric extension) for any size, odd included.
Everything stays on the features' device, batched, with gradients (the authors' code goes
through numpy and cuts them).

One level along an axis of length N with filters of length L:
analysis ``c[i] = sum_j h[j] * x_ext[2i + 1 + (L-1) - j]`` over the signal extended by
L-1 mirrored samples on both sides (N_out = floor((N + L - 1) / 2)); synthesis is the
transposed filtering of the coefficients with the reconstruction filters, cropped to
2*N_c - L + 2 samples, exactly as pywt's ``idwt``. Two implementations:
- any wavelet: separable, one axis at a time, each filter tap a strided slice (polyphase);
- Haar/db1 (the default): the 2x2-block sums and differences in a few fused passes, as
  custom autograd functions whose backward is the other transform (the transform is
  orthonormal on even sizes; an odd axis first repeats its edge sample, which is what the
  half-sample symmetric extension amounts to for a length-2 filter).
Speed on CPU (``benchmarks/bench_kd.py``) is bound by memory traffic, so the code avoids
fresh full-size tensors where it can (in-place thresholding when no graph is recorded).
"""
from __future__ import annotations

import math

import pywt
import torch
import torch.nn.functional as F
from torch import nn

from dipkd.kd import haar_kernel

THRESHOLD_RULES = ("std", "mad")
ODD_SIZES = ("resize", "crop")


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


def _is_haar(wavelet: pywt.Wavelet) -> bool:
    return wavelet.dec_len == 2 and wavelet.name in ("haar", "db1")


def _haar_analysis(x: torch.Tensor):
    """Orthonormal 2-D Haar step of an even-sized x: with x00, x01, x10, x11 the samples of
    each 2x2 block, cA = (x00+x01+x10+x11)/2, cH = (x00+x01-x10-x11)/2,
    cV = (x00-x01+x10-x11)/2, cD = (x00-x01-x10+x11)/2 (pywt's signs). Row pairs first,
    halved by ``lerp`` so no separate scaling pass is needed. Returns ``(cA, details)`` with
    the details stacked on a new first axis: ``details[0..2] = cH, cV, cD``."""
    *lead, h, w = x.shape
    rows = x.reshape(*lead, h // 2, 2, w)
    s = torch.lerp(rows[..., 0, :], rows[..., 1, :], 0.5)     # (even + odd row) / 2
    t = rows[..., 0, :] - s                                    # (even - odd row) / 2
    s0, s1, t0, t1 = s[..., 0::2], s[..., 1::2], t[..., 0::2], t[..., 1::2]
    details = x.new_empty(3, *lead, h // 2, w // 2, dtype=s.dtype)
    torch.add(t0, t1, out=details[0])
    torch.sub(s0, s1, out=details[1])
    torch.sub(t0, t1, out=details[2])
    return s0 + s1, details


def _haar_synthesis(ca: torch.Tensor, details: torch.Tensor) -> torch.Tensor:
    """Inverse (= transpose) of :func:`_haar_analysis`, written straight into the
    interleaved output."""
    *lead, h, w = ca.shape
    ch, cv, cd = details
    dtype = torch.result_type(ca, details)
    s = ca.new_empty(*lead, h, w, 2, dtype=dtype)
    t = torch.empty_like(s)
    torch.lerp(ca, cv, 0.5, out=s[..., 0])                    # s0 = (cA + cV) / 2
    torch.sub(ca, s[..., 0], out=s[..., 1])                    # s1 = (cA - cV) / 2
    torch.lerp(ch, cd, 0.5, out=t[..., 0])
    torch.sub(ch, t[..., 0], out=t[..., 1])
    s, t = s.view(*lead, h, 2 * w), t.view(*lead, h, 2 * w)
    out = ca.new_empty(*lead, h, 2, 2 * w, dtype=dtype)
    torch.add(s, t, out=out[..., 0, :])                        # even rows
    torch.sub(s, t, out=out[..., 1, :])                        # odd rows
    return out.view(*lead, 2 * h, 2 * w)


class _HaarDWT2(torch.autograd.Function):
    """Haar analysis of an even-sized input; orthonormal, so its backward is the synthesis."""

    @staticmethod
    def forward(ctx, x):
        return _haar_analysis(x)

    @staticmethod
    def backward(ctx, grad_ca, grad_details):
        return _HaarIDWT2.apply(grad_ca, grad_details)


class _HaarIDWT2(torch.autograd.Function):
    """Haar synthesis; its backward is the analysis."""

    @staticmethod
    def forward(ctx, ca, details):
        return _haar_synthesis(ca, details)

    @staticmethod
    def backward(ctx, grad):
        return _HaarDWT2.apply(grad)


def _pad_to_even(x: torch.Tensor) -> torch.Tensor:
    """Haar's half-sample symmetric extension of an odd axis is one repeated edge sample."""
    if x.shape[-2] % 2:
        x = torch.cat([x, x[..., -1:, :]], dim=-2)
    if x.shape[-1] % 2:
        x = torch.cat([x, x[..., -1:]], dim=-1)
    return x


def _dwt2_stacked(x: torch.Tensor, wavelet: pywt.Wavelet):
    """One 2-D level as ``(cA, details)``, the three detail bands stacked on a new first
    axis (cH, cV, cD). Haar takes the fused path (:func:`_haar_analysis`), other wavelets
    the separable polyphase one."""
    if _is_haar(wavelet):
        return _HaarDWT2.apply(_pad_to_even(x))
    lo_w, hi_w = _dwt_axis(x, wavelet, -1)                  # along width
    ca, ch = _dwt_axis(lo_w, wavelet, -2)                    # ch: detail along height
    cv, cd = _dwt_axis(hi_w, wavelet, -2)
    return ca, torch.stack([ch, cv, cd])


def _idwt2_stacked(ca: torch.Tensor, details: torch.Tensor, wavelet: pywt.Wavelet):
    """Inverse of :func:`_dwt2_stacked`."""
    if _is_haar(wavelet):
        return _HaarIDWT2.apply(ca, details)
    ch, cv, cd = details
    lo_w = _idwt_axis(ca, ch, wavelet, -2)
    hi_w = _idwt_axis(cv, cd, wavelet, -2)
    return _idwt_axis(lo_w, hi_w, wavelet, -1)


def dwt2(x: torch.Tensor, wavelet):
    """One 2-D level on the last two axes: ``(cA, (cH, cV, cD))`` as ``pywt.dwt2``."""
    wavelet = _wavelet(wavelet) if isinstance(wavelet, str) else wavelet
    ca, details = _dwt2_stacked(x, wavelet)
    return ca, tuple(details.unbind(0))


def idwt2(ca: torch.Tensor, details, wavelet) -> torch.Tensor:
    """Inverse of :func:`dwt2` (``pywt.idwt2``)."""
    wavelet = _wavelet(wavelet) if isinstance(wavelet, str) else wavelet
    return _idwt2_stacked(ca, torch.stack(tuple(details)), wavelet)


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


def _clamp_symmetric(x: torch.Tensor, thr: torch.Tensor) -> torch.Tensor:
    """clamp(x, -thr, thr) into a fresh tensor, as minimum then maximum: ``torch.clamp``
    with tensor bounds is several times slower on CPU."""
    clamped = torch.minimum(x, thr)
    return torch.maximum(clamped, -thr, out=clamped)


class _SoftThreshold(torch.autograd.Function):
    """y = x - clamp(x, -thr, thr) with a cheap backward: where y != 0 the gradient passes to
    x unchanged and, with sign(y), to the threshold as -sum(grad * sign(y)) over the axes thr
    was broadcast on; elsewhere both are zero."""

    @staticmethod
    def forward(ctx, x, thr):
        y = _clamp_symmetric(x, thr)
        torch.sub(x, y, out=y)
        ctx.save_for_backward(y)
        ctx.thr_shape = thr.shape
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        sign = torch.sign(y)
        prod = grad * sign                         # grad where y > 0, -grad where y < 0
        grad_x = prod * sign if ctx.needs_input_grad[0] else None  # sign^2 = [y != 0]
        grad_thr = None
        if ctx.needs_input_grad[1]:
            dims = [d for d in range(prod.dim())
                    if d >= prod.dim() - len(ctx.thr_shape)
                    and ctx.thr_shape[d - prod.dim() + len(ctx.thr_shape)] == 1]
            dims += list(range(prod.dim() - len(ctx.thr_shape)))
            grad_thr = -prod.sum(dim=dims, keepdim=True) if dims else -prod
            grad_thr = grad_thr.reshape(ctx.thr_shape)
        return grad_x, grad_thr


def _soft_threshold_(x: torch.Tensor, thr: torch.Tensor) -> torch.Tensor:
    """In-place :func:`soft_threshold` of a tensor nothing else holds (no autograd)."""
    return x.sub_(_clamp_symmetric(x, thr))


def soft_threshold(x: torch.Tensor, thr) -> torch.Tensor:
    """``pywt.threshold(x, thr, mode='soft')``: sign(x) * max(|x| - thr, 0), computed as
    x - clamp(x, -thr, thr) (two passes instead of five, and a backward of three).
    ``thr`` is a number or a tensor that broadcasts against x."""
    if not isinstance(thr, torch.Tensor):
        thr = torch.tensor(thr, dtype=x.dtype, device=x.device)
    return _SoftThreshold.apply(x, thr.to(x.dtype))


def population_std(rows: torch.Tensor) -> torch.Tensor:
    """Population std of each row of ``rows`` (N, M), as ``np.std``, from the row sums of x
    and x^2 (``torch.std`` reduces these shapes an order of magnitude slower). Detail bands
    have a mean near zero, so the one-pass formula loses no precision there; half-precision
    rows are summed in float32. The variance is floored at float32's smallest normal so the
    gradient of the root stays finite on a constant band."""
    dtype = rows.dtype
    if torch.finfo(dtype).bits < 32:
        rows = rows.float()
    count = rows.shape[1]
    mean = rows.sum(dim=1) / count
    mean_sq = torch.linalg.vector_norm(rows, dim=1).square() / count
    floor = torch.finfo(torch.float32).tiny
    return (mean_sq - mean.square()).clamp(min=floor).sqrt().to(dtype)


class WaveletDenoiser(nn.Module):
    """f_wld of Eq. 7: multi-level DWT, soft-thresholded detail bands, inverse DWT.

    Threshold rules (per sample, over all channels of that sample):
    - ``'std'`` (default, the authors' rule): at each level thr = ``threshold_scale`` x std of
      that level's horizontal detail band cH (population std), applied to cH, cV and cD;
    - ``'mad'``: Donoho-Johnstone universal threshold, sigma = median(|cD_1|) / 0.6745 of the
      finest diagonal band, thr = ``threshold_scale`` x sigma x sqrt(2 ln(H*W)) at every level
      (use ``threshold_scale=1`` for the textbook rule).

    Output size (``odd_size``): on an odd side the Haar reconstruction comes out one sample
    longer than the input (``pywt.waverec2`` returns 2 * ceil(H / 2) rows). ``'resize'``
    (default, the authors' form: Mok-kn/Dip mmdet/losses/kd.py ``FeatureLoss.equal`` after
    ``get_wavelet``) resizes it back to H x W with bilinear interpolation
    (``F.interpolate``, ``align_corners=False``), which also shifts and blurs every sample of
    that level by up to half a cell; ``'crop'`` drops the extra row/column, the better
    denoiser (exact reconstruction at zero threshold on every size). Even sizes are untouched
    by either. At the paper's input sizes (inputs padded to multiples of 32) this acts on P5
    and RetinaNet's P6 (SSDD at (1000, 600): P5 27x19; HRSID at 800x800: P5 25x25, P6 13x13).

    Levels are capped by the input size (``pywt.dwt_max_level`` of min(H, W)); the authors
    always take 3, which PyWavelets accepts with a warning down to a side of 1 and which
    turns the thresholds NaN when a side is <= 4. The cap changes nothing at the paper's
    sizes (every distilled level has sides >= 8) and keeps the small CPU profiles finite.

    A call that records no graph on a float32/float64 CPU tensor of the default kind (Haar,
    ``'std'`` rule, at least 3 dims) runs the fused numba kernel of
    :mod:`dipkd.kd.haar_kernel` (same numbers; several times faster, see
    ``benchmarks/bench_kd.py``) unless ``fused_cpu`` is False; every other call takes the
    torch path below, which is differentiable and runs on any device.
    """

    def __init__(self, wavelet: str = "db1", levels: int = 3, threshold: str = "std",
                 threshold_scale: float = 0.5, fused_cpu: bool = True,
                 odd_size: str = "resize"):
        super().__init__()
        if threshold not in THRESHOLD_RULES:
            raise ValueError(f"unknown threshold rule {threshold!r}; valid: "
                             f"{', '.join(THRESHOLD_RULES)}")
        if odd_size not in ODD_SIZES:
            raise ValueError(f"unknown odd_size {odd_size!r}; valid: {', '.join(ODD_SIZES)}")
        if levels < 1:
            raise ValueError("levels must be >= 1")
        self.wavelet = _wavelet(wavelet)
        self.levels = levels
        self.threshold = threshold
        self.threshold_scale = threshold_scale
        self.fused_cpu = fused_cpu
        self.odd_size = odd_size

    def levels_for(self, h: int, w: int) -> int:
        return max(0, min(self.levels, max_level(min(h, w), self.wavelet)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:
            raise ValueError(f"WaveletDenoiser takes (N, ..., H, W) features with at least "
                             f"3 dims, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        level = self.levels_for(h, w)
        if level == 0:
            return x
        differentiable = torch.is_grad_enabled() and x.requires_grad
        if not differentiable and self._fused_kernel_takes(x):
            return haar_kernel.haar_std_denoise(x, level, self.threshold_scale,
                                                self.odd_size)
        n = x.shape[0]
        thr_shape = (1, n) + (1,) * (x.dim() - 1)   # per sample, over the stacked bands
        approx, details = x, []                     # details[0]: the finest level
        for _ in range(level):
            approx, stacked = _dwt2_stacked(approx, self.wavelet)
            details.append(stacked)
        if self.threshold == "mad":
            finest = details[0][2].reshape(n, -1).abs()
            sigma = torch.quantile(finest, 0.5, dim=1) / 0.6745
            thr_all = self.threshold_scale * sigma * math.sqrt(2 * math.log(h * w))
        for k, stacked in enumerate(details):
            if self.threshold == "std":
                thr = self.threshold_scale * population_std(stacked[0].reshape(n, -1))
            else:
                thr = thr_all
            thr = thr.view(thr_shape)
            # no graph to keep: threshold the fresh bands in place
            details[k] = (soft_threshold(stacked, thr) if differentiable
                          else _soft_threshold_(stacked, thr))
        for stacked in reversed(details):
            hk, wk = stacked.shape[-2:]
            approx = _idwt2_stacked(approx[..., :hk, :wk], stacked, self.wavelet)
        return to_input_size(approx, h, w, self.odd_size)

    def _fused_kernel_takes(self, x: torch.Tensor) -> bool:
        return (self.fused_cpu and haar_kernel.available() and _is_haar(self.wavelet)
                and self.threshold == "std" and x.device.type == "cpu"
                and x.dtype in (torch.float32, torch.float64))


def to_input_size(rec: torch.Tensor, h: int, w: int, odd_size: str = "resize") -> torch.Tensor:
    """The reconstruction ``rec`` (..., H', W'), H' >= h and W' >= w, brought to h x w:
    bilinear resize (``'resize'``, the authors' ``F.interpolate``) or crop (``'crop'``); see
    :class:`WaveletDenoiser`. Unchanged when it already has that size."""
    if rec.shape[-2:] == (h, w):
        return rec
    if odd_size == "crop":
        return rec[..., :h, :w]
    lead = rec.shape[:-2]
    flat = rec.reshape(1, -1, *rec.shape[-2:])
    return F.interpolate(flat, size=(h, w), mode="bilinear",
                         align_corners=False).reshape(*lead, h, w)


def denoise_reference_numpy(x, wavelet: str = "db1", levels: int = 3, threshold: str = "std",
                            threshold_scale: float = 0.5, odd_size: str = "resize"):
    """The same denoising with PyWavelets on numpy, one sample at a time, then the output
    size rule (:func:`to_input_size`) (the reference for the benchmark; no gradient)."""
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
        out[i] = to_input_size(torch.from_numpy(rec), h, w, odd_size).numpy()
    return out
