"""The fused numba Haar denoising kernel against PyWavelets, and when WaveletDenoiser uses it."""
import multiprocessing
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pywt
import torch

from dipkd.kd import haar_kernel
from dipkd.kd.wavelet import WaveletDenoiser, denoise_reference_numpy

SHAPES = [(2, 3, 16, 16), (2, 4, 13, 17), (1, 2, 9, 9), (3, 2, 7, 64), (1, 1, 2, 3),
          (1, 3, 31, 30), (2, 2, 3, 8, 8)]


def _levels(shape, wanted=3):
    return min(wanted, pywt.dwt_max_level(min(shape[-2:]), 2))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,atol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_kernel_matches_pywavelets(shape, dtype, atol):
    x = np.random.default_rng(3).standard_normal(shape).astype(dtype) * 2 + 0.1
    level = _levels(shape)
    ours = haar_kernel.haar_std_denoise(torch.from_numpy(x), level, 0.5)
    assert ours.dtype == torch.from_numpy(x).dtype and ours.shape == x.shape
    np.testing.assert_allclose(ours.numpy(), denoise_reference_numpy(x, "db1", level), atol=atol)


@pytest.mark.parametrize("levels,scale", [(1, 0.5), (2, 1.5), (4, 0.25)])
def test_kernel_levels_and_scale(levels, scale):
    x = np.random.default_rng(4).standard_normal((2, 5, 40, 33)).astype(np.float32)
    ours = haar_kernel.haar_std_denoise(torch.from_numpy(x), levels, scale).numpy()
    np.testing.assert_allclose(ours, denoise_reference_numpy(x, "db1", levels, "std", scale),
                               atol=1e-5)


def test_thresholds_are_per_sample():
    """Scaling sample 1 changes its thresholds, never sample 0's output."""
    x = torch.randn(2, 4, 16, 16)
    y = x.clone()
    y[1] *= 10
    a, b = (haar_kernel.haar_std_denoise(t, 3, 0.5) for t in (x, y))
    assert torch.equal(a[0], b[0])
    assert torch.allclose(b[1], a[1] * 10, atol=1e-4)


def test_hand_computed_single_block():
    """One 2x2 map, one level: cA = 5, cH = -2, cV = -1, cD = 0 from [[1, 2], [3, 4]]; the
    threshold is 0.5 x std(cH) = 0 for a single coefficient, so the map comes back."""
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert torch.allclose(haar_kernel.haar_std_denoise(x, 1, 0.5), x)
    # two maps in the sample: cH = -2 and +2, std 2, threshold 1 (scale 0.5) shrinks both
    # cH to -1/+1, cV (-1, +1) to 0 and leaves cD = 0: x = (cA + cH)/2 per row pair
    two = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[4.0, 3.0], [2.0, 1.0]]]])
    out = haar_kernel.haar_std_denoise(two, 1, 0.5)
    expected = torch.tensor([[[[2.0, 2.0], [3.0, 3.0]], [[3.0, 3.0], [2.0, 2.0]]]])
    assert torch.allclose(out, expected)


def test_nan_turns_its_sample_to_nan_as_pywavelets():
    x = np.random.default_rng(5).standard_normal((2, 3, 16, 16)).astype(np.float32)
    x[0, 1, 3, 4] = np.nan
    ours = haar_kernel.haar_std_denoise(torch.from_numpy(x), 3, 0.5).numpy()
    with np.errstate(invalid="ignore"):
        ref = denoise_reference_numpy(x)
    assert np.isnan(ours[0]).all() and np.isnan(ref[0]).all()
    np.testing.assert_allclose(ours[1], ref[1], atol=1e-5)


def test_threads_and_chunks_give_the_same_numbers():
    x = torch.randn(2, 64, 64, 64)   # enough values for several chunks
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = haar_kernel.haar_std_denoise(x, 3, 0.5)
        torch.set_num_threads(2)
        two = haar_kernel.haar_std_denoise(x, 3, 0.5)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def _sine_maps() -> torch.Tensor:
    """Enough values for two chunks on two threads, made without torch's OpenMP ops (a
    forked child must not run those: GNU OpenMP hangs after a fork)."""
    return torch.from_numpy(np.sin(np.arange(2 * 64 * 64 * 64, dtype=np.float32))
                            .reshape(2, 64, 64, 64))


def _denoise_in_child(queue):
    torch.set_num_threads(2)
    queue.put(float(haar_kernel.haar_std_denoise(_sine_maps(), 3, 0.5).numpy().sum()))


def fork_check() -> None:
    """Run the kernel on the pool's threads, fork, run it in the child; exit 1 if the child
    hangs, fails or disagrees."""
    torch.set_num_threads(2)
    expected = float(haar_kernel.haar_std_denoise(_sine_maps(), 3, 0.5).numpy().sum())
    assert haar_kernel._pool is not None            # the parent's pool ran the chunks
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_denoise_in_child, args=(queue,))
    child.start()
    try:
        got = queue.get(timeout=120)
    finally:
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0 and got == pytest.approx(expected, rel=1e-6), (got, expected)


def test_a_forked_child_runs_the_kernel():
    """The thread pool belongs to the process that made it: after a fork (as data loader
    workers are made) the child makes its own instead of waiting on the parent's threads,
    which do not exist in it. Checked in a fresh interpreter: forking pytest's process, which
    earlier tests left with threads of their own (MLflow, OpenMP) holding locks, tests those
    instead of the kernel."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            "import test_haar_kernel; test_haar_kernel.fork_check()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="float32/float64 CPU tensors"):
        haar_kernel.haar_std_denoise(torch.randn(1, 2, 8, 8).half(), 1, 0.5)
    with pytest.raises(ValueError, match="at least 3 dims"):
        haar_kernel.haar_std_denoise(torch.randn(8, 8), 1, 0.5)
    with pytest.raises(ValueError, match="4 Haar levels do not fit a 8x8 map"):
        haar_kernel.haar_std_denoise(torch.randn(1, 2, 8, 8), 4, 0.5)
    empty = torch.empty(0, 3, 8, 8)
    assert haar_kernel.haar_std_denoise(empty, 2, 0.5).shape == empty.shape


def test_denoiser_uses_the_kernel_only_without_a_graph(monkeypatch):
    calls = []
    real = haar_kernel.haar_std_denoise
    monkeypatch.setattr(haar_kernel, "haar_std_denoise",
                        lambda *a: calls.append(a[0].dtype) or real(*a))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        WaveletDenoiser()(x)
    WaveletDenoiser()(x)                                   # no input needs a gradient
    WaveletDenoiser()(x.double())
    assert calls == [torch.float32, torch.float32, torch.float64]
    WaveletDenoiser()(x.clone().requires_grad_())          # a graph: the torch path
    WaveletDenoiser(fused_cpu=False)(x)
    WaveletDenoiser(threshold="mad")(x)
    WaveletDenoiser(wavelet="db2")(x)
    WaveletDenoiser()(x.half())
    assert len(calls) == 3
    with pytest.raises(ValueError, match=r"\(N, \.\.\., H, W\)"):
        WaveletDenoiser()(x[0, 0])
