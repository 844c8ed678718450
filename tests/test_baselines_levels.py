"""Baselines as their reference code runs them (issue 12, items 3 and 9): DeFeat's one-level-per-box
GT mask and its division by the number of levels, ARSD's released scale-based mask, FGD's and
MGD's initialisation, and every baseline on a subset of FPN levels (``fpn_levels`` in the
context, as the distiller passes it). Expected values are worked out by hand in each test."""
import math

import pytest
import torch
from torch import nn

from dipkd.baselines import (ARSDLoss, DeFeatLoss, FGDLoss, FKDLoss, FRSLoss, IFKDLoss, MGDLoss,
                             TWALoss)
from dipkd.baselines.defeat import assign_levels, defeat_gt_mask
from dipkd.kd.dipkd_loss import DIPKDLoss


class _Sample:
    def __init__(self, boxes):
        b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        self.gt_instances = type("G", (), {"bboxes": b})()


def _cells(mask):
    """Set of (row, col) of the non-zero cells of an (H, W) map."""
    return {tuple(x) for x in torch.nonzero(mask).tolist()}


def _rpn_anchors():
    """mmdet's anchor generator of Faster R-CNN's RPN (strides 4..64: P2-P6)."""
    from mmdet.models.task_modules.prior_generators import AnchorGenerator
    return AnchorGenerator(strides=[4, 8, 16, 32, 64], ratios=[0.5, 1.0, 2.0], scales=[8])


class _Strides:
    """Just the strides of a five-level pyramid (P2-P6), as mmdet's generator exposes them."""
    strides = [(4, 4), (8, 8), (16, 16), (32, 32), (64, 64)]
    num_levels = 5


# ---------------------------------------------------------------------------------- DeFeat

def test_defeat_level_assignment_on_hand_made_boxes():
    # sqrt((w+1)(h+1)) / 56: < 2 -> 0, [2, 4) -> 1, [4, 8) -> 2, [8, 16) -> 3, >= 16 -> 4 (clamped)
    sides = [10, 110, 111, 222, 223, 446, 447, 894, 895, 3000]
    expected = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    boxes = torch.tensor([[5.0, 7.0, 5.0 + s, 7.0 + s] for s in sides])
    assert assign_levels(boxes, 5).tolist() == expected
    assert assign_levels(boxes, 3).tolist() == [min(e, 2) for e in expected]
    # a thin box: (w+1)(h+1) = 400 x 40 -> sqrt = 126.5 -> /56 = 2.26 -> level 1
    assert assign_levels(torch.tensor([[0.0, 0.0, 399.0, 39.0]]), 5).tolist() == [1]


def test_defeat_mask_marks_each_box_on_its_own_level_only():
    boxes = [torch.tensor([[5.0, 6.0, 13.0, 10.0],      # level 0 (side ~7): cols 1-2, row 1
                           [33.0, 33.0, 35.0, 34.0],    # level 0, empty span: single cell (8, 8)
                           [8.0, 16.0, 127.0, 127.0],   # level 1 (sqrt(120*112)/56 = 2.07)
                           [0.0, 0.0, 250.0, 250.0]])]  # level 2 (251/56 = 4.5)
    m0 = defeat_gt_mask(boxes, (64, 64), (4.0, 4.0), 0, 5)[0, 0]
    m1 = defeat_gt_mask(boxes, (32, 32), (8.0, 8.0), 1, 5)[0, 0]
    m2 = defeat_gt_mask(boxes, (16, 16), (16.0, 16.0), 2, 5)[0, 0]
    assert _cells(m0) == {(1, 1), (1, 2), (8, 8)}
    # level 1, stride 8: x 8..127 -> cols int(1) .. int(15.9)=15 excluded; y 16..127 -> rows 2..14
    assert _cells(m1) == {(r, c) for r in range(2, 15) for c in range(1, 15)}
    # level 2, stride 16: cols/rows int(0) .. int(15.6)=15 excluded -> 0..14
    assert _cells(m2) == {(r, c) for r in range(15) for c in range(15)}


def _defeat(**kw):
    kw.setdefault("always_adapt", False)       # identity adapter: values by hand
    return DeFeatLoss(weight_fg=1.0, weight_bg=1.0, student_channels=2, teacher_channels=2,
                      **kw)


def test_defeat_reads_the_fpn_levels_it_is_given():
    # fpn_levels [1, 2] of a 256x256 input: the level-1 box (stride 8) is imitated on the first
    # map, the level-2 box (stride 16) on the second; the level-0 box on neither.
    boxes = [_Sample([[5.0, 6.0, 13.0, 10.0], [8.0, 16.0, 127.0, 127.0],
                      [0.0, 0.0, 250.0, 250.0]])]
    t = [torch.zeros(1, 2, 32, 32), torch.zeros(1, 2, 16, 16)]
    t[0][0, :, 2:15, 1:15] = 1.0               # exactly the level-1 box's cells
    t[1][0, :, 0:15, 0:15] = 1.0               # exactly the level-2 box's cells
    s = [torch.zeros_like(x) for x in t]
    out = _defeat(num_levels=3)(s, t, boxes, (256, 256), prior_generator=_Strides(),
                                fpn_levels=[1, 2])
    # per level fg = C |M| / (2 C |M|) = 0.5 and bg = 0 (the teacher is zero off the boxes);
    # the sum over the two levels divided by the number of levels
    assert out["loss_defeat_fg"].item() == pytest.approx((0.5 + 0.5) / 2)
    assert out["loss_defeat_bg"].item() == pytest.approx(0.0)
    # read as levels [0, 1] the same maps no longer match the boxes
    wrong = _defeat(num_levels=2)(s, t, boxes, (256, 256), prior_generator=_Strides(),
                                  fpn_levels=[0, 1])
    assert wrong["loss_defeat_bg"].item() > 0


def test_defeat_divides_the_neck_loss_by_the_number_of_levels():
    torch.manual_seed(0)
    s, t = torch.randn(2, 2, 8, 8), torch.randn(2, 2, 8, 8)
    boxes = [_Sample([[4.0, 4.0, 20.0, 28.0]]), _Sample([])]
    one = _defeat(num_levels=1)([s], [t], boxes, (32, 32))
    # by hand: stride 32/8 = 4, box cols int(1)..int(5) excl -> 1..4, rows int(1)..int(7) excl
    # -> 1..6: 24 cells of image 0, C = 2, 128 cells in the batch
    sq = (t - s) ** 2
    m = torch.zeros(2, 1, 8, 8)
    m[0, 0, 1:7, 1:5] = 1
    fg = (sq * m).sum() / (2 * 2 * 24)
    bg = (sq * (1 - m)).sum() / (2 * 2 * (128 - 24))
    assert one["loss_defeat_fg"].item() == pytest.approx(fg.item(), rel=1e-6)
    assert one["loss_defeat_bg"].item() == pytest.approx(bg.item(), rel=1e-6)
    # three copies of that level, all of stride 4: the box (level 0) is foreground on the first
    # only; the other two are all background; the sums are divided by 3 levels
    three = _defeat(num_levels=3)([s] * 3, [t] * 3, boxes, (32, 32),
                                  prior_generator=type("P", (), {"strides": [(4, 4)] * 3,
                                                                 "num_levels": 3})())
    bg_all = sq.sum() / (2 * 2 * 128)
    assert three["loss_defeat_fg"].item() == pytest.approx(fg.item() / 3, rel=1e-6)
    assert three["loss_defeat_bg"].item() == pytest.approx((bg + 2 * bg_all).item() / 3,
                                                           rel=1e-6)


def test_defeat_adapter_is_one_3x3_conv_per_level_with_the_reference_init():
    torch.manual_seed(0)
    loss = DeFeatLoss(num_levels=4)
    assert len(loss.adapter) == 4
    for conv in loss.adapter:
        assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3)
        w = conv.weight.detach()
        # N(0, 1).fmod(2) * 1e-4: within (-2e-4, 2e-4), std 1e-4 x sqrt(E[z^2 | |z| < 2] ...)
        assert w.abs().max().item() < 2e-4
        assert 0.7e-4 < w.std().item() < 1.0e-4
        bound = 1 / math.sqrt(256 * 9)          # PyTorch's default bias init is kept
        assert conv.bias.abs().max().item() <= bound
        assert conv.bias.abs().max().item() > 0.5 * bound
    with torch.no_grad():
        loss.adapter[0].weight.fill_(1.0)
    loss.init_weights()
    assert loss.adapter[0].weight.abs().max().item() < 2e-4
    assert isinstance(DeFeatLoss(always_adapt=False, num_levels=2).adapter[0], nn.Identity)
    with pytest.raises(ValueError, match="projection"):
        DeFeatLoss(projection="nope")


def test_defeat_fgd_projection_option_uses_the_shared_masks():
    from dipkd.kd.masks import target_masks
    boxes = [_Sample([[4.0, 4.0, 12.0, 12.0]])]
    t, s = [torch.ones(1, 2, 4, 4)], [torch.zeros(1, 2, 4, 4)]
    out = _defeat(num_levels=1, projection="fgd")(s, t, boxes, (16, 16))
    tar, _ = target_masks([b.gt_instances.bboxes for b in boxes], (16, 16), (4, 4))
    n = float(tar.sum())
    assert out["loss_defeat_fg"].item() == pytest.approx(2 * n / (2 * 2 * n))


# ------------------------------------------------------------------------------------ ARSD

def _arsd(**kw):
    kw.setdefault("always_adapt", False)
    return ARSDLoss(imitation_weight=1.0, cls_weight=1.0, student_channels=2,
                    teacher_channels=2, **kw)


# 64x64 input. Box A (8x6, side 6.93): 4 + log2(6.93/64) = 0.79 -> level 0; on 16x16 cells
# rows int(1)..int(2.5)=2 excl -> row 1, cols int(1)..int(3) excl -> cols 1, 2.
# Box B (32x22, side 26.5): 4 + log2(0.41) = 2.73 -> level 2; on 4x4: row 0, cols 0, 1.
# Box C (12x12): 4 + log2(0.1875) = 1.58 -> level 1; on 8x8: row int(3)..int(4.5)=4 excl -> 3,
# col int(2)..int(3.5)=3 excl -> 2.
# Box E (1x1 at (5, 5)): level 0, int(1.25) = int(1.5) -> crosses no cell boundary: nothing.
ARSD_BOXES = [[4.0, 4.0, 12.0, 10.0], [8.0, 8.0, 40.0, 30.0], [16.0, 24.0, 28.0, 36.0],
              [5.0, 5.0, 6.0, 6.0]]
ARSD_CELLS = {0: {(1, 1), (1, 2)}, 1: {(3, 2)}, 2: {(0, 0), (0, 1)}}
SIZES = {0: 16, 1: 8, 2: 4}


@pytest.mark.parametrize("levels", [[0, 1], [1, 2], [0, 1, 2]])
def test_arsd_scale_mask_rule_by_hand(levels):
    masks, weights = _arsd().scale_masks([torch.tensor(ARSD_BOXES)],
                                         [(SIZES[lv], SIZES[lv]) for lv in levels], levels,
                                         (64, 64), num_levels=5)
    for k, lv in enumerate(levels):
        assert _cells(masks[k][0, 0]) == ARSD_CELLS[lv]
        assert torch.equal(weights[k], masks[k])          # released: binary imitation weight


def test_arsd_scale_rule_levels_clamp_to_the_pyramid():
    from dipkd.baselines.arsd import scale_levels
    # side / sqrt(H W) of a 64x64 input: 1/32 -> 4 - 5 -> 0; 1/8 -> 1; 1/4 -> 2; 1/2 -> 3; 1 -> 4
    boxes = torch.tensor([[0.0, 0.0, s, s] for s in (2.0, 8.0, 16.0, 32.0, 64.0)])
    assert scale_levels(boxes, (64, 64), 5).tolist() == [0, 1, 2, 3, 4]
    assert scale_levels(boxes, (64, 64), 3).tolist() == [0, 1, 2, 2, 2]


def test_arsd_scale_rule_losses_by_hand_with_and_without_area_weighting():
    levels = [0, 1]
    s = [torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 8, 8)]
    t = [torch.ones(1, 2, 16, 16), torch.ones(1, 2, 8, 8)]
    zs = [torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 8, 8)]
    zt = [torch.full((1, 3, 16, 16), 2.0), torch.full((1, 3, 8, 8), 2.0)]
    kw = dict(student_cls_scores=zs, teacher_cls_scores=zt, prior_generator=_rpn_anchors(),
              fpn_levels=levels)
    out = _arsd()(s, t, [_Sample(ARSD_BOXES)], (64, 64), **kw)
    n_core = 3                                     # two level-0 cells, one level-1 cell
    assert out["loss_arsd_feat"].item() == pytest.approx(2 * n_core / (2 * n_core))
    assert out["loss_arsd_cls"].item() == pytest.approx(3 * 4.0 * n_core / (2 * n_core))
    weighted = _arsd(area_weighting=True)(s, t, [_Sample(ARSD_BOXES)], (64, 64), **kw)
    w_a = 1 + math.exp(-math.sqrt(8 * 6) / (64 / 2))
    w_c = 1 + math.exp(-12 / (64 / 2))
    assert weighted["loss_arsd_feat"].item() == pytest.approx(
        2 * (2 * w_a + w_c) / (2 * n_core), rel=1e-6)
    assert weighted["loss_arsd_cls"].item() == pytest.approx(out["loss_arsd_cls"].item())
    with pytest.raises(ValueError, match="mask_rule"):
        ARSDLoss(mask_rule="nope")


def test_arsd_anchors_follow_the_fpn_levels():
    from dipkd.baselines.arsd import level_anchors
    gen = _rpn_anchors()
    full = gen.grid_priors([(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)], device="cpu")
    picked = level_anchors(gen, [(4, 4), (2, 2)], [1, 2], "cpu")
    assert torch.equal(picked[0], full[1]) and torch.equal(picked[1], full[2])


# ----------------------------------------------------------------------------- FGD / MGD init

def test_fgd_context_blocks_start_as_the_reference_reset_parameters():
    torch.manual_seed(0)
    c = 256
    loss = FGDLoss(num_levels=4, student_channels=c, teacher_channels=c)
    assert len(loss.gc_student) == len(loss.gc_teacher) == 4
    for block in list(loss.gc_student) + list(loss.gc_teacher):
        with torch.no_grad():                      # perturb, then re-initialise
            for p in block.parameters():
                p.add_(1.0)
    loss.init_weights()
    x = torch.randn(2, c, 5, 6)
    for block in list(loss.gc_student) + list(loss.gc_teacher):
        last = block.transform[-1]
        assert last.weight.abs().sum().item() == 0 and last.bias.abs().sum().item() == 0
        assert block.mask.bias.abs().sum().item() == 0
        # Kaiming-normal, fan_in = C, ReLU gain: std sqrt(2 / C)
        assert block.mask.weight.std().item() == pytest.approx(math.sqrt(2 / c), rel=0.2)
        assert torch.equal(block(x), x)            # GC(F) = F at the start
    # so the global term starts as the plain squared difference / N
    s, t = [torch.randn(1, c, 4, 4)], [torch.randn(1, c, 4, 4)]
    out = FGDLoss(lambda_=1.0, num_levels=1, student_channels=c, teacher_channels=c)(
        s, t, [_Sample([])], (16, 16))
    assert out["loss_fgd_global"].item() == pytest.approx(((t[0] - s[0]) ** 2).sum().item(),
                                                           rel=1e-5)


def test_mgd_generation_blocks_use_pytorchs_default_conv_init():
    torch.manual_seed(0)
    c = 16
    loss = MGDLoss(num_levels=4, student_channels=c, teacher_channels=c)
    assert len(loss.generation) == 4
    for block in loss.generation:
        for m in block:
            if isinstance(m, nn.Conv2d):
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)
    loss.init_weights()
    bound = 1 / math.sqrt(c * 9)     # kaiming_uniform(a=sqrt(5)): gain sqrt(1/3) x sqrt(3/fan_in)
    for block in loss.generation:
        convs = [m for m in block if isinstance(m, nn.Conv2d)]
        assert len(convs) == 2 and all(m.kernel_size == (3, 3) for m in convs)
        for m in convs:
            w = m.weight.detach()
            assert w.abs().max().item() <= bound and w.abs().max().item() > 0.95 * bound
            assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
            assert 0 < m.bias.abs().max().item() <= bound


# ------------------------------------------------------------ every baseline on levels 0-3

def _feats(n_levels, c=256, base=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    sizes = [max(1, base >> k) for k in range(n_levels)]
    s = [torch.randn(2, c, h, h, generator=g, requires_grad=True) for h in sizes]
    t = [torch.randn(2, c, h, h, generator=g) for h in sizes]
    return s, t, sizes


BASELINES = {
    "defeat": lambda n: DeFeatLoss(num_levels=n), "fgd": lambda n: FGDLoss(num_levels=n),
    "mgd": lambda n: MGDLoss(num_levels=n), "twa": lambda n: TWALoss(num_levels=n),
    "fkd": lambda n: FKDLoss(num_levels=n), "frs": lambda n: FRSLoss(num_levels=n),
    "arsd": lambda n: ARSDLoss(), "ifkd": lambda n: IFKDLoss(),
}


@pytest.mark.parametrize("method", sorted(BASELINES))
def test_every_baseline_runs_on_the_first_four_levels(method):
    """Features of P2-P5 only (``fpn_levels`` [0, 1, 2, 3] of a 128x128 Faster R-CNN input),
    the RPN's outputs of those levels and its real anchor generator of five levels."""
    torch.manual_seed(0)
    s, t, sizes = _feats(4)
    g = torch.Generator().manual_seed(1)
    a = 3                                                        # RPN anchors per cell
    zs = [torch.randn(2, a, h, h, generator=g) for h in sizes]
    zt = [torch.randn(2, a, h, h, generator=g) for h in sizes]
    ds = [0.1 * torch.randn(2, 4 * a, h, h, generator=g) for h in sizes]
    dt = [0.1 * torch.randn(2, 4 * a, h, h, generator=g) for h in sizes]
    loss = BASELINES[method](4)
    if hasattr(loss, "init_weights"):
        loss.init_weights()
    out = loss(s, t, [_Sample([[10.0, 12.0, 60.0, 50.0], [70.0, 70.0, 90.0, 80.0]]),
                      _Sample([])], (128, 128),
               student_cls_scores=zs, teacher_cls_scores=zt, student_bbox_preds=ds,
               teacher_bbox_preds=dt, prior_generator=_rpn_anchors(), fpn_levels=[0, 1, 2, 3])
    total = sum(out.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in s)


@pytest.mark.parametrize("method", ["defeat", "fgd", "mgd", "twa", "fkd", "frs"])
def test_per_level_blocks_refuse_more_levels_than_built(method):
    s, t, _ = _feats(5, c=8, base=16)
    loss = {"defeat": lambda: DeFeatLoss(num_levels=4, student_channels=8, teacher_channels=8),
            "fgd": lambda: FGDLoss(num_levels=4, student_channels=8, teacher_channels=8),
            "mgd": lambda: MGDLoss(num_levels=4, student_channels=8, teacher_channels=8),
            "twa": lambda: TWALoss(num_levels=4, student_channels=8, teacher_channels=8),
            "fkd": lambda: FKDLoss(num_levels=4, student_channels=8, teacher_channels=8),
            "frs": lambda: FRSLoss(num_levels=4, student_channels=8, teacher_channels=8)}[method]()
    z = [torch.zeros(2, 1, x.shape[-2], x.shape[-1]) for x in s]
    with pytest.raises(ValueError, match="levels"):
        loss(s, t, [_Sample([]), _Sample([])], (16, 16), student_cls_scores=z,
             teacher_cls_scores=z)


@pytest.mark.parametrize("levels, fdr_used", [([0, 1], True), ([2, 3], False)])
def test_ifkd_fdr_levels_are_fpn_indices(levels, fdr_used):
    """FDR runs on FPN levels 0-1, EDE (the generation block) on 2-4, whatever position the
    level has in the list the loss receives."""
    torch.manual_seed(0)
    s, t, sizes = _feats(2, c=256, base=8)
    z = [torch.randn(2, 3, h, h) for h in sizes]
    loss = IFKDLoss(fdr_prob=0.0)
    out = loss(s, t, [_Sample([[0.0, 0.0, 20.0, 20.0]]), _Sample([])], (32, 32),
               student_cls_scores=z, teacher_cls_scores=z, fpn_levels=levels)
    out["loss_ifkd_feat"].backward()
    weight_grad = loss.complex_weight.grad
    gen_grad = loss.generation[0].weight.grad
    assert (weight_grad is not None and weight_grad.abs().sum() > 0) == fdr_used
    assert (gen_grad is not None and gen_grad.abs().sum() > 0) == (not fdr_used)


# ------------------------------------------------------------------- params.yaml levels

REFERENCE_LEVELS = {"fitnet": [0, 1, 2, 3], "fgd": [0, 1, 2, 3], "mgd": [0, 1, 2, 3],
                    "defeat": [0, 1, 2, 3, 4], "twa": [0, 1, 2, 3], "fkd": [0, 1, 2, 3],
                    "frs": [0, 1, 2, 3, 4], "arsd": [0, 1, 2, 3, 4], "ifkd": [0, 1, 2, 3, 4]}


def test_params_give_each_baseline_its_reference_levels(params):
    from mmdet.registry import MODELS

    from dipkd import mmdet_plugins  # noqa: F401  (registries)
    from dipkd.mmdet_config import kd_loss_cfg
    for method, levels in REFERENCE_LEVELS.items():
        method_params = params["methods"][method]
        assert method_params["fpn_levels"] == levels, method
        cfg = kd_loss_cfg(method, method_params)
        loss = MODELS.build(cfg)                   # every params.yaml key is a valid argument
        for blocks in ("adapter", "gc_student", "generation", "maam", "adaptation",
                       "feat_adaptation"):
            if isinstance(getattr(loss, blocks, None), nn.ModuleList):
                assert len(getattr(loss, blocks)) == len(levels), (method, blocks)
    arsd = params["methods"]["arsd"]
    assert arsd["mask_rule"] == "scale" and arsd["area_weighting"] is False


# ------------------------------------------------------ per-level modules by FPN index

PER_LEVEL = {
    "defeat": lambda: DeFeatLoss(num_levels=4, student_channels=8, teacher_channels=8),
    "fgd": lambda: FGDLoss(num_levels=4, student_channels=8, teacher_channels=8),
    "mgd": lambda: MGDLoss(num_levels=4, student_channels=8, teacher_channels=8),
    "twa": lambda: TWALoss(num_levels=4, student_channels=8, teacher_channels=8),
    "fkd": lambda: FKDLoss(num_levels=4, student_channels=8, teacher_channels=8),
    "frs": lambda: FRSLoss(num_levels=4, student_channels=8, teacher_channels=8),
    "dipkd": lambda: DIPKDLoss(num_levels=4, student_channels=8, teacher_channels=8,
                               score_channels=3, mask_rate=1.0),
}


def _per_level_lists(loss, n):
    """Every ModuleList of ``loss`` with one entry per FPN level (``n`` entries)."""
    return {name: m for name, m in loss.named_modules()
            if isinstance(m, nn.ModuleList) and len(m) == n}


def _trained(module) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


@pytest.mark.parametrize("method", sorted(PER_LEVEL))
def test_fpn_levels_1_2_3_use_the_modules_of_levels_1_to_3(method):
    """``fpn_levels: [1, 2, 3]``: each per-level module list (adapters, generation blocks,
    context / non-local blocks, fusions, RIT's score blocks) is indexed by FPN level, so
    the modules of levels 1-3 train and level 0's is never touched."""
    torch.manual_seed(0)
    loss = PER_LEVEL[method]()
    if hasattr(loss, "init_weights"):
        loss.init_weights()
    if method == "fgd":            # FGD's zero-initialised last conv: make every layer train
        for block in (*loss.gc_student, *loss.gc_teacher):
            nn.init.normal_(block.transform[-1].weight)
    lists = _per_level_lists(loss, 4)
    assert lists, "no per-level modules found"
    g = torch.Generator().manual_seed(1)
    sizes = [16, 8, 4]                                     # FPN levels 1, 2, 3 of 64x64
    s = [torch.randn(2, 8, h, h, generator=g, requires_grad=True) for h in sizes]
    t = [torch.randn(2, 8, h, h, generator=g) for h in sizes]
    z = [torch.randn(2, 3, h, h, generator=g) for h in sizes]
    out = loss(s, t, [_Sample([[6.0, 6.0, 40.0, 30.0]]), _Sample([[0.0, 0.0, 20.0, 50.0]])],
               (64, 64), student_cls_scores=z, teacher_cls_scores=z, fpn_levels=[1, 2, 3],
               prior_generator=_Strides())
    sum(out.values()).backward()
    for name, modules in lists.items():
        assert not _trained(modules[0]), (name, "level 0 was used")
        assert all(_trained(modules[k]) for k in (1, 2, 3)), (name, "levels 1-3 not all used")


def test_the_config_builds_modules_up_to_the_last_distilled_level(params):
    """kd_loss_cfg sizes num_levels to the last distilled FPN level + 1."""
    from dipkd.mmdet_config import kd_loss_cfg
    cfg = kd_loss_cfg("fkd", dict(params["methods"]["fkd"], fpn_levels=[1, 2, 3]))
    assert cfg["num_levels"] == 4
