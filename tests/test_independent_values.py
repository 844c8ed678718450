"""Expected values computed independently of the code under test: MGD's random mask, FGD's
global (relation) loss with non-zero context blocks, and the ``mad`` wavelet threshold.

Each expectation is written from the method's definition (the paper and the authors' code,
cited per test) with numpy / PyWavelets / plain torch ops, never by calling the function
under test for the expected value.
"""
import math

import numpy as np
import pytest
import pywt
import torch
from torch import nn

from _helpers import det_samples


# ------------------------------------------------------------------------------------- MGD

def _mgd_masked_inputs(ratio, feats, seed):
    """MGDLoss with identity generation blocks (so the loss and the hooks show exactly what
    the mask left of the student's features): (masked input per level, loss)."""
    from dipkd.baselines.mgd import MGDLoss
    c = feats[0].shape[1]
    loss = MGDLoss(alpha=1.0, mask_ratio=ratio, student_channels=c, teacher_channels=c,
                   num_levels=len(feats))
    loss.generation = nn.ModuleList(nn.Identity() for _ in feats)
    seen = []
    for block in loss.generation:
        block.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].clone()))
    teacher = [torch.zeros_like(f) for f in feats]
    out = loss(feats, teacher, generator=torch.Generator().manual_seed(seed))
    return seen, out["loss_mgd"]


@pytest.mark.parametrize("ratio", [0.0, 0.45, 0.65])
def test_mgd_mask_ratio_is_the_fraction_dropped_one_mask_for_all_channels(ratio):
    """MGD (Yang et al., ECCV 2022, Eq. 1-2; yzd-v/MGD det/mmdet/distillation/losses/mgd.py:
    ``mat = torch.rand((N, 1, H, W)); mat = torch.where(mat > 1 - lambda_mgd, 0, 1)``): each
    spatial cell of each image is DROPPED with probability ``mask_ratio`` (lambda_mgd), and
    one (N, 1, H, W) mask multiplies every channel. With the student's features all ones, the
    masked input is the mask itself: per cell every channel is 0 or every channel is 1, the
    fraction of zero cells is ``mask_ratio`` (binomial: 4 sigma ~ 0.02 over 8192 cells), and
    the images have masks of their own. The loss is then alpha * sum(mask * 1 - 0)^2 / N =
    C x (kept cells) / N. A mask_ratio read as the fraction KEPT (0.35 dropped at 0.65) or a
    mask drawn per channel fails."""
    n, c = 2, 4
    feats = [torch.ones(n, c, 64, 64), torch.ones(n, c, 32, 32)]
    seen, value = _mgd_masked_inputs(ratio, feats, seed=0)
    assert len(seen) == 2
    kept_cells = 0.0
    for masked in seen:
        assert set(masked.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(masked, masked[:, :1].expand_as(masked))   # same for all channels
        kept_cells += float(masked[:, 0].sum())
    big = seen[0][:, 0]                                          # 2 x 64 x 64 = 8192 cells
    dropped = 1.0 - float(big.mean())
    sigma = math.sqrt(max(ratio * (1 - ratio), 1e-12) / big.numel())
    assert abs(dropped - ratio) < max(4 * sigma, 1e-12), (dropped, ratio)
    if ratio > 0:
        assert not torch.equal(big[0], big[1])                   # one mask per image
    assert float(value) == pytest.approx(c * kept_cells / n, rel=1e-6)


def test_mgd_mask_follows_the_generator():
    """A seeded generator gives the same masks again; another seed other masks."""
    feats = [torch.ones(2, 3, 32, 32)]
    a, _ = _mgd_masked_inputs(0.45, feats, seed=1)
    b, _ = _mgd_masked_inputs(0.45, feats, seed=1)
    c, _ = _mgd_masked_inputs(0.45, feats, seed=2)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


# ------------------------------------------------------------------------------------- FGD

def _gc_numpy(x, block):
    """GcBlock context modelling of FGD (Yang et al., CVPR 2022, Eq. 8 and Fig. 4; yzd-v/FGD
    mmdet/distillation/losses/fgd.py ``spatial_pool`` + ``channel_add_conv_*``), in numpy:
    R(F) = F + W_v2 ReLU(LN(W_v1 sum_j softmax_j(W_k F_j) F_j)).
    ``block`` holds the numpy weights: wk (C,), bk, w1 (C/2, C), b1, g, beta (C/2,), w2
    (C, C/2), b2 (C,)."""
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)
    logits = np.einsum("c,ncj->nj", block["wk"], flat) + block["bk"]
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)      # N, HW
    context = np.einsum("ncj,nj->nc", flat, p)                         # N, C
    y = context @ block["w1"].T + block["b1"]                          # N, C/2
    mu = y.mean(axis=1, keepdims=True)
    var = ((y - mu) ** 2).mean(axis=1, keepdims=True)                  # biased, as LayerNorm
    y = (y - mu) / np.sqrt(var + 1e-5) * block["g"] + block["beta"]
    y = np.maximum(y, 0.0) @ block["w2"].T + block["b2"]               # N, C
    return x + y[:, :, None, None]


def _block_weights(gc) -> dict:
    """The numpy weights of one ``_GlobalContext``, its convs told apart by their output
    channels: the context conv (1), the transform's conv1x1 (C/2) - LayerNorm - ReLU -
    conv1x1 (C)."""
    convs = {m.out_channels: m for m in gc.modules() if isinstance(m, nn.Conv2d)}
    norms = [m for m in gc.modules() if isinstance(m, nn.LayerNorm)]
    c = max(convs)
    assert sorted(convs) == [1, c // 2, c] and len(norms) == 1
    mask, conv1, conv2 = convs[1], convs[c // 2], convs[c]
    t = lambda p: p.detach().numpy().astype(np.float64)   # noqa: E731
    return {"wk": t(mask.weight).reshape(-1), "bk": t(mask.bias)[0],
            "w1": t(conv1.weight)[:, :, 0, 0], "b1": t(conv1.bias),
            "g": t(norms[0].weight).reshape(-1), "beta": t(norms[0].bias).reshape(-1),
            "w2": t(conv2.weight)[:, :, 0, 0], "b2": t(conv2.bias)}


def test_fgd_global_loss_with_nonzero_context_blocks():
    """FGD's global loss, L_global = lambda * sum (R_T(F^T) - R_S(F^S))^2 / N summed over the
    levels, with the teacher's and the student's own GC blocks (``conv_mask_t``/``_s``,
    ``channel_add_conv_t``/``_s``) set to random non-zero weights (the released init zeroes
    the last conv, which hides everything but F^T - F^S), against the numpy formula."""
    from dipkd.baselines.fgd import FGDLoss
    c, n, lam = 8, 2, 0.7
    loss = FGDLoss(temp=0.5, alpha=0.0, beta=0.0, gamma=0.0, lambda_=lam, student_channels=c,
                   teacher_channels=c, num_levels=2).double()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for block in list(loss.gc_student) + list(loss.gc_teacher):
            for p in block.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    student = [torch.randn(n, c, 16, 16, generator=gen, dtype=torch.float64),
               torch.randn(n, c, 8, 8, generator=gen, dtype=torch.float64)]
    teacher = [torch.randn(n, c, 16, 16, generator=gen, dtype=torch.float64) * 2,
               torch.randn(n, c, 8, 8, generator=gen, dtype=torch.float64) * 2]
    samples = det_samples(64, 64, [[[4, 4, 30, 40]], [[10, 20, 60, 50]]])
    got = loss(student, teacher, samples, (64, 64))["loss_fgd_global"]

    expected = 0.0
    for level, (fs, ft) in enumerate(zip(student, teacher)):
        out_s = _gc_numpy(fs.numpy(), _block_weights(loss.gc_student[level]))
        out_t = _gc_numpy(ft.numpy(), _block_weights(loss.gc_teacher[level]))
        expected += ((out_t - out_s) ** 2).sum()
    expected = lam * expected / n
    # the blocks matter: without them the loss would be lambda * sum (F^T - F^S)^2 / N
    plain = lam * sum(((ft - fs) ** 2).sum().item() for fs, ft in zip(student, teacher)) / n
    assert abs(expected - plain) > 0.05 * plain
    assert float(got.detach()) == pytest.approx(expected, rel=1e-10)


# ------------------------------------------------------------------------- wavelet 'mad'

def _mad_denoise_pywt(x: np.ndarray, levels: int, scale: float) -> np.ndarray:
    """Donoho-Johnstone universal soft threshold with PyWavelets, one sample at a time over all
    its channels: sigma = median(|cD_1|) / 0.6745 of the finest diagonal band, thr = scale x
    sigma x sqrt(2 ln(H W)) at every level, applied to cH, cV, cD; even sizes only."""
    h, w = x.shape[-2:]
    out = np.empty_like(x)
    for i, sample in enumerate(x):
        coeffs = pywt.wavedec2(sample, "db1", mode="symmetric", level=levels, axes=(-2, -1))
        sigma = np.median(np.abs(coeffs[-1][2])) / 0.6745
        thr = scale * sigma * np.sqrt(2 * np.log(h * w))
        new = [coeffs[0]] + [tuple(pywt.threshold(b, thr, mode="soft") for b in bands)
                             for bands in coeffs[1:]]
        out[i] = pywt.waverec2(new, "db1", mode="symmetric", axes=(-2, -1))
    return out


@pytest.mark.parametrize("scale", [1.0, 0.5])
@pytest.mark.parametrize("grad", [False, True])
def test_mad_threshold_rule_matches_pywavelets(scale, grad):
    from dipkd.kd.wavelet import WaveletDenoiser
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 16, 16, generator=gen, dtype=torch.float64)
    ramp = torch.linspace(0, 4, 16, dtype=torch.float64)
    x = x + ramp[:, None] + ramp[None, :]                       # a smooth part to keep
    # channels and samples of very different noise levels: a per-channel or per-batch sigma
    # gives other thresholds
    x = x * torch.tensor([1.0, 3.0, 0.2], dtype=torch.float64)[None, :, None, None]
    x = x * torch.tensor([1.0, 0.1], dtype=torch.float64)[:, None, None, None]
    expected = _mad_denoise_pywt(x.numpy(), levels=3, scale=scale)
    inp = x.clone().requires_grad_(grad)
    got = WaveletDenoiser("db1", levels=3, threshold="mad", threshold_scale=scale)(inp)
    assert got.shape == x.shape
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=0, atol=1e-10)
    assert np.abs(expected - x.numpy()).max() > 0.1             # the threshold did something
