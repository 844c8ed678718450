"""DIPKD in the authors' form (Mok-kn/Dip mmdet/losses/kd.py) against values computed
independently here with numpy and PyWavelets: the attention carried once (item 2), the
generation block on L_ntar (item 4), the residual-score RIT (item 5), the unsplit loss with
KLD off (item 6); and the distiller's levels and teacher-weight inheritance (items 1, 3)."""
import copy

import numpy as np
import pytest
import pywt
import torch

from _helpers import build_distiller, det_samples, total_loss
from dipkd.kd.dipkd_loss import DIPKDLoss
from dipkd.kd.kld import generated_ntar_loss, kld_level_losses, unsplit_level_loss
from dipkd.kd.rit import ResidualScoreRIT


class _Sample:
    def __init__(self, boxes):
        self.gt_instances = type("G", (), {"bboxes": torch.tensor(boxes, dtype=torch.float32)
                                           .reshape(-1, 4)})()


def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def _attention(f, tau):
    """A^S (H, W) and A^C (C,) of Eq. 3-6 for one sample (C, H, W), in numpy."""
    c, h, w = f.shape
    a_s = h * w * _softmax(np.abs(f).mean(axis=0).ravel() / tau).reshape(h, w)
    a_c = c * _softmax(np.abs(f).mean(axis=(1, 2)) / tau)
    return a_s, a_c


def _denoise(f, levels):
    """The authors' f_wld of one sample (C, H, W) with PyWavelets: Haar on the last two
    axes, per level a soft threshold of 0.5 x std of the sample's whole cH band."""
    coeffs = pywt.wavedec2(f, "db1", level=levels)
    kept = [coeffs[0]]
    for ch_h, ch_v, ch_d in coeffs[1:]:
        t = 0.5 * np.std(ch_h)
        kept.append(tuple(pywt.threshold(b, t, mode="soft") for b in (ch_h, ch_v, ch_d)))
    return pywt.waverec2(kept, "db1")


def _pair(seed=0, c=3, h=8, w=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, c, h, w, generator=g), torch.randn(1, c, h, w, generator=g)


def test_authors_weighting_denoises_raw_features_and_carries_attention_once():
    fs, ft = _pair()
    box = [[8.0, 8.0, 20.0, 16.0]]          # input 32x32 -> rows 2..4, cols 2..5 of 8x8
    loss = DIPKDLoss(sns=True, kld=True, rit=False, alpha=1.0, beta=1.0, tau=0.5,
                     mask_rate=1.0, mask_rule="keep", ntar_generation=False,
                     wavelet_levels=2, student_channels=3, teacher_channels=3)
    out = loss([fs], [ft], [_Sample(box)], (32, 32))
    s, t = fs[0].numpy().astype(np.float64), ft[0].numpy().astype(np.float64)
    a_s, a_c = _attention(t, 0.5)
    weight = a_c[:, None, None] * a_s[None]
    sq = weight * (_denoise(t, 2) - _denoise(s, 2)) ** 2
    tar = np.zeros((8, 8))
    tar[2:5, 2:6] = 1
    expected_tar = (sq * tar / 12).sum()                 # 1/(H_r W_r) = 1/(3*4)
    expected_ntar = (sq * (1 - tar) / (64 - 12)).sum()   # all background kept, 1/N_bg
    assert out["loss_kd_tar"].item() == pytest.approx(expected_tar, rel=1e-4)
    assert out["loss_kd_ntar"].item() == pytest.approx(expected_ntar, rel=1e-4)
    # the literal Eq. 7 denoises the attention-weighted features instead
    eq7 = DIPKDLoss(sns=True, kld=True, rit=False, alpha=1.0, beta=1.0, mask_rate=1.0,
                    mask_rule="keep", ntar_generation=False, wavelet_levels=2,
                    weighting="eq7", student_channels=3, teacher_channels=3)
    sq7 = (_denoise(weight * t, 2) - _denoise(weight * s, 2)) ** 2
    out7 = eq7([fs], [ft], [_Sample(box)], (32, 32))
    assert out7["loss_kd_tar"].item() == pytest.approx((sq7 * tar / 12).sum(), rel=1e-4)


def test_generation_block_on_the_non_target_branch_by_hand():
    fs, ft = _pair(1, c=2, h=4, w=4)
    tar = torch.zeros(1, 1, 4, 4)
    tar[..., :2, :2] = 1
    scale = torch.where(tar > 0, torch.tensor(0.25), torch.tensor(1 / 12))
    kept = (1 - tar).clone()
    kept[..., 3, :] = 0                       # 12 background cells, 8 kept
    a_s = torch.rand(1, 1, 4, 4) + 0.5
    a_c = torch.rand(1, 2, 1, 1) + 0.5
    got = generated_ntar_loss(fs, ft, tar, scale, kept, (a_s, a_c), torch.nn.Identity())
    s, t = fs.numpy()[0], ft.numpy()[0]
    root_w = np.sqrt(a_s.numpy()[0] * a_c.numpy()[0])
    m_bg = (1 - tar.numpy()[0]) / 12
    m_keep = kept.numpy()[0] / 8
    expected = ((m_keep * (np.sqrt(m_keep) * root_w * s) - np.sqrt(m_bg) * root_w * t) ** 2)
    assert got.item() == pytest.approx(expected.sum(), rel=1e-5)
    # a block that outputs zeros leaves the teacher's term: sum W t^2 / N_bg on background
    zero = torch.nn.Conv2d(2, 2, 1)
    torch.nn.init.zeros_(zero.weight)
    torch.nn.init.zeros_(zero.bias)
    got0 = generated_ntar_loss(fs, ft, tar, scale, kept, (a_s, a_c), zero)
    assert got0.item() == pytest.approx((m_bg * root_w ** 2 * t ** 2).sum(), rel=1e-5)


def test_dipkd_builds_one_generation_block_per_level_and_trains_it():
    loss = DIPKDLoss(rit=False, num_levels=2, student_channels=4, teacher_channels=4,
                     mask_rate=0.5)
    assert len(loss.generation) == 2
    fs = [torch.randn(2, 4, 8, 8, requires_grad=True), torch.randn(2, 4, 4, 4)]
    ft = [torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4, 4)]
    out = loss(fs, ft, [_Sample([[2.0, 2.0, 12.0, 10.0]]), _Sample([])], (32, 32))
    out["loss_kd_ntar"].backward()
    assert loss.generation[0][0].weight.grad.abs().sum() > 0
    assert fs[0].grad.abs().sum() > 0                   # gradient reaches the student (SNS)
    with pytest.raises(ValueError, match="built for num_levels=2"):
        loss(fs * 2, ft * 2, [_Sample([]), _Sample([])], (32, 32))
    assert DIPKDLoss(ntar_generation=False).generation is None


def test_residual_score_rit_by_hand():
    rit = ResidualScoreRIT(score_channels=3, num_levels=1)
    for conv in (rit.blocks[0][0], rit.blocks[0][2]):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    g = torch.Generator().manual_seed(3)
    feat = torch.randn(2, 4, 3, 5, generator=g)
    logits = 8 * torch.randn(2, 3, 3, 5, generator=g)
    logits[0, 0, 0, 0] = 25.0                           # clamped to 10
    s = np.clip(logits.numpy(), -10, 10)
    m = (1 / (1 + np.exp(-s))).max(axis=1, keepdims=True) + 1e-6
    expected = (((feat.numpy() * m).mean(axis=1, keepdims=True) - m) ** 2).mean()
    assert rit([feat], [logits]).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="score channels"):
        rit([feat], [torch.zeros(2, 9, 3, 5)])


def test_rit_authors_form_reaches_student_features_and_scores_with_gamma():
    loss = DIPKDLoss(sns=False, kld=False, rit=True, gamma=2.0, num_levels=1,
                     score_channels=3, student_channels=4, teacher_channels=4)
    feat = torch.randn(1, 4, 6, 6, requires_grad=True)
    logits = torch.randn(1, 3, 6, 6, requires_grad=True)
    out = loss([feat], [torch.randn(1, 4, 6, 6)], [_Sample([])], (24, 24),
               student_cls_scores=[logits])
    assert set(out) == {"loss_rit"}
    assert out["loss_rit"].item() == pytest.approx(2.0 * loss.rit([feat], [logits]).item())
    out["loss_rit"].backward()
    assert feat.grad.abs().sum() > 0 and logits.grad is not None   # not detached (authors)


def test_unsplit_loss_with_kld_off_by_hand():
    fs, ft = _pair(2, c=2, h=4, w=6)
    a_s = torch.rand(1, 1, 4, 6) + 0.5
    a_c = torch.rand(1, 2, 1, 1) + 0.5
    got = unsplit_level_loss(fs, ft, (a_s, a_c))
    w = a_s.numpy()[0] * a_c.numpy()[0]
    expected = (w * (ft.numpy()[0] - fs.numpy()[0]) ** 2).sum() / 24
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # and it equals the KLD pair with every cell background (no box, all kept), beta = alpha
    _, ntar = kld_level_losses(fs, ft, [torch.zeros(0, 4)], (16, 24), 1.0,
                               attention=(a_s, a_c), mask_rule="keep")
    assert ntar.item() == pytest.approx(got.item(), rel=1e-5)


def test_distiller_reads_exactly_the_configured_levels(params, tmp_path):
    model, _, _ = build_distiller(params, "dipkd", "faster_rcnn", tmp_path)
    assert model.fpn_levels == [0, 1, 2, 3]             # params.yaml: the authors' four
    seen = {}
    real_forward = model.kd_loss.forward

    def spy(student_feats, teacher_feats, **kw):
        seen.update(shapes=[tuple(f.shape[-2:]) for f in student_feats],
                    teacher=[tuple(f.shape[-2:]) for f in teacher_feats],
                    scores=[tuple(s.shape[-2:]) for s in kw["student_cls_scores"]],
                    levels=kw["fpn_levels"])
        return real_forward(student_feats, teacher_feats, **kw)

    model.kd_loss.forward = spy
    model.train()
    model.loss(torch.randn(1, 3, 64, 128), det_samples(64, 128, [[[8, 8, 40, 30]]]))
    # P2..P5 of a 64x128 input: strides 4, 8, 16, 32
    assert seen["shapes"] == [(16, 32), (8, 16), (4, 8), (2, 4)] == seen["teacher"]
    assert seen["scores"] == seen["shapes"] and seen["levels"] == [0, 1, 2, 3]
    model.fpn_levels = [1, 3]
    model.loss(torch.randn(1, 3, 64, 128), det_samples(64, 128, [[[8, 8, 40, 30]]]))
    assert seen["shapes"] == [(8, 16), (2, 4)] and seen["levels"] == [1, 3]
    model.fpn_levels = [5]
    with pytest.raises(ValueError, match="only 5 outputs"):
        model.loss(torch.randn(1, 3, 64, 128), det_samples(64, 128, [[]]))


@pytest.mark.parametrize("detector", ["faster_rcnn", "retinanet"])
def test_inheritance_copies_the_teachers_neck_and_heads(params, tmp_path, detector):
    model, teacher_state, _ = build_distiller(params, "dipkd", detector, tmp_path)
    student = model.student.state_dict()
    assert model.inherit and model.inherited
    shared = [k for k in teacher_state if not k.startswith("backbone.") and k in student
              and student[k].shape == teacher_state[k].shape]
    assert sorted(model.inherited) == sorted(shared)
    assert any(k.startswith("neck.fpn_convs.") for k in shared)
    assert any("head" in k for k in shared)
    for k in shared:
        assert torch.equal(student[k], teacher_state[k]), k
    lateral = "neck.lateral_convs.0.conv.weight"      # 256 <- 256 (R50) vs 64 (R18) channels
    assert student[lateral].shape != teacher_state[lateral].shape
    assert not any(k.startswith("backbone.") for k in model.inherited)
    before = copy.deepcopy(model.student.state_dict())
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    losses = model.loss(torch.randn(2, 3, 64, 96), det_samples(64, 96, [[[8, 8, 40, 30]], []]))
    total_loss(losses).backward()
    opt.step()
    after = model.student.state_dict()
    changed = [k for k in shared if k.endswith("weight") and not torch.equal(after[k], before[k])]
    assert changed                                      # trained on from the teacher's values
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, teacher_state[k]), k      # the teacher itself is untouched


def test_without_inheritance_the_student_keeps_its_own_init(params, tmp_path):
    params["methods"]["dipkd"]["inherit"] = False
    model, teacher_state, _ = build_distiller(params, "dipkd", "retinanet", tmp_path)
    assert not model.inherited
    key = "neck.fpn_convs.0.conv.weight"
    assert not torch.equal(model.student.state_dict()[key], teacher_state[key])
