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


def test_population_std_matches_numpy():
    from dipkd.kd.wavelet import population_std
    rows = np.random.default_rng(2).standard_normal((3, 1000)).astype(np.float32) * 2 + 0.3
    np.testing.assert_allclose(population_std(torch.from_numpy(rows)).numpy(),
                               rows.std(axis=1), rtol=1e-5)
    flat = torch.zeros(1, 8, requires_grad=True)  # a constant band: std 0, finite gradient
    std = population_std(flat)
    std.sum().backward()
    assert float(std.detach()) < 1e-18 and torch.isfinite(flat.grad).all()


@pytest.mark.parametrize("shape", [(1, 2, 6, 8), (2, 1, 7, 5)])
def test_haar_fast_path_gradients(shape):
    """The Haar transforms are custom autograd functions (backward = the other transform);
    gradcheck them, odd sizes (edge repetition) included."""
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)

    def roundtrip(t):
        coeffs = wavedec2(t, "db1", 2)
        return waverec2([coeffs[0] * 2, *[(h, v * 0.5, d) for h, v, d in coeffs[1:]]], "haar")
    assert torch.autograd.gradcheck(roundtrip, (x,))
    assert torch.autograd.gradcheck(lambda t: wavedec2(t, "haar", 1)[1][2], (x,))


def test_soft_threshold_gradient_to_x_and_threshold():
    x = torch.tensor([[-2.0, -0.5, 0.2, 1.5], [3.0, -0.1, 0.7, -1.0]], dtype=torch.float64,
                     requires_grad=True)
    thr = torch.tensor([[0.4], [0.8]], dtype=torch.float64, requires_grad=True)
    y = soft_threshold(x, thr)
    np.testing.assert_allclose(y.detach().numpy(), [[-1.6, -0.1, 0, 1.1], [2.2, 0, 0, -0.2]],
                               atol=1e-12)
    y.backward(torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]], dtype=torch.float64))
    # d/dx: 1 where |x| > thr; d/dthr: -sum(grad * sign(x)) over those entries
    assert x.grad.tolist() == [[1.0, 2.0, 0.0, 4.0], [5.0, 0.0, 0.0, 8.0]]
    assert thr.grad.flatten().tolist() == [-(-1.0 - 2.0 + 4.0), -(5.0 - 8.0)]
    assert torch.autograd.gradcheck(soft_threshold, (x.detach().requires_grad_(),
                                                     thr.detach().requires_grad_()))


@pytest.mark.parametrize("fused_cpu", [True, False])
def test_denoiser_without_graph_matches_the_differentiable_path(fused_cpu):
    """Both no-graph paths (the fused numba kernel and torch's in-place thresholding) give
    the differentiable path's numbers."""
    x = torch.randn(2, 3, 20, 13)
    den = WaveletDenoiser("db1", 3, fused_cpu=fused_cpu)
    with torch.no_grad():
        fast = den(x)
    assert torch.allclose(fast, den(x.clone().requires_grad_()), atol=1e-6)


@pytest.mark.parametrize("odd_size", ["resize", "crop"])
@pytest.mark.parametrize("dtype,atol", [(torch.float16, 1e-2), (torch.bfloat16, 5e-2),
                                        (torch.float64, 1e-6)])
def test_denoiser_keeps_the_dtype(dtype, atol, odd_size):
    """The float32 result is the reference; torch's float32 bilinear resize (the odd side of
    33x30 under ``resize``) rounds its weights at about 2e-6 relative, hence 1e-5 there."""
    if dtype == torch.float64 and odd_size == "resize":
        atol = 1e-5
    x = torch.randn(2, 4, 33, 30)
    out = WaveletDenoiser(odd_size=odd_size)(x.to(dtype))
    assert out.dtype == dtype
    assert torch.allclose(out.float(), WaveletDenoiser(odd_size=odd_size)(x), atol=atol)
