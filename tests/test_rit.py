"""Reverse Information Transfer (Eq. 15-19) on hand-made tensors."""
import math

import pytest
import torch

from dipkd.kd.rit import ReverseInformationTransfer


def _sig(v):
    return 1 / (1 + math.exp(-v))


def _zero_conv(rit):
    torch.nn.init.zeros_(rit.conv.weight)
    torch.nn.init.zeros_(rit.conv.bias)
    return rit


def test_rit_loss_by_hand():
    rit = _zero_conv(ReverseInformationTransfer(num_classes=1))
    feat = torch.tensor([[[[1.0, 2.0], [0.0, -1.0]], [[3.0, 0.0], [2.0, 1.0]]]])  # 1x2x2x2
    logits = torch.zeros(1, 1, 2, 2)      # p = 0.5 -> F^ri = 0.5, F^fm = sigmoid(0.5)
    fm = _sig(0.5)
    means = [2.0, 1.0, 1.0, 0.0]          # channel means of the student feature
    expected = sum((_sig(fm * m) - fm) ** 2 for m in means)
    assert rit([feat], [logits]).item() == pytest.approx(expected)


def test_max_over_classes_and_sum_over_anchors():
    rit = ReverseInformationTransfer(num_classes=2)
    # A=3 anchors x Cls=2 classes at one location, channel = anchor * Cls + class
    logits = torch.tensor([0.0, 2.0, -1.0, 1.0, 3.0, -3.0]).view(1, 6, 1, 1)
    expected = _sig(2.0) + _sig(1.0) + _sig(3.0)
    assert rit.reverse_map(logits).item() == pytest.approx(expected)


def test_matcher_uses_the_conv():
    rit = _zero_conv(ReverseInformationTransfer())
    with torch.no_grad():
        rit.conv.bias.fill_(1.0)
    x = torch.full((1, 1, 3, 3), 0.2)
    assert rit.matcher(x)[0, 0, 1, 1].item() == pytest.approx(_sig(1.2))


def test_gradients_reach_features_and_conv_not_scores():
    rit = ReverseInformationTransfer()
    feat = torch.randn(2, 4, 5, 7, requires_grad=True)   # odd sizes
    logits = torch.randn(2, 3, 5, 7, requires_grad=True)
    loss = rit([feat], [logits])
    loss.backward()
    assert torch.isfinite(loss) and feat.grad.abs().sum() > 0
    assert rit.conv.weight.grad is not None and logits.grad is None


def test_shape_errors_name_the_level():
    rit = ReverseInformationTransfer(num_classes=2)
    with pytest.raises(ValueError, match="RIT level 0: 3 score channels are not a multiple"):
        rit([torch.randn(1, 4, 2, 2)], [torch.randn(1, 3, 2, 2)])
    with pytest.raises(ValueError, match="RIT level 1: feature"):
        rit([torch.randn(1, 4, 2, 2), torch.randn(1, 4, 3, 3)],
            [torch.randn(1, 2, 2, 2), torch.randn(1, 2, 2, 2)])
