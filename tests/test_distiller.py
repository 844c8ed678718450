"""FeatureDistiller: frozen teacher, student gradients, named KD losses, plain export."""
import copy

import pytest
import torch

from _helpers import backward_reaches_student_only, build_distiller, det_samples
from dipkd.distill.distiller import student_state_dict


@pytest.fixture(params=["faster_rcnn", "retinanet"])
def distiller(request, params, tmp_path):
    return build_distiller(params, "dipkd", request.param, tmp_path)


def test_teacher_loaded_frozen_and_unchanged(distiller):
    model, teacher_state, _ = distiller
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, teacher_state[k]), k   # loaded, not re-initialised
    model.train()
    assert not model.teacher.training and model.student.training
    inputs = torch.randn(2, 3, 96, 128)
    samples = det_samples(96, 128, [[[10, 20, 40, 50]], []])   # second image: no ship
    before = copy.deepcopy(model.teacher.state_dict())
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        losses = model.loss(inputs, samples)
        assert {"loss_kd_tar", "loss_kd_ntar", "loss_rit"} <= set(losses)
        backward_reaches_student_only(model, losses)
        assert model.kd_loss.rit.blocks[0][0].weight.grad is not None   # authors' RIT block
        opt.step()
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_kd_losses_reach_the_student_features(distiller):
    model, _, _ = distiller
    model.train()
    losses = model.loss(torch.randn(1, 3, 64, 96), det_samples(64, 96, [[[8, 8, 40, 30]]]))
    kd = losses["loss_kd_tar"] + losses["loss_kd_ntar"] + losses["loss_rit"]
    grads = torch.autograd.grad(kd, list(model.student.neck.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_student_export_loads_in_plain_mmdet(distiller):
    from mmdet.registry import MODELS
    model, _, cfg = distiller
    student = MODELS.build(cfg.model["student"])
    result = student.load_state_dict(student_state_dict(model.state_dict()), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    model.eval()
    out = model.predict(torch.randn(1, 3, 64, 96), det_samples(64, 96, [[]]))
    assert "bboxes" in out[0].pred_instances
