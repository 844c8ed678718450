"""TWA baseline (CPAM + MAAM): values on hand-made tensors, gradients, empty images, and the
loss inside the real FeatureDistiller for Faster R-CNN and RetinaNet."""
import copy

import pytest
import torch
import torch.nn.functional as F

from _helpers import backward_reaches_student_only, build_distiller, det_samples
from dipkd.baselines import TWALoss


class _Sample:
    def __init__(self, boxes):
        b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        self.gt_instances = type("G", (), {"bboxes": b})()


def _identity_generation(loss, level):
    """Make MAAM's generation block of ``level`` the identity on non-negative inputs."""
    for m in loss.maam[level].generation:
        if isinstance(m, torch.nn.Conv2d):
            c = m.weight.shape[0]
            with torch.no_grad():
                m.weight.zero_()
                m.bias.zero_()
                for i in range(c):
                    m.weight[i, i, 1, 1] = 1.0


def test_registered_as_a_method():
    from dipkd.kd.methods import kd_methods
    assert kd_methods()["twa"] is TWALoss


def test_cpam_by_hand():
    # zero teacher and all-ones student: both attentions uniform (A = 1), so L_att = 0;
    # 16x16 input, 4x4 level, box (4,4,12,12) -> 9 target cells (S = 1/9), 7 bg (S = 1/7)
    loss = TWALoss(alpha=0.1, beta=0.01, gamma=1.0, lambda_=0.0, student_channels=2,
                   teacher_channels=2, num_levels=1)
    out = loss([torch.ones(1, 2, 4, 4)], [torch.zeros(1, 2, 4, 4)],
               [_Sample([[4.0, 4.0, 12.0, 12.0]])], (16, 16))
    assert set(out) == {"loss_twa_cpam_fg", "loss_twa_cpam_bg", "loss_twa_cpam_att",
                        "loss_twa_maam"}
    # fg: 2 channels x 9 cells x 1/9 x 1^2 = 2; bg: 2 x 7 x 1/7 = 2
    assert out["loss_twa_cpam_fg"].item() == pytest.approx(0.2)
    assert out["loss_twa_cpam_bg"].item() == pytest.approx(0.02)
    assert out["loss_twa_cpam_att"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["loss_twa_maam"].item() == 0.0


def test_cpam_matches_a_plain_torch_rederivation():
    torch.manual_seed(0)
    temp, alpha, beta, gamma = 0.7, 0.3, 0.2, 0.5
    s = torch.randn(2, 3, 4, 4)
    t = torch.randn(2, 3, 4, 4)
    out = TWALoss(temp=temp, alpha=alpha, beta=beta, gamma=gamma, lambda_=0.0,
                  student_channels=3, teacher_channels=3, num_levels=1)(
        [s], [t], [_Sample([[4.0, 4.0, 12.0, 12.0]]), _Sample([])], (16, 16))

    def sp(x):   # H*W * softmax over cells of mean_c |x| / T
        v = x.abs().mean(1).flatten(1) / temp
        e = torch.exp(v - v.max(1, keepdim=True).values)
        return (16 * e / e.sum(1, keepdim=True)).view(-1, 1, 4, 4)

    def ch(x):   # C * softmax over channels of mean_hw |x| / T
        v = x.abs().mean((2, 3)) / temp
        e = torch.exp(v - v.max(1, keepdim=True).values)
        return (3 * e / e.sum(1, keepdim=True)).view(-1, 3, 1, 1)

    tar = torch.zeros(2, 1, 4, 4)
    tar[0, 0, 1:4, 1:4] = 1.0                    # FGD's rule: rows/cols floor(1)..ceil(3)
    scale = torch.full((2, 1, 4, 4), 1.0 / 16)   # image 2: no ship, 16 background cells
    scale[0] = 1.0 / 7
    scale[0, 0, 1:4, 1:4] = 1.0 / 9
    w = sp(t) * ch(t)
    sq = w * (t - s) ** 2
    fg = alpha * (sq * tar * scale).sum() / 2
    bg = beta * (sq * (1 - tar) * scale).sum() / 2
    att = gamma * ((sp(t) - sp(s)).abs().sum() + (ch(t) - ch(s)).abs().sum()) / 2
    assert out["loss_twa_cpam_fg"].item() == pytest.approx(fg.item(), rel=1e-5)
    assert out["loss_twa_cpam_bg"].item() == pytest.approx(bg.item(), rel=1e-5)
    assert out["loss_twa_cpam_att"].item() == pytest.approx(att.item(), rel=1e-5)


def test_maam_by_hand():
    # zero-initialised fusion weights: a plain average of the available neighbours; identity
    # generation. Student level 0 (4x4) = 1, level 1 (2x2) = 3 -> both fuse to 2 everywhere.
    loss = TWALoss(alpha=0.0, beta=0.0, gamma=0.0, lambda_=1.0, student_channels=2,
                   teacher_channels=2, num_levels=2)
    _identity_generation(loss, 0)
    _identity_generation(loss, 1)
    s = [torch.ones(1, 2, 4, 4), torch.full((1, 2, 2, 2), 3.0)]
    t = [torch.full((1, 2, 4, 4), 0.5), torch.ones(1, 2, 2, 2)]
    out = loss(s, t, [_Sample([])], (16, 16))
    # level 0: (2 - 0.5)^2 x 2 ch x 16 cells = 72; level 1: (2 - 1)^2 x 2 x 4 = 8
    assert out["loss_twa_maam"].item() == pytest.approx(80.0)


def test_maam_matches_a_plain_torch_rederivation_on_odd_sizes():
    torch.manual_seed(1)
    c = 4
    loss = TWALoss(alpha=0.0, beta=0.0, gamma=0.0, lambda_=0.1, student_channels=3,
                   teacher_channels=c, num_levels=3)
    for m in loss.maam.modules():           # non-trivial fusion weights
        if isinstance(m, torch.nn.Conv2d) and m.out_channels == 1:
            torch.nn.init.normal_(m.weight)
            torch.nn.init.normal_(m.bias)
    sizes = [(7, 9), (4, 5), (2, 3)]
    s = [torch.randn(2, 3, *hw) for hw in sizes]
    t = [torch.randn(2, c, *hw) for hw in sizes]
    out = loss(s, t, [_Sample([[1.0, 2.0, 20.0, 15.0]]), _Sample([])], (28, 36))

    a = [F.conv2d(x, loss.adapter.weight, loss.adapter.bias) for x in s]
    expected = 0.0
    for level in range(3):
        block = loss.maam[level]
        srcs, logits = [], []
        for k, off in enumerate((-1, 0, 1)):
            j = level + off
            if 0 <= j < 3:
                r = F.interpolate(a[j], size=sizes[level], mode="bilinear",
                                  align_corners=False)
                srcs.append(r)
                logits.append(F.conv2d(r, block.weight[k].weight, block.weight[k].bias))
        wts = torch.softmax(torch.cat(logits, 1), 1)
        fused = sum(wts[:, i:i + 1] * r for i, r in enumerate(srcs))
        g1, g2 = block.generation[0], block.generation[2]
        gen = F.conv2d(F.relu(F.conv2d(fused, g1.weight, g1.bias, padding=1)),
                       g2.weight, g2.bias, padding=1)
        expected = expected + ((gen - t[level]) ** 2).sum()
    expected = 0.1 * expected / 2
    assert out["loss_twa_maam"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_only_the_student_side_and_twa_modules_learn():
    torch.manual_seed(2)
    loss = TWALoss(alpha=1.0, beta=1.0, gamma=1.0, lambda_=1.0, student_channels=6,
                   teacher_channels=8, num_levels=5)
    sizes = [(13, 17), (7, 9), (4, 5), (2, 3), (1, 2)]
    s = [torch.randn(2, 6, *hw, requires_grad=True) for hw in sizes]
    t = [torch.randn(2, 8, *hw, requires_grad=True) for hw in sizes]
    out = loss(s, t, [_Sample([[3.0, 5.0, 30.0, 21.0], [40.0, 30.0, 60.0, 50.0]]),
                      _Sample([])], (52, 68))
    total = sum(out.values())
    assert torch.isfinite(total)
    total.backward()
    for x in s:
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(x.grad is None for x in t)
    assert loss.adapter.weight.grad is not None
    for block in loss.maam:
        assert block.generation[0].weight.grad.abs().sum() > 0
        assert any(w.weight.grad is not None and w.weight.grad.abs().sum() > 0
                   for w in block.weight)


def test_images_without_ships_give_a_finite_loss():
    loss = TWALoss(num_levels=5)
    sizes = [(9, 13), (5, 7), (3, 4), (2, 2), (1, 1)]
    s = [torch.randn(2, 256, *hw, requires_grad=True) for hw in sizes]
    t = [torch.randn(2, 256, *hw) for hw in sizes]
    out = loss(s, t, [_Sample([]), _Sample([])], (36, 52))
    assert out["loss_twa_cpam_fg"].item() == 0.0
    total = sum(out.values())
    assert torch.isfinite(total) and total.item() > 0
    total.backward()
    assert torch.isfinite(s[0].grad).all()


def test_level_count_mismatch_is_rejected():
    loss = TWALoss(num_levels=2, student_channels=2, teacher_channels=2)
    with pytest.raises(ValueError, match="levels"):
        loss([torch.zeros(1, 2, 2, 2)] * 3, [torch.zeros(1, 2, 2, 2)] * 3, [_Sample([])],
             (8, 8))


# --- inside the real distiller ------------------------------------------------------------

@pytest.mark.parametrize("detector", ["faster_rcnn", "retinanet"])
def test_twa_in_the_feature_distiller(detector, params, tmp_path):
    torch.manual_seed(0)
    params = copy.deepcopy(params)
    params["methods"]["twa"] = {"temp": 0.5, "alpha": 5.0e-5, "beta": 2.5e-5,
                                "gamma": 5.0e-5, "lambda_": 5.0e-7}
    model, _, cfg = build_distiller(params, "twa", detector, tmp_path)
    assert cfg.model["kd_loss"]["type"] == "TWALoss"
    assert isinstance(model.kd_loss, TWALoss)
    model.train()
    losses = model.loss(torch.randn(2, 3, 96, 128),
                        det_samples(96, 128, [[[10, 20, 40, 50]], []]))   # 2nd image: no ship
    names = {"loss_twa_cpam_fg", "loss_twa_cpam_bg", "loss_twa_cpam_att", "loss_twa_maam"}
    assert names <= set(losses)
    for k in names:
        assert torch.isfinite(losses[k]), k
    backward_reaches_student_only(model, losses)
    assert all(b.generation[0].weight.grad is not None for b in model.kd_loss.maam)
    kd = sum(losses[k] for k in names)
    assert kd.item() > 0
