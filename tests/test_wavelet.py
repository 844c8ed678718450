"""Torch wavelet transform and denoising against PyWavelets; gradients flow."""
import numpy as np
import pytest
import pywt
import torch

from dipkd.kd.wavelet import (WaveletDenoiser, denoise_reference_numpy, soft_threshold,
                              wavedec2, waverec2)

SHAPES = [(2, 3, 17, 23), (1, 2, 32, 32), (2, 1, 9, 64), (1, 4, 50, 37)]
CASES = [(s, w, lev) for s in SHAPES for w in ("db1", "db2", "sym4") for lev in (1, 2, 3)
         if lev <= pywt.dwt_max_level(min(s[-2:]), pywt.Wavelet(w).dec_len)]


@pytest.mark.parametrize("shape,wavelet,level", CASES)
def test_wavedec2_and_waverec2_match_pywavelets(shape, wavelet, level):
    x = np.random.default_rng(0).standard_normal(shape)
    ref = pywt.wavedec2(x, wavelet, mode="symmetric", level=level, axes=(-2, -1))
    ours = wavedec2(torch.from_numpy(x), wavelet, level)
    np.testing.assert_allclose(ours[0].numpy(), ref[0], atol=1e-5)
    for mine, theirs in zip(ours[1:], ref[1:]):
        for a, b in zip(mine, theirs):
            assert a.shape == b.shape
            np.testing.assert_allclose(a.numpy(), b, atol=1e-5)
    rec = waverec2(ours, wavelet).numpy()
    np.testing.assert_allclose(rec, pywt.waverec2(ref, wavelet, mode="symmetric",
                                                  axes=(-2, -1)), atol=1e-5)
    np.testing.assert_allclose(rec[..., :shape[-2], :shape[-1]], x, atol=1e-5)


@pytest.mark.parametrize("shape,wavelet,level", CASES[::3])
@pytest.mark.parametrize("rule,scale", [("std", 0.5), ("mad", 1.0)])
def test_denoiser_matches_the_pywavelets_reference(shape, wavelet, level, rule, scale):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    ours = WaveletDenoiser(wavelet, level, rule, scale)(torch.from_numpy(x)).numpy()
    ref = denoise_reference_numpy(x, wavelet, level, rule, scale)
    assert ours.shape == x.shape
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_soft_threshold_matches_pywavelets():
    x = np.linspace(-3, 3, 61)
    np.testing.assert_allclose(soft_threshold(torch.from_numpy(x), 0.7).numpy(),
                               pywt.threshold(x, 0.7, mode="soft"), atol=1e-12)


def test_gradients_flow_through_the_denoiser():
    x = torch.randn(2, 3, 15, 21, requires_grad=True)
    WaveletDenoiser("db2", 2)(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    small = torch.randn(1, 1, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: WaveletDenoiser("db1", 2, "std", 0.1)(t), (small,))


def test_zero_input_and_tiny_maps_are_finite():
    den = WaveletDenoiser("db1", 3, "mad")
    assert torch.equal(den(torch.zeros(1, 2, 8, 8)), torch.zeros(1, 2, 8, 8))
    tiny = torch.randn(1, 2, 1, 3)  # an FPN level smaller than one wavelet step
    assert torch.equal(WaveletDenoiser()(tiny), tiny)


def test_bad_options_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown threshold rule 'hard'; valid: std, mad"):
        WaveletDenoiser(threshold="hard")
    with pytest.raises(ValueError, match="unknown wavelet 'db99'"):
        WaveletDenoiser(wavelet="db99")
