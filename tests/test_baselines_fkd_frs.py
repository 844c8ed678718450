"""FKD (Zhang & Ma, ICLR 2021) and FRS (Du et al., NeurIPS 2021) baseline losses: values on
hand-made tensors against the papers' formulas, gradients, empty images, the real distiller."""
import math

import pytest
import torch
from torch import nn

from _helpers import (backward_reaches_student_only, build_distiller, det_samples,
                      has_gradient)
from dipkd.baselines import FKDLoss, FRSLoss


class _Sample:
    def __init__(self, boxes):
        b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        self.gt_instances = type("G", (), {"bboxes": b})()


def _identity_1x1(conv: nn.Conv2d) -> None:
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :, 0, 0].copy_(torch.eye(conv.out_channels, conv.in_channels))
        conv.bias.zero_()


def _identity_3x3(conv: nn.Conv2d) -> None:
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :, 1, 1].copy_(torch.eye(conv.out_channels, conv.in_channels))
        conv.bias.zero_()


def _softmax(values):
    e = [math.exp(v) for v in values]
    return [x / sum(e) for x in e]


# ----------------------------------------------------------------------------------- FKD

def _fkd_one_level(**weights):
    loss = FKDLoss(student_channels=2, teacher_channels=2, num_levels=1, **weights)
    _identity_1x1(loss.feat_adaptation[0])
    _identity_1x1(loss.nonlocal_adaptation[0])
    return loss


# (1, 2, 1, 2) maps: teacher channel 0 = [1, 3], channel 1 = [2, 6]; student [3, 1], [1, 1]
# (the student's attention is not uniform, so masks from both differ from the teacher's alone)
T_FEAT = torch.tensor([[[[1.0, 3.0]], [[2.0, 6.0]]]])
S_FEAT = torch.tensor([[[[3.0, 1.0]], [[1.0, 1.0]]]])


def test_fkd_mask_and_attention_losses_by_hand():
    loss = _fkd_one_level(temp=0.5, mask_weight=1.0, channel_weight=1.0, spatial_weight=1.0,
                          nonlocal_weight=0.0)
    out = loss([S_FEAT], [T_FEAT], [_Sample([])], (4, 8))
    # g^s: student [(3+1)/2, (1+1)/2] = [2, 1], teacher [(1+2)/2, (3+6)/2] = [1.5, 4.5]
    # g^c: student [(3+1)/2, (1+1)/2] = [2, 1], teacher [(1+3)/2, (2+6)/2] = [2, 4]
    m_s = [2 * p for p in _softmax([(2 + 1.5) / 0.5, (1 + 4.5) / 0.5])]   # HW softmax(sum/T)
    m_c = [2 * p for p in _softmax([(2 + 2) / 0.5, (1 + 4) / 0.5])]       # C softmax(sum/T)
    sq = [[4.0, 4.0], [1.0, 25.0]]                                        # (T - S)^2 [k][j]
    l_am = math.sqrt(sum(sq[k][j] * m_s[j] * m_c[k] for k in range(2) for j in range(2)))
    l_at = math.sqrt(0.5 ** 2 + 3.5 ** 2) + math.sqrt(0.0 ** 2 + 3.0 ** 2)
    assert out["loss_fkd_mask"].item() == pytest.approx(l_am, rel=1e-5)
    assert out["loss_fkd_att"].item() == pytest.approx(l_at, rel=1e-5)
    assert out["loss_fkd_nonlocal"].item() == 0.0


def test_fkd_weights_and_the_separate_attention_weights():
    base = _fkd_one_level(mask_weight=1.0, channel_weight=0.0, spatial_weight=0.0,
                          nonlocal_weight=0.0)([S_FEAT], [T_FEAT])
    out = _fkd_one_level(mask_weight=7e-5, channel_weight=2.0, spatial_weight=0.0,
                         nonlocal_weight=0.0)([S_FEAT], [T_FEAT])
    assert out["loss_fkd_mask"].item() == pytest.approx(7e-5 * base["loss_fkd_mask"].item())
    assert out["loss_fkd_att"].item() == pytest.approx(2.0 * 3.0, rel=1e-5)


def test_fkd_nonlocal_starts_as_feature_imitation():
    # zero-initialised BN in W: z = x for both blocks, so L_NLD = ||S - T||_2 (a = identity)
    loss = _fkd_one_level(mask_weight=0.0, channel_weight=0.0, spatial_weight=0.0,
                          nonlocal_weight=1.0)
    out = loss([S_FEAT], [T_FEAT])
    assert out["loss_fkd_nonlocal"].item() == pytest.approx(math.sqrt(4 + 4 + 1 + 25), rel=1e-5)


def test_fkd_nonlocal_block_matches_the_dot_product_formula():
    torch.manual_seed(0)
    loss = FKDLoss(student_channels=4, teacher_channels=4, num_levels=1,
                   nonlocal_reduction=(2,), nonlocal_stride=(1,))
    block = loss.teacher_nonlocal[0]
    with torch.no_grad():
        block.out[1].weight.fill_(1.0)   # BN as identity (eval mode, running stats 0 / 1)
    block.eval()
    x = torch.randn(2, 4, 3, 5)

    def conv(c, v):   # 1x1 conv as a matrix product, (N, C, H, W) -> (N, C', HW)
        return torch.einsum("oc,nchw->nohw", c.weight[:, :, 0, 0], v).flatten(2) \
            + c.bias[None, :, None]
    theta, phi, g = conv(block.theta, x), conv(block.phi, x), conv(block.g, x)
    y = torch.einsum("nap,nbp->nab", theta.transpose(1, 2), phi.transpose(1, 2)) / 15  # N,HW,HW
    y = torch.einsum("nab,ncb->nca", y, g).reshape(2, 2, 3, 5)
    expected = x + conv(block.out[0], y).reshape(2, 4, 3, 5)
    assert torch.allclose(block(x), expected, atol=1e-4)


def test_fkd_subsampled_nonlocal_on_odd_and_tiny_maps():
    loss = FKDLoss(num_levels=5)
    sizes = [(17, 25), (9, 13), (5, 7), (3, 4), (1, 2)]   # 5 levels, odd, P6 smaller than 2x2
    s = [torch.randn(2, 256, h, w, requires_grad=True) for h, w in sizes]
    t = [torch.randn(2, 256, h, w) for h, w in sizes]
    out = loss(s, t, [_Sample([[4.0, 4.0, 30.0, 30.0]]), _Sample([])], (68, 100))
    assert set(out) == {"loss_fkd_mask", "loss_fkd_att", "loss_fkd_nonlocal"}
    assert all(torch.isfinite(v) for v in out.values())


def test_fkd_gradients_reach_only_the_student_and_its_modules():
    loss = FKDLoss(num_levels=2)
    s = [torch.randn(2, 256, 9, 13, requires_grad=True), torch.randn(2, 256, 5, 7,
                                                                    requires_grad=True)]
    t = [torch.randn(2, 256, 9, 13, requires_grad=True), torch.randn(2, 256, 5, 7,
                                                                    requires_grad=True)]
    out = loss(s, t, [_Sample([]), _Sample([])], (36, 52))   # no GT box at all
    total = sum(out.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
               for x in s)
    assert all(x.grad is None for x in t)
    assert loss.feat_adaptation[0].weight.grad.abs().sum() > 0
    assert loss.nonlocal_adaptation[0].weight.grad.abs().sum() > 0
    assert loss.student_nonlocal[0].out[1].weight.grad is not None
    assert loss.teacher_nonlocal[0].out[1].weight.grad is not None   # the method's own block


def test_fkd_identical_features_have_finite_gradients():
    loss = FKDLoss(num_levels=1, student_channels=8, teacher_channels=8)
    _identity_1x1(loss.feat_adaptation[0])
    _identity_1x1(loss.nonlocal_adaptation[0])
    f = torch.randn(1, 8, 4, 6)
    s = f.clone().requires_grad_(True)
    sum(loss([s], [f]).values()).backward()
    assert torch.isfinite(s.grad).all()


# ----------------------------------------------------------------------------------- FRS

def test_frs_by_hand():
    loss = FRSLoss(feat_weight=1.0, cls_weight=1.0, student_channels=1, teacher_channels=1,
                   num_levels=1)
    _identity_3x3(loss.adapter[0])
    s, t = torch.tensor([[[[1.0, 1.0]]]]), torch.tensor([[[[0.0, 3.0]]]])
    # teacher probabilities of 2 score channels (anchors x classes): [0.5, 0.75], [0.25, 0.5]
    y_t = torch.tensor([[[[0.0, math.log(3)]], [[-math.log(3), 0.0]]]])
    y_s = torch.zeros(1, 2, 1, 2)                       # student probability 0.5 everywhere
    out = loss([s], [t], [_Sample([])], (4, 8), student_cls_scores=[y_s],
               teacher_cls_scores=[y_t])
    score, n = [0.5, 0.75], 1.25                         # max over channels; its sum
    assert out["loss_frs_feat"].item() == pytest.approx((0.5 * 1 + 0.75 * 4) / n)
    # BCE(p_s = 0.5, target p) = ln 2 whatever p: 2 channels x ln 2 x sum(score) / n
    bce = [[-(p * math.log(0.5) + (1 - p) * math.log(0.5)) for p in row]
           for row in ([0.5, 0.75], [0.25, 0.5])]
    expected = sum(score[j] * bce[c][j] for c in range(2) for j in range(2)) / n
    assert out["loss_frs_cls"].item() == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(2 * math.log(2))


def test_frs_matches_a_plain_rederivation_on_two_levels():
    torch.manual_seed(1)
    loss = FRSLoss(feat_weight=0.002, cls_weight=0.1, student_channels=3, teacher_channels=3,
                   num_levels=2)
    shapes = [(7, 9), (4, 5)]
    s = [torch.randn(2, 3, h, w) for h, w in shapes]
    t = [torch.randn(2, 3, h, w) for h, w in shapes]
    y_s = [torch.randn(2, 6, h, w) for h, w in shapes]    # e.g. 3 anchors x 2 classes
    y_t = [torch.randn(2, 6, h, w) for h, w in shapes]
    out = loss(s, t, student_cls_scores=y_s, teacher_cls_scores=y_t)
    feat = cls = 0.0
    for lv in range(2):
        p_t = 1 / (1 + torch.exp(-y_t[lv]))
        p_s = 1 / (1 + torch.exp(-y_s[lv]))
        score = p_t.max(dim=1, keepdim=True).values
        adapted = loss.adapter[lv](s[lv]).detach()
        feat += float(((t[lv] - adapted) ** 2 * score).sum() / score.sum())
        bce = -(p_t * torch.log(p_s) + (1 - p_t) * torch.log(1 - p_s))
        cls += float((bce * score).sum() / score.sum())
    assert out["loss_frs_feat"].item() == pytest.approx(0.002 * feat, rel=1e-4)
    assert out["loss_frs_cls"].item() == pytest.approx(0.1 * cls, rel=1e-4)


def test_frs_gradients_reach_only_the_student_and_empty_images_are_finite():
    loss = FRSLoss(num_levels=2)
    assert FRSLoss.needs_teacher_head
    s = [torch.randn(2, 256, 9, 13, requires_grad=True), torch.randn(2, 256, 5, 7,
                                                                    requires_grad=True)]
    t = [torch.randn(2, 256, 9, 13, requires_grad=True), torch.randn(2, 256, 5, 7,
                                                                    requires_grad=True)]
    y_s = [torch.randn(2, 3, 9, 13, requires_grad=True), torch.randn(2, 3, 5, 7,
                                                                   requires_grad=True)]
    y_t = [torch.randn(2, 3, 9, 13, requires_grad=True), torch.randn(2, 3, 5, 7,
                                                                   requires_grad=True)]
    out = loss(s, t, [_Sample([]), _Sample([])], (36, 52), student_cls_scores=y_s,
               teacher_cls_scores=y_t, student_bbox_preds=None, prior_generator=None)
    total = sum(out.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in s + y_s)
    assert all(x.grad is None for x in t + y_t)
    assert loss.adapter[0].weight.grad.abs().sum() > 0


def test_frs_needs_the_teacher_head():
    with pytest.raises(ValueError, match="teacher_cls_scores"):
        FRSLoss(num_levels=1)([torch.zeros(1, 256, 2, 2)], [torch.zeros(1, 256, 2, 2)],
                              student_cls_scores=[torch.zeros(1, 3, 2, 2)],
                              teacher_cls_scores=None)


# --------------------------------------------------------------------- the real distiller

METHOD_PARAMS = {
    "fkd": dict(temp=0.5, mask_weight=7e-5, channel_weight=4e-3, spatial_weight=4e-3,
                nonlocal_weight=7e-5),
    "frs": dict(feat_weight=0.002, cls_weight=0.1),
}
LOSS_NAMES = {"fkd": {"loss_fkd_mask", "loss_fkd_att", "loss_fkd_nonlocal"},
              "frs": {"loss_frs_feat", "loss_frs_cls"}}


@pytest.mark.parametrize("detector", ["faster_rcnn", "retinanet"])
@pytest.mark.parametrize("method", ["fkd", "frs"])
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
