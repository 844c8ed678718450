"""The KD losses' shared base (dipkd/kd/feature_kd.py): adapter, level check, per-level
pairs, GT boxes; every KD loss derives from it."""
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData
from torch import nn

from dipkd.kd.feature_kd import FeatureKDLoss
from dipkd.kd.methods import kd_methods


def test_pairs_adapt_the_student_and_detach_the_teacher():
    loss = FeatureKDLoss(2, 3, num_levels=2)
    assert isinstance(loss.adapter, nn.Conv2d)          # channels differ: a 1x1 conv
    assert isinstance(FeatureKDLoss(3, 3).adapter, nn.Identity)
    s = [torch.randn(1, 2, 4, 4, requires_grad=True) for _ in range(2)]
    t = [torch.randn(1, 3, 4, 4, requires_grad=True) for _ in range(2)]
    pairs = list(loss.level_pairs(s, t))
    assert [p[0] for p in pairs] == [0, 1]
    for level, fs, ft in pairs:
        assert torch.equal(fs, loss.adapter(s[level])) and fs.requires_grad
        assert torch.equal(ft, t[level]) and not ft.requires_grad


def test_a_per_level_adapter_list_adapts_each_level_with_its_own():
    convs = nn.ModuleList(nn.Conv2d(2, 2, 1) for _ in range(2))
    loss = FeatureKDLoss(2, 2, 2, adapter=convs)
    x = torch.randn(1, 2, 3, 3)
    assert torch.equal(loss.adapt(1, x), convs[1](x))
    assert not torch.equal(loss.adapt(0, x), convs[1](x))


def test_level_mismatches_are_one_line_errors():
    loss = FeatureKDLoss(2, 2, num_levels=1)
    f = [torch.zeros(1, 2, 2, 2)] * 2
    with pytest.raises(ValueError, match=r"FPN levels \[0, 1\] but the loss was built for num_levels=1"):
        list(loss.level_pairs(f, f))
    with pytest.raises(ValueError, match="2 student levels vs 1 teacher levels"):
        list(FeatureKDLoss().level_pairs(f, f[:1]))


def test_gt_boxes_per_image():
    sample = DetDataSample()
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    boxes = FeatureKDLoss.gt_boxes([sample, sample])
    assert len(boxes) == 2 and boxes[0].tolist() == [[1.0, 2.0, 3.0, 4.0]]


def test_every_kd_method_derives_from_the_base():
    methods = kd_methods()
    assert len(methods) >= 10
    assert all(issubclass(cls, FeatureKDLoss) for cls in methods.values()), methods
