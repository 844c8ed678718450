"""Fused CPU kernel of the default wavelet denoising (f_wld of DIPKD Eq. 7: Haar/db1, soft
threshold of ``scale`` x std of each level's horizontal detail band, per sample), compiled by
numba.

Why a kernel: on CPU the torch-ops path of :class:`dipkd.kd.wavelet.WaveletDenoiser` makes a
full pass over memory for every band of every level, and is bound by that traffic. Here each
feature map (one sample, one channel) is transformed while it sits in cache:

1. statistics pass: the multi-level Haar analysis of every map, keeping only the sum and the
   sum of squares of each level's cH band (nothing written but those numbers);
2. the thresholds of each sample from those sums (population std, as ``np.std``);
3. denoising pass: per map, the analysis again into a small scratch buffer, the soft
   threshold of the detail bands and the synthesis straight into the output.

The transform is the one of ``pywt.wavedec2``/``waverec2`` with ``mode='symmetric'``: an odd
axis repeats its edge sample (the half-sample symmetric extension of a length-2 filter) and
the reconstruction of each inner level is cropped back to that level's size. The last
reconstruction is written whole (2 * ceil(H / 2) x 2 * ceil(W / 2)) and brought to H x W by
the denoiser's ``odd_size`` rule (:func:`dipkd.kd.wavelet.to_input_size`: the authors'
bilinear resize by default), or cropped while it is written when the rule is ``'crop'``. The loops index the 2-D maps
directly, one 2x2 block per step (array views made per row cost more than the arithmetic
on small maps).

No autograd: :class:`~dipkd.kd.wavelet.WaveletDenoiser` calls this only when no graph is
recorded (the teacher's side of every distillation step, evaluation, the speckle figures);
the differentiable call keeps the torch path. Maps are split into chunks run on a small
thread pool (the kernels release the GIL), as many threads as ``torch.get_num_threads()``.
The first call in a fresh install compiles the kernels (a few seconds per dtype); numba
caches the machine code beside this module, or in its user cache when that is read-only.
"""
from __future__ import annotations

import itertools
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

try:
    import numba
except ImportError:  # pragma: no cover - numba is a declared dependency
    numba = None

# reassociation lets LLVM vectorise the band sums; no 'nnan'/'ninf': NaN and inf pass
# through as in PyWavelets
_JIT = dict(nogil=True, cache=True, fastmath={"reassoc", "nsz", "contract"},
            error_model="numpy", boundscheck=False)
_MIN_CHUNK = 1 << 18  # values per chunk handed to a thread
_CHUNKS_PER_THREAD = 4


def available() -> bool:
    """True when the kernel can run (numba importable)."""
    return numba is not None


if numba is not None:
    _njit = numba.njit
else:  # pragma: no cover
    def _njit(*args, **kwargs):
        return lambda f: f


@_njit(inline="always", **_JIT)
def _block(src, r0, r1, c0, c1, i, j, ca, ch, cv, cd, half, store_details):
    """The 2x2 block at rows r0, r1 and columns c0, c1 in pywt's signs: cA = (a+b+c+d)/2
    into ca[i, j], cH = (a+b-c-d)/2, cV = (a-b+c-d)/2, cD = (a-b-c+d)/2 into ch, cv, cd
    when ``store_details``. Returns cH."""
    a = src[r0, c0]
    b = src[r0, c1]
    c = src[r1, c0]
    d = src[r1, c1]
    e = (a + b - c - d) * half
    ca[i, j] = (a + b + c + d) * half
    if store_details:
        ch[i, j] = e
        cv[i, j] = (a - b + c - d) * half
        cd[i, j] = (a - b - c + d) * half
    return e


@_njit(inline="always", **_JIT)
def _analysis(src, h, w, ca, ch, cv, cd, half, store_details):
    """One Haar level of src[:h, :w] into the bands' top-left (h+1)//2 x (w+1)//2 (an odd
    axis repeats its edge sample: the last block reads its edge column or row twice). With
    ``store_details`` False only cA is written. Returns (sum, sum of squares) of cH."""
    wo, we = (w + 1) // 2, w // 2
    acc = 0.0
    acc2 = 0.0
    for i in range((h + 1) // 2):
        r0 = 2 * i
        r1 = min(r0 + 1, h - 1)
        row = half - half            # a zero of the data type
        row2 = row
        for j in range(we):          # full blocks: a branch-free loop LLVM vectorises
            e = _block(src, r0, r1, 2 * j, 2 * j + 1, i, j, ca, ch, cv, cd, half,
                       store_details)
            row += e
            row2 += e * e
        if wo > we:                  # odd width: the edge column repeated
            e = _block(src, r0, r1, w - 1, w - 1, i, we, ca, ch, cv, cd, half, store_details)
            row += e
            row2 += e * e
        acc += row
        acc2 += row2
    return acc, acc2


@_njit(inline="always", **_JIT)
def _soft(v, t):
    """pywt's soft threshold sign(v) * max(|v| - t, 0), as v - clamp(v, -t, t)."""
    return v - min(max(v, -t), t)


@_njit(inline="always", **_JIT)
def _synthesis(ca, ch, cv, cd, t, dst, h, w, half, p, q, r, u):
    """Soft-threshold the detail bands by t and write the inverse Haar level, cropped to
    h x w, into dst. With a = cA and e, v, f the thresholded cH, cV, cD of a block, its
    samples are x00 = p + r, x01 = p - r, x10 = q + u, x11 = q - u where p = (a+e)/2,
    q = (a-e)/2, r = (v+f)/2, u = (v-f)/2 (the transpose of :func:`_block`). p, q, r, u:
    scratch rows; computing them first keeps every loop branch-free and contiguous (three
    times faster than writing each block's four samples in one loop). Everything is
    indexed in place: handing arrays to helpers per row costs reference-count updates
    that outweigh a small map's arithmetic."""
    wo, we = (w + 1) // 2, w // 2
    for i in range((h + 1) // 2):
        for j in range(wo):
            a = ca[i, j]
            e = _soft(ch[i, j], t)
            v = _soft(cv[i, j], t)
            f = _soft(cd[i, j], t)
            p[j] = (a + e) * half
            q[j] = (a - e) * half
            r[j] = (v + f) * half
            u[j] = (v - f) * half
        r0 = 2 * i
        for j in range(we):
            dst[r0, 2 * j] = p[j] + r[j]
            dst[r0, 2 * j + 1] = p[j] - r[j]
        if w % 2:
            dst[r0, w - 1] = p[we] + r[we]
        if r0 + 1 < h:                   # an odd height drops the last block's second row
            for j in range(we):
                dst[r0 + 1, 2 * j] = q[j] + u[j]
                dst[r0 + 1, 2 * j + 1] = q[j] - u[j]
            if w % 2:
                dst[r0 + 1, w - 1] = q[we] + u[we]


@_njit(**_JIT)
def _statistics(x, levels, m0, m1, out, half):
    """out[m, k] = (sum, sum of squares) of level k+1's cH band of map m, for m0 <= m < m1.
    x: (maps, H, W); out: (maps, levels, 2) float64. (Level 1 reads x[m] in a call of its
    own: a variable holding either x[m] or a scratch level loses numba's layout facts and
    runs at half speed.)"""
    _, h, w = x.shape
    bufs = np.empty((2, (h + 1) // 2, (w + 1) // 2), x.dtype)
    for m in range(m0, m1):
        first = bufs[0]
        out[m, 0, 0], out[m, 0, 1] = _analysis(x[m], h, w, first, first, first, first,
                                               half, False)
        hk, wk = (h + 1) // 2, (w + 1) // 2
        for k in range(1, levels):
            dst = bufs[k % 2]
            out[m, k, 0], out[m, k, 1] = _analysis(bufs[(k - 1) % 2], hk, wk, dst, dst, dst,
                                                   dst, half, False)
            hk, wk = (hk + 1) // 2, (wk + 1) // 2


@_njit(**_JIT)
def _denoise(x, thr, levels, m0, m1, samples_of, out, half):
    """Denoise maps m0 <= m < m1 of x (maps, H, W) into out (maps, H_out, W_out): H x W,
    or the whole last reconstruction 2 * ceil(H / 2) x 2 * ceil(W / 2); thr: (samples,
    levels) and samples_of[m] the sample of map m. Level 1 reads x[m] and the last synthesis
    writes out[m] in calls of their own (see :func:`_statistics`)."""
    _, h, w = x.shape
    hs = np.empty(levels + 1, np.int64)
    ws = np.empty(levels + 1, np.int64)
    hs[0], ws[0] = h, w
    for k in range(levels):
        hs[k + 1] = (hs[k] + 1) // 2
        ws[k + 1] = (ws[k] + 1) // 2
    # cA, cH, cV, cD per level; a spare row keeps the bands from starting at the same
    # address modulo 4 KiB (loads and stores there would falsely depend on each other)
    bands = np.empty((levels, 4, hs[1] + 1, ws[1]), x.dtype)
    p = np.empty(ws[1], x.dtype)
    q = np.empty(ws[1], x.dtype)
    r = np.empty(ws[1], x.dtype)
    u = np.empty(ws[1], x.dtype)
    for m in range(m0, m1):
        b = bands[0]
        _analysis(x[m], h, w, b[0], b[1], b[2], b[3], half, True)
        for k in range(1, levels):
            b = bands[k]
            _analysis(bands[k - 1, 0], hs[k], ws[k], b[0], b[1], b[2], b[3], half, True)
        thresholds = thr[samples_of[m]]
        for k in range(levels - 1, 0, -1):
            b = bands[k]
            _synthesis(b[0], b[1], b[2], b[3], thresholds[k], bands[k - 1, 0], hs[k], ws[k],
                       half, p, q, r, u)
        b = bands[0]
        _synthesis(b[0], b[1], b[2], b[3], thresholds[0], out[m], out.shape[1],
                   out.shape[2], half, p, q, r, u)


_pool: tuple[int, int, ThreadPoolExecutor] | None = None


def _executor(threads: int) -> ThreadPoolExecutor:
    """``threads`` pool threads of this process (a forked child makes its own)."""
    global _pool
    if _pool is None or _pool[0] != os.getpid() or _pool[1] != threads:
        _pool = (os.getpid(), threads, ThreadPoolExecutor(threads, "dipkd-haar"))
    return _pool[2]


def _run_chunks(fn, maps: int, map_size: int) -> None:
    """fn(m0, m1) over [0, maps) on up to torch.get_num_threads() threads: the calling
    thread and pool threads take chunks from a shared counter until none is left (a core
    busy with something else then delays one small chunk, not half of the work). Chunks
    hold at least ``_MIN_CHUNK`` values: waking a thread for less costs more than it saves."""
    chunks = min(maps, max(1, maps * map_size // _MIN_CHUNK))
    threads = min(torch.get_num_threads(), chunks)
    if threads <= 1:
        fn(0, maps)
        return
    chunks = min(chunks, _CHUNKS_PER_THREAD * threads)
    bounds = [maps * k // chunks for k in range(chunks + 1)]
    counter = itertools.count()          # next() on it is atomic under the GIL

    def work():
        for k in iter(counter.__next__, None):
            if k >= chunks:
                return
            fn(bounds[k], bounds[k + 1])
    helpers = [_executor(threads - 1).submit(work) for _ in range(threads - 1)]
    work()
    for helper in helpers:
        helper.result()


def _thresholds(sums: np.ndarray, samples: int, h: int, w: int, scale: float,
                dtype) -> np.ndarray:
    """(samples, levels) thresholds: ``scale`` x population std of each level's cH band over
    every map of the sample, from the per map sums of :func:`_statistics`. A NaN input makes
    its sample's thresholds NaN, as with PyWavelets."""
    maps, levels, _ = sums.shape
    per_sample = sums.reshape(samples, maps // samples, levels, 2).sum(axis=1)
    counts = np.array([math.ceil(h / 2 ** (k + 1)) * math.ceil(w / 2 ** (k + 1))
                       for k in range(levels)], np.float64) * (maps // samples)
    with np.errstate(invalid="ignore", over="ignore"):
        mean = per_sample[..., 0] / counts
        var = np.maximum(per_sample[..., 1] / counts - mean ** 2, 0.0)
        return (scale * np.sqrt(var)).astype(dtype)


def haar_std_denoise(x: torch.Tensor, levels: int, scale: float,
                     odd_size: str = "resize") -> torch.Tensor:
    """Denoise ``x`` (N, ..., H, W), a float32/float64 CPU tensor, with ``levels`` Haar levels
    and per sample thresholds ``scale`` x population std of each level's cH band over all
    channels of the sample; returns a new tensor of x's shape, an odd side brought back by
    ``odd_size`` (``'resize'`` or ``'crop'``, :func:`dipkd.kd.wavelet.to_input_size`).
    ``levels`` must not exceed ``pywt.dwt_max_level`` of min(H, W) (the caller caps it)."""
    from .wavelet import ODD_SIZES, to_input_size
    if odd_size not in ODD_SIZES:
        raise ValueError(f"unknown odd_size {odd_size!r}; valid: {', '.join(ODD_SIZES)}")
    if numba is None:
        raise RuntimeError("the fused Haar kernel needs numba")
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or x.dim() < 3:
        raise ValueError(f"the fused Haar kernel takes float32/float64 CPU tensors of at least "
                         f"3 dims, got {x.dtype} {tuple(x.shape)} on {x.device}")
    h, w = x.shape[-2:]
    if levels < 1 or (h >> levels) < 1 or (w >> levels) < 1:
        raise ValueError(f"{levels} Haar levels do not fit a {h}x{w} map")
    if x.numel() == 0:
        return torch.empty_like(x)
    samples = x.shape[0]
    maps = x.numel() // (h * w)
    arr = x.detach().contiguous().numpy().reshape(maps, h, w)
    half = arr.dtype.type(0.5)
    sums = np.empty((maps, levels, 2), np.float64)
    _run_chunks(lambda m0, m1: _statistics(arr, levels, m0, m1, sums, half), maps, h * w)
    thr = _thresholds(sums, samples, h, w, scale, arr.dtype)
    sample_of_map = np.repeat(np.arange(samples, dtype=np.int64), maps // samples)
    h_out, w_out = (h, w) if odd_size == "crop" else (h + h % 2, w + w % 2)
    out = torch.empty(*x.shape[:-2], h_out, w_out, dtype=x.dtype)
    dst = out.numpy().reshape(maps, h_out, w_out)
    _run_chunks(lambda m0, m1: _denoise(arr, thr, levels, m0, m1, sample_of_map, dst, half),
                maps, h * w)
    out = to_input_size(out, h, w, odd_size)
    nan_samples = np.isnan(thr).any(axis=1)
    if nan_samples.any():            # PyWavelets: a NaN threshold turns the sample to NaN
        out[torch.from_numpy(nan_samples)] = float("nan")
    return out
