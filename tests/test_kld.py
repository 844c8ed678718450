"""KLD masks (Eq. 8-10) and losses (Eq. 11-14), and the Eq. 2 MSE, on hand-made tensors."""
import pytest
import torch

from dipkd.kd.dipkd_loss import DIPKDLoss, FitNetLoss
from dipkd.kd.feature_mse import feature_mse
from dipkd.kd.kld import kld_level_losses
from dipkd.kd.masks import random_background_mask, target_masks


class _Sample:
    def __init__(self, boxes):
        self.gt_instances = type("G", (), {"bboxes": torch.tensor(boxes, dtype=torch.float32)
                                           .reshape(-1, 4)})()


def test_box_projection_and_scale_mask():
    # input 16x16, feature 4x4 (stride 4): box (4,4,12,12) covers rows/cols floor(1)..ceil(3)
    # = 1..3 INCLUDED (FGD's rule: the cell of the ceil too) -> 9 cells
    tar, scale = target_masks([torch.tensor([[4.0, 4.0, 12.0, 12.0]])], (16, 16), (4, 4))
    expected = torch.zeros(4, 4)
    expected[1:4, 1:4] = 1
    assert torch.equal(tar[0, 0], expected)
    assert scale[0, 0, 1, 1] == pytest.approx(1 / 9)      # 1 / ((3+1-1) * (3+1-1))
    assert scale[0, 0, 0, 0] == pytest.approx(1 / 7)      # 1 / N_bg, 7 background cells


def test_box_at_the_border_uses_fgds_unclamped_area():
    # box to the bottom-right corner: ceil(16/4) = 4 is outside the 4x4 map (clamped to 3),
    # FGD's area still counts it: 1 / ((4+1-2) * (4+1-2)) = 1/9 over the 2x2 cells 2..3
    tar, scale = target_masks([torch.tensor([[8.0, 8.0, 16.0, 16.0]])], (16, 16), (4, 4))
    assert tar[0, 0, 2:, 2:].sum() == 4 and tar.sum() == 4
    assert scale[0, 0, 3, 3] == pytest.approx(1 / 9)


def test_smaller_box_weight_wins_where_boxes_overlap():
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0], [4.0, 4.0, 8.0, 8.0]])
    tar, scale = target_masks([boxes], (16, 16), (4, 4))
    # big box: rows 0..ceil(4)=4 (clamped to 3), area 1/(5*5); small box rows 1..2: 1/4
    assert tar.sum() == 16 and scale[0, 0, 1, 1] == pytest.approx(1 / 4)
    assert scale[0, 0, 0, 0] == pytest.approx(1 / 25)     # fully covered: no background


def test_tiny_box_keeps_the_cell_of_its_far_edge_and_empty_image_is_background():
    # (5, 5, 5.5, 5.5): rows/cols floor(1.25)=1 .. ceil(1.375)=2 -> 2x2 cells (the excluded-
    # ceil rule gave one cell); a box on a cell edge, (4, 4, 4, 4): floor(1)..ceil(1) -> 1 cell
    tar, scale = target_masks([torch.tensor([[5.0, 5.0, 5.5, 5.5]]), torch.zeros(0, 4)],
                              (16, 16), (4, 4))
    assert tar[0].sum() == 4 and scale[0, 0, 1, 1] == 0.25
    edge, _ = target_masks([torch.tensor([[4.0, 4.0, 4.0, 4.0]])], (16, 16), (4, 4))
    assert edge.sum() == 1 and edge[0, 0, 1, 1] == 1
    assert tar[1].sum() == 0 and scale[1].flatten().tolist() == pytest.approx([1 / 16] * 16)


def test_random_background_mask_rate():
    tar = torch.zeros(1, 1, 100, 100)
    tar[..., :10, :10] = 1
    assert torch.equal(random_background_mask(tar, 0.0), 1 - tar)
    assert random_background_mask(tar, 1.0).sum() == 0
    g = torch.Generator().manual_seed(0)
    kept = random_background_mask(tar, 0.25, g).sum() / (1 - tar).sum()
    assert kept == pytest.approx(0.75, abs=0.02)          # 25% of background dropped
    assert (random_background_mask(tar, 0.5, g) * tar).sum() == 0  # targets never dropped
    with pytest.raises(ValueError, match="mask_rate must be in"):
        random_background_mask(tar, 1.5)
    # the authors' rule: mask_rate is the fraction KEPT (lambda_mask 0.25 keeps a quarter)
    kept = random_background_mask(tar, 0.25, g, rule="keep").sum() / (1 - tar).sum()
    assert kept == pytest.approx(0.25, abs=0.02)
    assert torch.equal(random_background_mask(tar, 1.0, rule="keep"), 1 - tar)
    with pytest.raises(ValueError, match="mask_rule"):
        random_background_mask(tar, 0.5, rule="sometimes")


def test_kld_losses_by_hand():
    student = torch.ones(1, 2, 4, 4, requires_grad=True)
    teacher = torch.zeros(1, 2, 4, 4, requires_grad=True)
    boxes = [torch.tensor([[4.0, 4.0, 12.0, 12.0]])]
    l_tar, l_ntar = kld_level_losses(student, teacher, boxes, (16, 16), mask_rate=0.0)
    # L_tar = 2 channels x 9 cells x 1/9 x 1^2 = 2; L_ntar = 2 x 7 x 1/7 = 2
    assert l_tar.item() == pytest.approx(2.0) and l_ntar.item() == pytest.approx(2.0)
    (l_tar + l_ntar).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None
    _, only_target = kld_level_losses(student, teacher, boxes, (16, 16), mask_rate=1.0)
    assert only_target.item() == 0.0


def test_dipkd_loss_weights_and_switches():
    student = [torch.ones(1, 2, 4, 4, requires_grad=True)]
    teacher = [torch.zeros(1, 2, 4, 4)]
    samples = [_Sample([[4.0, 4.0, 12.0, 12.0]])]
    loss = DIPKDLoss(sns=False, kld=True, rit=False, alpha=0.1, beta=0.01, mask_rate=0.0,
                     mask_rule="drop", ntar_generation=False, student_channels=2,
                     teacher_channels=2)
    out = loss(student, teacher, samples, (16, 16))
    assert set(out) == {"loss_kd_tar", "loss_kd_ntar"}
    assert out["loss_kd_tar"].item() == pytest.approx(0.2)   # alpha * L_tar / N
    assert out["loss_kd_ntar"].item() == pytest.approx(0.02)  # beta * L_ntar / N
    # SNS on, KLD off: Eq. 2 on the denoised features. A zero teacher gives uniform attention
    # (A = 1) and a constant student has no wavelet detail, so the MSE stays 1.
    mse = DIPKDLoss(sns=True, kld=False, rit=False, mse_weight=3.0, no_kld_loss="mse",
                    student_channels=2, teacher_channels=2)(student, teacher, samples, (16, 16))
    assert set(mse) == {"loss_kd_mse"} and mse["loss_kd_mse"].item() == pytest.approx(3.0)
    # KLD off, default: the same loss without the split, 1/(H*W) per cell, weight alpha:
    # alpha * (2 channels x 16 cells x 1^2 / 16) / N = 0.1 * 2
    fea = DIPKDLoss(sns=True, kld=False, rit=False, alpha=0.1, student_channels=2,
                    teacher_channels=2)(student, teacher, samples, (16, 16))
    assert set(fea) == {"loss_kd_fea"} and fea["loss_kd_fea"].item() == pytest.approx(0.2)
    # all switches off is the student baseline (Table 3's first row): nothing distilled
    assert DIPKDLoss(sns=False, kld=False, rit=False)(student, teacher, samples, (16, 16)) == {}


def test_feature_mse_is_eq2_and_adapter_learns():
    s, t = torch.tensor([[[[1.0, 3.0]]]]), torch.tensor([[[[0.0, 1.0]]]])
    assert feature_mse(s, t).item() == pytest.approx((1 + 4) / 2)
    fit = FitNetLoss(weight=2.0, student_channels=3, teacher_channels=5)
    out = fit([torch.randn(2, 3, 4, 4)], [torch.randn(2, 5, 4, 4)])["loss_kd_mse"]
    out.backward()
    assert fit.adapter.weight.grad is not None


def test_no_box_image_and_odd_sizes_are_finite():
    loss = DIPKDLoss(sns=True, kld=True, rit=False)
    student = [torch.randn(2, 256, 13, 17, requires_grad=True), torch.randn(2, 256, 7, 9)]
    teacher = [torch.randn(2, 256, 13, 17), torch.randn(2, 256, 7, 9)]
    out = loss(student, teacher, [_Sample([]), _Sample([[3.0, 5.0, 40.0, 30.0]])], (52, 68))
    assert all(torch.isfinite(v) for v in out.values())
    sum(out.values()).backward()
    assert torch.isfinite(student[0].grad).all() and student[0].grad.abs().sum() > 0
