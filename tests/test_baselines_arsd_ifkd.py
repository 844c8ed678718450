"""ARSD (Yang et al., TGRS 2022) and IFKD (Zhang & Yang, ACM MM 2024) baseline losses: values on
hand-made tensors against the papers' formulas, gradients, empty images, the real distiller."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from _helpers import (backward_reaches_student_only, build_distiller, det_samples,
                      has_gradient)
from dipkd.baselines import ARSDLoss, IFKDLoss


class _Sample:
    def __init__(self, boxes):
        b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        self.gt_instances = type("G", (), {"bboxes": b})()


class _Priors:
    """A hand-made anchor generator: per level, ``cells`` x ``base`` anchors (x1, y1, x2, y2)
    offsets added to the cell's top-left corner, in mmdet's order (h, w, a)."""

    def __init__(self, strides, bases):
        self.strides, self.bases = strides, bases
        self.num_levels = len(strides)

    def grid_priors(self, sizes, device="cpu"):
        out = []
        for (h, w), s, base in zip(sizes, self.strides, self.bases):
            rows = []
            for y in range(h):
                for x in range(w):
                    for b in base:
                        rows.append([x * s + b[0], y * s + b[1], x * s + b[2], y * s + b[3]])
            out.append(torch.tensor(rows, dtype=torch.float32, device=device))
        return out


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _giou(a, b):
    enclose = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    inter = (max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
             * max(0.0, min(a[3], b[3]) - max(a[1], b[1])))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union - (enclose - union) / enclose


# ----------------------------------------------------------------------------------- ARSD
# 16x16 input; level 0: 4x4 cells of stride 4, one 4x4 anchor per cell; level 1: 2x2 cells of
# stride 8, one 8x8 anchor per cell.
TWO_LEVELS = _Priors([4, 8], [[[0, 0, 4, 4]], [[0, 0, 8, 8]]])


def _arsd(**kw):
    kw.setdefault("always_adapt", False)    # identity adapter: values by hand
    return ARSDLoss(student_channels=2, teacher_channels=2, **kw)


def test_arsd_core_cells_use_the_max_iou_over_all_levels_and_area_weights():
    # the IoU rule (mask_rule="iou", the released code's commented-out get_masks_2) with the
    # paper's area weighting
    # box A (8x8 at the origin): IoU 1 with the level-1 anchor of cell (0, 0); its four level-0
    # anchors only reach 16/64 = 0.25 <= 0.5 x 1, so A is imitated on level 1 only.
    # box B (4x4 at (8, 8)): IoU 1 with the level-0 anchor of cell (2, 2); 0.25 on level 1.
    boxes = [_Sample([[0, 0, 8, 8], [8, 8, 12, 12]])]
    s = [torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 2, 2)]
    t = [torch.ones(1, 2, 4, 4), torch.ones(1, 2, 2, 2)]
    zs = [torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 2, 2)]
    zt = [torch.full((1, 1, 4, 4), 2.0), torch.full((1, 1, 2, 2), 2.0)]
    out = _arsd(imitation_weight=1.0, cls_weight=1.0, mask_rule="iou", area_weighting=True)(
        s, t, boxes, (16, 16), student_cls_scores=zs, teacher_cls_scores=zt,
        prior_generator=TWO_LEVELS)
    w_a = 1 + math.exp(-8 / (16 / 2))       # 1 + exp(-sqrt(wh) / (sqrt(HW) / 2))
    w_b = 1 + math.exp(-4 / (16 / 2))
    norm = 2 * 2                            # 2 x two core cells
    assert out["loss_arsd_feat"].item() == pytest.approx(2 * (w_a + w_b) / norm, rel=1e-6)
    assert out["loss_arsd_cls"].item() == pytest.approx(2 * 4.0 / norm, rel=1e-6)
    # without area weighting every core cell weighs 1
    plain = _arsd(imitation_weight=1.0, mask_rule="iou", area_weighting=False)(
        s, t, boxes, (16, 16), prior_generator=TWO_LEVELS)
    assert plain["loss_arsd_feat"].item() == pytest.approx(2 * 2 / norm, rel=1e-6)
    # which cells: the difference only at level-0 cell (2, 2) and level-1 cell (0, 0) counts
    s2 = [x.clone() for x in t]
    s2[0][0, :, 2, 2] = 0.0
    s2[1][0, :, 0, 0] = 0.0
    again = _arsd(imitation_weight=1.0, mask_rule="iou", area_weighting=True)(
        s2, t, boxes, (16, 16), prior_generator=TWO_LEVELS)
    assert again["loss_arsd_feat"].item() == pytest.approx(out["loss_arsd_feat"].item())


# one level of 2x2 cells (stride 8), two anchors per cell: a 2x2 one and the 8x8 cell itself
TWO_ANCHORS = _Priors([8], [[[0, 0, 2, 2], [0, 0, 8, 8]]])
GT = [1.0, 1.0, 9.0, 9.0]                   # IoU 49/79 with the 8x8 anchor of cell (0, 0)


def _deltas(shift):
    """(1, 2*4, 2, 2) deltas: ``shift`` pixels of x/y shift for anchor 1 of cell (0, 0)."""
    d = torch.zeros(1, 8, 2, 2)
    d[0, 4, 0, 0] = d[0, 5, 0, 0] = shift / 8.0        # dx * w with w = 8
    return d


def _ssrd(student_shift, teacher_shift, **kw):
    loss = _arsd(reg_weight=1.0, **kw)
    feats = [torch.zeros(1, 2, 2, 2)]
    return loss(feats, feats, [_Sample([GT])], (16, 16),
                student_bbox_preds=[_deltas(student_shift)],
                teacher_bbox_preds=[_deltas(teacher_shift)], prior_generator=TWO_ANCHORS)


def test_arsd_ssrd_by_hand():
    anchor = [0, 0, 8, 8]
    s_box, t_box = [0.5, 0.5, 8.5, 8.5], [1, 1, 9, 9]
    assert _iou(t_box, GT) > _iou(s_box, GT) > _iou(anchor, GT)    # kept
    expected = 2.0 * (1 - _giou(s_box, t_box))                       # GIoU weight 2, one box
    assert _ssrd(0.5, 1.0)["loss_arsd_reg"].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("student_shift, teacher_shift", [
    (0.0, 1.0),      # student no better than its anchor
    (1.0, 0.5),      # student better than the teacher
])
def test_arsd_ssrd_strict_selection(student_shift, teacher_shift):
    assert _ssrd(student_shift, teacher_shift)["loss_arsd_reg"].item() == 0.0


def test_arsd_gradients_reach_only_the_student_and_the_adapter():
    torch.manual_seed(0)
    loss = ARSDLoss(student_channels=2, teacher_channels=2)       # 1x1 conv adapter
    s = [torch.randn(1, 2, 4, 4, requires_grad=True), torch.randn(1, 2, 2, 2, requires_grad=True)]
    t = [torch.randn(1, 2, 4, 4, requires_grad=True), torch.randn(1, 2, 2, 2, requires_grad=True)]
    zs = [torch.randn(1, 1, 4, 4, requires_grad=True), torch.randn(1, 1, 2, 2, requires_grad=True)]
    zt = [torch.randn(1, 1, 4, 4, requires_grad=True), torch.randn(1, 1, 2, 2, requires_grad=True)]
    ds = [torch.zeros(1, 4, 4, 4, requires_grad=True), torch.zeros(1, 4, 2, 2, requires_grad=True)]
    dt = [torch.full((1, 4, 4, 4), 0.05, requires_grad=True),
          torch.full((1, 4, 2, 2), 0.05, requires_grad=True)]
    with torch.no_grad():
        ds[1][0, :2, 0, 0] = 0.02          # student box between anchor and teacher box
    out = loss(s, t, [_Sample([[1, 1, 9, 9]])], (16, 16), student_cls_scores=zs,
               teacher_cls_scores=zt, student_bbox_preds=ds, teacher_bbox_preds=dt,
               prior_generator=TWO_LEVELS)
    assert set(out) == {"loss_arsd_feat", "loss_arsd_cls", "loss_arsd_reg"}
    assert out["loss_arsd_reg"].item() > 0
    sum(out.values()).backward()
    assert s[1].grad.abs().sum() > 0 and zs[1].grad.abs().sum() > 0 and ds[1].grad.abs().sum() > 0
    assert loss.adapter.weight.grad is not None
    assert all(x.grad is None for x in t + zt + dt)


def test_arsd_images_without_ships_give_finite_losses():
    loss = _arsd()
    s = [torch.randn(2, 2, 4, 4, requires_grad=True), torch.randn(2, 2, 2, 2)]
    t = [torch.randn(2, 2, 4, 4), torch.randn(2, 2, 2, 2)]
    z = [torch.randn(2, 1, 4, 4), torch.randn(2, 1, 2, 2)]
    d = [torch.randn(2, 4, 4, 4), torch.randn(2, 4, 2, 2)]
    for boxes in ([[]], [[[1, 1, 9, 9]], []]):
        samples = [_Sample(b) for b in boxes] + [_Sample([])] * (2 - len(boxes))
        out = loss(s, t, samples, (16, 16), student_cls_scores=z, teacher_cls_scores=z,
                   student_bbox_preds=d, teacher_bbox_preds=d, prior_generator=TWO_LEVELS)
        assert all(torch.isfinite(v) for v in out.values())
    assert out["loss_arsd_feat"].item() > 0


# ----------------------------------------------------------------------------------- IFKD

def _identity_3x3(conv: nn.Conv2d) -> None:
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :, 1, 1].copy_(torch.eye(conv.out_channels, conv.in_channels))
        conv.bias.zero_()


def _ifkd(**kw):
    kw.setdefault("always_adapt", False)
    loss = IFKDLoss(feat_weight=1.0, cls_weight=1.0, student_channels=1, teacher_channels=1,
                    fdr_levels=(0,), **kw)
    with torch.no_grad():
        loss.complex_weight.copy_(torch.tensor([[1.0, 0.0]]))     # w = 1 + 0i
    _identity_3x3(loss.generation[0])                             # G(x) = relu(x)
    _identity_3x3(loss.generation[2])
    return loss


# level 0 (1x4, FDR): teacher [1, 2, 3, 4], student ones; level 1 (2x2 of a 16x16 input, EDE):
# the box (9, 9, 15, 15) covers cell (1, 1) only (stride 8: floor(9/8) = 1 .. ceil(15/8) = 2,
# clamped to the 2x2 map; with or without the cell of the ceil).
T0, S0 = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 4), torch.ones(1, 1, 1, 4)
T1, S1 = torch.tensor([[3.0, -1.0], [2.0, 5.0]]).view(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
Z = [torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 2, 2)]           # logits 0: score 0.5


def _ifkd_by_hand(rescale: bool):
    # with one channel the Poincare distance of exp_0(s), exp_0(t) is 2 |t - s|
    d0 = [2 * abs(t - 1) for t in (1, 2, 3, 4)]
    # FDR: only the zero frequency is low (radius 0.1 x 1 / 2); scaling it by the score 0.5
    # subtracts 0.5 x mean from the map: teacher mean 2.5, student mean 1
    t0 = [abs(t - 0.5 * 2.5) if rescale else t for t in (1, 2, 3, 4)]
    s0 = [abs(1 - 0.5 * 1) if rescale else 1.0] * 4
    level0 = sum(d * (a - b) ** 2 for d, a, b in zip(d0, t0, s0)) / sum(d0)
    # EDE: G(T * M) = relu([[0, 0], [0, 5]]) regressed by the student (ones)
    d1 = [2 * abs(t - 1) for t in (3, -1, 2, 5)]
    g = [0, 0, 0, 5]
    level1 = sum(d * (a - 1) ** 2 for d, a in zip(d1, g)) / sum(d1)
    return level0 + level1, 2 * math.log(2)          # BCE(0 logit, 0.5) = log 2 per cell


@pytest.mark.parametrize("prob", [1.0, 0.0])
def test_ifkd_by_hand(prob):
    out = _ifkd(fdr_prob=prob)([S0, S1], [T0, T1], [_Sample([[9, 9, 15, 15]])], (16, 16),
                               student_cls_scores=Z, teacher_cls_scores=Z)
    feat, cls = _ifkd_by_hand(rescale=prob == 1.0)
    assert out["loss_ifkd_feat"].item() == pytest.approx(feat, rel=1e-5)
    assert out["loss_ifkd_cls"].item() == pytest.approx(cls, rel=1e-5)
    # level 1: (4 x 1 + 4 x 1 + 2 x 1 + 8 x 16) / 18 = 23 / 3
    assert feat == pytest.approx(3.0625 + 23 / 3 if prob else 6.0 + 23 / 3)


def test_ifkd_hyperbolic_mask_matches_the_poincare_distance_formula():
    torch.manual_seed(0)
    s, t = torch.randn(2, 8, 3, 5), torch.randn(2, 8, 3, 5)
    zs, zt = [torch.randn(2, 3, 3, 5)], [torch.randn(2, 3, 3, 5)]
    loss = IFKDLoss(feat_weight=0.0, cls_weight=1.0, student_channels=8, teacher_channels=8,
                    always_adapt=False)
    out = loss([s], [t], [_Sample([]), _Sample([])], (12, 20), student_cls_scores=zs,
               teacher_cls_scores=zt)

    # plain re-derivation: the distance d = arccosh(1 + 2|x-y|^2 / ((1-|x|^2)(1-|y|^2)))
    def ball(v):
        v = v.double() / math.sqrt(8)
        r = v.norm(dim=1, keepdim=True)
        return torch.tanh(r) * v / r

    x, y = ball(s), ball(t)
    dist = torch.acosh(1 + 2 * ((x - y) ** 2).sum(1)
                       / ((1 - (x ** 2).sum(1)) * (1 - (y ** 2).sum(1))))
    p = torch.sigmoid(zt[0]).double()
    bce = -(p * torch.log(torch.sigmoid(zs[0].double()))
            + (1 - p) * torch.log(1 - torch.sigmoid(zs[0].double())))
    expected = (bce * dist[:, None]).sum() / dist.sum()
    assert out["loss_ifkd_cls"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_ifkd_fdr_matches_a_numpy_rederivation_on_an_odd_map():
    torch.manual_seed(1)
    x, score = torch.randn(2, 3, 7, 9), torch.rand(2, 7, 9)
    loss = IFKDLoss(student_channels=3, teacher_channels=3, low_freq_ratio=0.5)
    got = loss.fdr(x, score, rescale=True).detach().numpy()
    w = torch.view_as_complex(loss.complex_weight.detach()).numpy()
    spec = np.fft.fftshift(np.fft.fft2(x.numpy(), norm="ortho"), axes=(-2, -1))
    # radius 0.5 x 7 / 2 = 1.75 around (3, 4): rows 2..4, columns 3..5
    gain = np.ones((2, 7, 9))
    gain[:, 2:5, 3:6] = score.numpy()[:, 2:5, 3:6]
    back = np.fft.ifft2(np.fft.ifftshift(spec * gain[:, None], axes=(-2, -1)), norm="ortho")
    np.testing.assert_allclose(got, np.abs(back * w[None, :, None, None]), rtol=1e-4, atol=1e-6)


def test_ifkd_gradients_reach_only_the_student_and_its_modules_on_odd_sizes():
    torch.manual_seed(2)
    sizes = [(13, 9), (7, 5), (4, 3), (2, 2), (1, 1)]
    s = [torch.randn(2, 4, h, w, requires_grad=True) for h, w in sizes]
    t = [torch.randn(2, 4, h, w, requires_grad=True) for h, w in sizes]
    zs = [torch.randn(2, 3, h, w, requires_grad=True) for h, w in sizes]
    zt = [torch.randn(2, 3, h, w, requires_grad=True) for h, w in sizes]
    loss = IFKDLoss(student_channels=4, teacher_channels=4, fdr_prob=1.0)
    out = loss(s, t, [_Sample([[4, 4, 30, 20]]), _Sample([])], (52, 36),
               student_cls_scores=zs, teacher_cls_scores=zt)
    assert set(out) == {"loss_ifkd_feat", "loss_ifkd_cls"}
    total = sum(out.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in s + zs)
    assert all(x.grad is None for x in t + zt)
    assert loss.adapter.weight.grad is not None and loss.complex_weight.grad is not None
    assert loss.generation[0].weight.grad is not None


def test_ifkd_images_without_ships_and_identical_features_are_finite():
    loss = IFKDLoss(student_channels=4, teacher_channels=4, always_adapt=False)
    f = [torch.randn(2, 4, 6, 5), torch.randn(2, 4, 3, 3), torch.randn(2, 4, 2, 2)]
    z = [torch.randn(2, 1, *x.shape[-2:]) for x in f]
    for s in ([x.clone().requires_grad_() for x in f],
              [torch.randn_like(x).requires_grad_() for x in f]):
        out = loss(s, f, [_Sample([]), _Sample([])], (24, 20), student_cls_scores=z,
                   teacher_cls_scores=z)
        total = sum(out.values())
        assert torch.isfinite(total)
        total.backward()
        assert all(torch.isfinite(x.grad).all() for x in s)


def test_ifkd_needs_the_teacher_head():
    with pytest.raises(ValueError, match="dense-head"):
        IFKDLoss()([torch.zeros(1, 256, 2, 2)], [torch.zeros(1, 256, 2, 2)], [_Sample([])],
                   (8, 8))
    with pytest.raises(ValueError, match="fdr_prob"):
        IFKDLoss(fdr_prob=1.5)


# --------------------------------------------------------------------- the real distiller

METHOD_PARAMS = {
    "arsd": dict(imitation_weight=0.01, cls_weight=0.01, reg_weight=0.1),
    "ifkd": dict(feat_weight=1.0e-4, cls_weight=1.0e-3),
}
LOSS_NAMES = {"arsd": {"loss_arsd_feat", "loss_arsd_cls", "loss_arsd_reg"},
              "ifkd": {"loss_ifkd_feat", "loss_ifkd_cls"}}


@pytest.mark.parametrize("detector", ["faster_rcnn", "retinanet"])
@pytest.mark.parametrize("method", ["arsd", "ifkd"])
def test_distiller_trains_the_student_only(method, detector, params, tmp_path):
    torch.manual_seed(0)
    params["methods"][method] = dict(METHOD_PARAMS[method])
    model, _, _ = build_distiller(params, method, detector, tmp_path)
    model.train()
    losses = model.loss(torch.randn(2, 3, 64, 96),
                        det_samples(64, 96, [[[10, 12, 40, 44]], []]))   # second image: no ship
    assert LOSS_NAMES[method] <= set(losses)
    for name in LOSS_NAMES[method]:
        assert torch.isfinite(losses[name]) and losses[name].requires_grad, name
    backward_reaches_student_only(model, losses)
    assert has_gradient(model.kd_loss.parameters())
    assert sum(losses[name] for name in LOSS_NAMES[method]).item() > 0


def test_registered_as_methods(params):
    from dipkd.kd.methods import kd_methods, method_class
    assert kd_methods()["arsd"] is method_class("arsd", params) is ARSDLoss
    assert kd_methods()["ifkd"] is method_class("ifkd", params) is IFKDLoss
    assert ARSDLoss.needs_teacher_head and IFKDLoss.needs_teacher_head
