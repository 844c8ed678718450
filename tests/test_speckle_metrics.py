"""ENL, SSI, SMPI on synthetic speckle with a known number of looks, and by hand."""
import numpy as np
import pytest
import torch

from dipkd.datasets.synthetic import speckle
from dipkd.speckle import enl, fft_lowpass, smpi, ssi


@pytest.mark.parametrize("looks", [1, 3, 8])
def test_enl_recovers_the_number_of_looks(looks):
    img = 5.0 * speckle((300, 300), looks, np.random.default_rng(looks))
    assert enl(img) == pytest.approx(looks, rel=0.05)


def test_metrics_by_hand():
    o = np.array([1.0, 3.0, 1.0, 3.0])          # mean 2, std 1
    d = np.array([1.5, 2.5, 1.5, 2.5])          # mean 2, std 0.5
    assert enl(o) == pytest.approx(4.0)         # 2^2 / 1
    assert ssi(o, d) == pytest.approx(0.5)      # (0.5/2) / (1/2)
    assert smpi(o, d) == pytest.approx(0.5)     # Q = 1 (mean kept), 0.5 / 1
    assert smpi(o, d + 1) == pytest.approx(1.0)  # Q = 2: mean shifted by 1
    mask = np.array([True, True, False, False])
    assert enl(torch.tensor(o), mask) == pytest.approx(4.0)
    assert ssi(o, o) == pytest.approx(1.0) and smpi(o, o) == pytest.approx(1.0)


def test_smoothing_raises_enl_and_lowers_ssi():
    img = speckle((128, 128), 2, np.random.default_rng(0))
    smooth = fft_lowpass(img, 0.2)
    assert smooth.shape == img.shape
    assert enl(smooth) > 3 * enl(img)
    assert ssi(img, smooth) < 0.6 and smpi(img, smooth) < 0.6
    with pytest.raises(ValueError, match="keep must be in"):
        fft_lowpass(img, 0.0)
