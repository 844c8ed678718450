"""Baseline KD losses (FGD, MGD, DeFeat) on hand-made tensors, gradients, empty images."""
import math

import pytest
import torch

from dipkd.baselines import DeFeatLoss, FGDLoss, MGDLoss


class _Sample:
    def __init__(self, boxes):
        b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        self.gt_instances = type("G", (), {"bboxes": b})()


BOX = [_Sample([[4.0, 4.0, 12.0, 12.0]])]  # 16x16 input, 4x4 level: 4 target cells of 16


def test_fgd_by_hand():
    # zero teacher: uniform attention (A = 1); all-ones student: uniform attention too
    loss = FGDLoss(alpha=0.1, beta=0.01, gamma=1.0, lambda_=0.0, student_channels=2,
                   teacher_channels=2, num_levels=1)
    out = loss([torch.ones(1, 2, 4, 4)], [torch.zeros(1, 2, 4, 4)], BOX, (16, 16))
    # fg: 2 channels x (4 cells x 1/4) = 2; bg: 2 x (12 x 1/12) = 2
    assert out["loss_fgd_fg"].item() == pytest.approx(0.2)
    assert out["loss_fgd_bg"].item() == pytest.approx(0.02)
    assert out["loss_fgd_att"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["loss_fgd_global"].item() == 0.0


def test_fgd_attention_loss_matches_the_formula():
    t = torch.tensor([[[[1.0, 3.0]]], ]).repeat(1, 2, 1, 1)  # 1x2x1x2
    t[0, 1] *= 2
    s = torch.zeros_like(t) + 1.0
    out = FGDLoss(temp=0.5, gamma=1.0, student_channels=2, teacher_channels=2,
                  num_levels=1)([s], [t], [_Sample([])], (4, 8))
    # teacher: V^S = [1.5, 4.5] -> A^S = 2 softmax([3, 9]); V^C = [2, 4] -> A^C = 2 softmax([4, 8])
    # student: uniform, A = 1 everywhere
    def sm(a, b):
        return math.exp(a) / (math.exp(a) + math.exp(b))
    a_s = [2 * sm(3, 9), 2 * sm(9, 3)]
    a_c = [2 * sm(4, 8), 2 * sm(8, 4)]
    expected = sum(abs(v - 1) for v in a_s) + sum(abs(v - 1) for v in a_c)
    assert out["loss_fgd_att"].item() == pytest.approx(expected, rel=1e-5)  # gamma = 1


def test_mgd_with_zero_generator_regresses_the_teacher():
    loss = MGDLoss(alpha=0.5, mask_ratio=0.0, student_channels=2, teacher_channels=2,
                   num_levels=1)
    for m in loss.generation[0]:
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.zeros_(m.weight)
            torch.nn.init.zeros_(m.bias)
    t = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2).repeat(2, 2, 1, 1)
    out = loss([torch.randn(2, 2, 2, 2)], [t])
    # sum of T^2 = 2 images x 2 channels x 30, divided by N=2, times alpha
    assert out["loss_mgd"].item() == pytest.approx(0.5 * 60)


def test_mgd_mask_ratio_and_gradients():
    loss = MGDLoss(mask_ratio=0.45, num_levels=1, student_channels=8, teacher_channels=8)
    s = torch.randn(2, 8, 16, 16, requires_grad=True)
    t = torch.randn(2, 8, 16, 16, requires_grad=True)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = loss([s], [t], generator=g1)["loss_mgd"]
    assert a.item() == pytest.approx(loss([s], [t], generator=g2)["loss_mgd"].item())
    a.backward()
    assert s.grad.abs().sum() > 0 and t.grad is None
    assert loss.generation[0][0].weight.grad is not None
    with pytest.raises(ValueError, match="mask_ratio"):
        MGDLoss(mask_ratio=1.0)


def test_defeat_by_hand():
    out = DeFeatLoss(student_channels=2, teacher_channels=2, always_adapt=False, num_levels=1)(
        [torch.ones(1, 2, 4, 4)], [torch.zeros(1, 2, 4, 4)], BOX, (16, 16))
    # DeFeat's projection (stride 4): cols/rows int(1) .. int(3) excluded -> 2 x 2 = 4 cells
    # fg: 2 x 4 elements / (2 x 8) = 0.5 -> x3; bg: 2 x 12 / (2 x 24) = 0.5 -> x12; one level
    assert out["loss_defeat_fg"].item() == pytest.approx(1.5)
    assert out["loss_defeat_bg"].item() == pytest.approx(6.0)


@pytest.mark.parametrize("make", [lambda: FGDLoss(num_levels=2), lambda: MGDLoss(num_levels=2),
                                  lambda: DeFeatLoss()])
def test_no_box_image_is_finite_and_only_the_student_side_learns(make):
    loss = make()
    s = [torch.randn(2, 256, 9, 13, requires_grad=True), torch.randn(2, 256, 5, 7)]
    t = [torch.randn(2, 256, 9, 13, requires_grad=True), torch.randn(2, 256, 5, 7)]
    out = loss(s, t, [_Sample([]), _Sample([])], (36, 52))
    total = sum(out.values())
    assert torch.isfinite(total)
    total.backward()
    assert s[0].grad is not None and torch.isfinite(s[0].grad).all()
    assert t[0].grad is None
