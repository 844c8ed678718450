"""``train.cpu_bf16`` (dipkd.models.cpu_bf16): the wrapped parts compute in bfloat16 only
while the switch is on, hand float32 to everything after them, and keep float32 parameters
and gradients; a training stage with the option trains, and its final validation (the
stage's test) still equals a float32 test of the exported model to the bit."""
import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from _helpers import tiny_workspace
from dipkd.models.cpu_bf16 import Switch, to_float, wrap_parts

REPO = Path(__file__).resolve().parents[1]


class _Detector(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Conv2d(3, 4, 3, padding=1)
        self.neck = nn.Conv2d(4, 4, 1)
        self.head = nn.Conv2d(4, 1, 1)          # not a part of PARTS: stays float32

    def forward(self, x):
        return self.head(self.neck(self.backbone(x)))


def _inner_dtypes(model):
    seen = {}
    for name in ("backbone", "neck", "head"):
        getattr(model, name).register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__(name, o.dtype))
    return seen


def test_parts_compute_in_bfloat16_only_while_switched_on():
    torch.manual_seed(0)
    model, switch = _Detector(), Switch()
    seen = _inner_dtypes(model)
    reference = model(torch.randn(2, 3, 8, 8))
    assert wrap_parts(model, switch) == ["backbone", "neck"]
    assert wrap_parts(model, switch) == []                     # wrapped once only
    x = torch.randn(2, 3, 8, 8)
    off = model(x)
    assert seen == {"backbone": torch.float32, "neck": torch.float32, "head": torch.float32}
    switch.on = True
    on = model(x)
    # the forward hooks see the wrapped forward's output, cast back to float32 ...
    assert on.dtype == torch.float32 and seen["head"] == torch.float32
    # ... while inside the parts the convolutions ran in bfloat16: close, not equal
    assert not torch.equal(on, off) and torch.allclose(on, off, atol=0.05, rtol=0.05)
    on.sum().backward()
    assert all(p.dtype == torch.float32 and p.grad is not None and p.grad.dtype ==
               torch.float32 for p in model.parameters())
    assert reference.dtype == torch.float32


def test_a_distiller_gets_its_student_and_teacher_wrapped():
    class Distiller(nn.Module):
        def __init__(self):
            super().__init__()
            self.student, self.teacher = _Detector(), _Detector()
    names = wrap_parts(Distiller(), Switch())
    assert names == ["student.backbone", "student.neck", "teacher.backbone", "teacher.neck"]


def test_to_float_reaches_into_containers():
    Pair = collections.namedtuple("Pair", "a b")
    b = torch.ones(2, dtype=torch.bfloat16)
    out = to_float({"x": [b, (b, 3)], "p": Pair(b, "s"), "i": torch.ones(2, dtype=torch.int64)})
    assert out["x"][0].dtype == torch.float32 and out["x"][1][0].dtype == torch.float32
    assert isinstance(out["p"], Pair) and out["p"].a.dtype == torch.float32 and out["p"].b == "s"
    assert out["i"].dtype == torch.int64 and out["x"][1][1] == 3


@pytest.mark.slow
def test_a_stage_trains_with_it_and_tests_in_float32(tmp_path, params):
    ws = tiny_workspace(tmp_path, params, detector="faster_rcnn", epochs=2)
    written = yaml.safe_load((ws / "params.yaml").read_text())
    written["profiles"]["smoke"]["train"]["cpu_bf16"] = True
    (ws / "params.yaml").write_text(yaml.safe_dump(written))
    env = dict(os.environ, PYTHONPATH=str(REPO), DVC_ROOT=str(ws))
    run = ["--role", "student", "--dataset", "ssdd", "--detector", "faster_rcnn"]

    def stage(module):
        proc = subprocess.run([sys.executable, "-m", module, *run], cwd=ws, env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stage("pipeline.train")
    log = (ws / "runs/student/ssdd-faster_rcnn-seed0.log").read_text()
    assert "cpu_bf16: bfloat16 autocast in the training steps of backbone, neck, rpn_head, " \
           "roi_head.bbox_head" in log
    model = torch.load(ws / "models/student/ssdd-faster_rcnn-seed0.pth", map_location="cpu",
                       weights_only=False)
    assert "DipkdCpuBf16Hook" in model["meta"]["cfg"]
    assert all(v.dtype != torch.bfloat16 for v in model["state_dict"].values())
    metrics = ws / "metrics/student/ssdd-faster_rcnn-seed0.json"
    detections = ws / "detections/student/ssdd-faster_rcnn-seed0.json"
    from_validation = metrics.read_bytes(), detections.read_bytes()
    assert json.loads(from_validation[1])
    stage("pipeline.evaluate")                  # a fresh float32 test of the exported model
    assert (metrics.read_bytes(), detections.read_bytes()) == from_validation


@pytest.mark.slow
def test_the_benchmark_script_times_the_three_copies():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import cpu_bf16_step
    from step_profile import scratch_workspace

    from dipkd.config.params import load_params
    params = load_params(str(REPO / "params.yaml"))
    params["profile"] = "smoke"
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        with scratch_workspace(params, "smoke"):
            result = cpu_bf16_step.compare(params, "student", 2)
    finally:
        torch.use_deterministic_algorithms(deterministic)
    assert set(result) == {*cpu_bf16_step.COPIES, "drift"}
    assert all(result[name] > 0 for name in cpu_bf16_step.COPIES)
    assert 0 < result["drift"] < 1        # the losses part, but stay of the same size
