"""The CPU RoIAlign (dipkd/models/roi_align_cpu.py) computes what mmcv's own CPU kernel does,
to the bit, forward and backward; mmcv's RoIAlign module is routed through it on the CPU."""
import os
import sys

import pytest
import torch

import mmcv.ops  # noqa: F401
from dipkd.models import roi_align_cpu

MMCV_ROI_ALIGN = sys.modules["mmcv.ops.roi_align"]


def _case(seed, n=2, c=8, h=24, w=40, k=60, scale=0.25):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    img_w, img_h = w / scale, h / scale
    x1 = torch.rand(k, generator=g) * img_w - 8          # some start left of/above the map
    y1 = torch.rand(k, generator=g) * img_h - 8
    bw = torch.rand(k, generator=g) * img_w * 0.7 + 0.3   # tiny to most of the image, some
    bh = torch.rand(k, generator=g) * img_h * 0.7 + 0.3   # past its right/bottom edge
    batch = torch.randint(0, n, (k,), generator=g).float()
    rois = torch.stack([batch, x1, y1, x1 + bw, y1 + bh], 1)
    grad = torch.randn(k, c, 7, 7, generator=g)
    return x, rois, grad, scale


def _mmcv(x, rois, grad, scale, sampling_ratio, aligned):
    x = x.clone().requires_grad_()
    out = MMCV_ROI_ALIGN.RoIAlignFunction.apply(x, rois, (7, 7), scale, sampling_ratio,
                                                "avg", aligned)
    out.backward(grad)
    return out, x.grad


def _ours(x, rois, grad, scale, sampling_ratio, aligned):
    x = x.clone().requires_grad_()
    out = roi_align_cpu.CPURoIAlignFunction.apply(x, rois, (7, 7), scale, sampling_ratio,
                                                  aligned)
    out.backward(grad)
    return out, x.grad


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("sampling_ratio,aligned", [(0, True), (2, True), (0, False)])
@pytest.mark.parametrize("shape", [dict(), dict(h=5, w=7, scale=1 / 32), dict(c=64, k=200)])
def test_forward_and_backward_equal_mmcv_to_the_bit(seed, sampling_ratio, aligned, shape):
    case = _case(seed, **shape)
    out_mmcv, grad_mmcv = _mmcv(*case, sampling_ratio, aligned)
    out_ours, grad_ours = _ours(*case, sampling_ratio, aligned)
    assert torch.equal(out_ours, out_mmcv)
    assert grad_mmcv.abs().sum() > 0
    assert torch.equal(grad_ours, grad_mmcv), (grad_ours - grad_mmcv).abs().max()


def test_mmcv_module_goes_through_it_on_the_cpu_only_where_it_applies(monkeypatch):
    roi_align_cpu.install()
    roi_align_cpu.install()                       # idempotent
    calls = []
    real = roi_align_cpu.CPURoIAlignFunction.apply
    monkeypatch.setattr(roi_align_cpu.CPURoIAlignFunction, "apply",
                        lambda *a: calls.append(1) or real(*a))
    x, rois, _, scale = _case(0)
    MMCV_ROI_ALIGN.RoIAlign((7, 7), scale, 0)(x, rois)
    assert calls == [1]
    MMCV_ROI_ALIGN.RoIAlign((7, 7), scale, 0, pool_mode="max")(x, rois)
    MMCV_ROI_ALIGN.RoIAlign((7, 7), scale, 0, use_torchvision=True)(x, rois)
    monkeypatch.setenv(roi_align_cpu.OFF_ENV, "1")
    MMCV_ROI_ALIGN.RoIAlign((7, 7), scale, 0)(x, rois)
    assert calls == [1]


def test_a_distilled_training_step_is_unchanged(params, tmp_path):
    """Two copies of a DIPKD distiller, one step each with mmcv's kernel and with ours, on
    the same batch and random state: equal weights afterwards."""
    import random

    import numpy as np
    from _helpers import build_distiller, det_samples

    roi_align_cpu.install()
    models = {}
    for name in ("mmcv", "ours"):
        torch.manual_seed(0)
        np.random.seed(0)
        random.seed(0)
        models[name] = build_distiller(params, "dipkd", "faster_rcnn", tmp_path)[0].train()
    g = torch.Generator().manual_seed(3)
    inputs = torch.rand(2, 3, 96, 128, generator=g) * 255
    for name, model in models.items():
        torch.manual_seed(1)
        samples = det_samples(96, 128, [[[10, 20, 60, 40]], [[30, 30, 90, 50]]])
        os.environ[roi_align_cpu.OFF_ENV] = "1" if name == "mmcv" else "0"
        try:
            data = model.data_preprocessor({"inputs": list(inputs.to(torch.uint8)),
                                            "data_samples": samples}, True)
            losses = model(**data, mode="loss")
            total, _ = model.parse_losses(losses)
            total.backward()
        finally:
            os.environ.pop(roi_align_cpu.OFF_ENV, None)
    grads = {name: [p.grad for p in m.parameters() if p.grad is not None]
             for name, m in models.items()}
    assert len(grads["ours"]) == len(grads["mmcv"]) > 0
    assert all(torch.equal(a, b) for a, b in zip(grads["ours"], grads["mmcv"]))


def test_a_traced_model_records_mmcv_op(monkeypatch):
    """TorchScript's tracer (the FLOP count of dipkd.efficiency) cannot record torchvision's
    Python checks; a traced RoIAlign stays mmcv's."""
    roi_align_cpu.install()
    x, rois, _, scale = _case(0)
    module = MMCV_ROI_ALIGN.RoIAlign((7, 7), scale, 0)
    traced = torch.jit.trace(lambda a, b: module(a, b), (x, rois), check_trace=False)
    assert "mmcv" in str(traced.graph) and torch.equal(traced(x, rois), module(x, rois))
