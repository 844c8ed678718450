"""The inherit-only control (methods.inherit_only, dipkd/baselines/inherit_only.py): no KD
term, the student's neck and heads from the teacher exactly as DIPKD's ``inherit: true``,
trained on its detection losses alone; its rows in Tables 1 and 2."""
import copy

import pytest
import torch

from _helpers import build_distiller, det_samples, total_loss
from dipkd.baselines.inherit_only import InheritOnlyLoss


def test_the_loss_is_an_empty_dict_with_no_parameters(params):
    from dipkd.kd.methods import method_class
    from dipkd.mmdet_config import kd_loss_cfg
    feats = [torch.randn(2, 256, 8, 8, requires_grad=True) for _ in range(4)]
    loss = InheritOnlyLoss()
    assert loss(feats, None) == {} and loss(feats, [f.detach() for f in feats]) == {}
    assert not list(loss.parameters())
    assert not list(InheritOnlyLoss(student_channels=128).parameters())   # no adapter conv
    entry = params["methods"]["inherit_only"]
    assert method_class("inherit_only", params) is InheritOnlyLoss
    assert entry["inherit"] is True and entry["fpn_levels"] == params["methods"]["dipkd"][
        "fpn_levels"]
    assert kd_loss_cfg("inherit_only", entry) == {"type": "InheritOnlyLoss"}


def _shared(student: dict, teacher: dict) -> list[str]:
    """Teacher tensors outside the backbone that the student has with the same shape."""
    return sorted(k for k, v in teacher.items() if not k.startswith("backbone.")
                  and k in student and student[k].shape == v.shape)


@pytest.mark.parametrize("detector", ["faster_rcnn", "retinanet"])
def test_the_student_inherits_exactly_as_dipkd_s(params, tmp_path, detector):
    """Same teacher, same seed: the inherit-only student after ``init_weights`` is DIPKD's,
    tensor for tensor, and its non-backbone tensors shared with the teacher are the
    teacher's."""
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    torch.manual_seed(0)
    model, teacher_state, _ = build_distiller(params, "inherit_only", detector, tmp_path / "a")
    torch.manual_seed(0)
    dipkd, dipkd_teacher, _ = build_distiller(params, "dipkd", detector, tmp_path / "b")
    assert all(torch.equal(v, dipkd_teacher[k]) for k, v in teacher_state.items())
    for m in (model, dipkd):     # initialise both students again from the same seed
        for module in m.student.modules():
            if hasattr(module, "_is_init"):
                module._is_init = False      # mmengine initialises a module only once
        torch.manual_seed(1)
        m.init_weights()
    student = model.student.state_dict()
    shared = _shared(student, teacher_state)
    assert model.inherit and sorted(model.inherited) == shared == sorted(dipkd.inherited)
    assert any(k.startswith("neck.fpn_convs.") for k in shared)
    assert any("head" in k for k in shared)
    for k in shared:
        assert torch.equal(student[k], teacher_state[k]), k
    lateral = "neck.lateral_convs.0.conv.weight"       # R18 vs R50 inputs: not inherited
    assert student[lateral].shape != teacher_state[lateral].shape
    theirs = dipkd.student.state_dict()
    assert student.keys() == theirs.keys()
    for k, v in student.items():
        assert torch.equal(v, theirs[k]), k


def test_it_trains_on_the_detection_losses_alone(params, tmp_path):
    from mmengine.optim import OptimWrapper

    from dipkd.kd_terms import measure, metrics
    model, teacher_state, _ = build_distiller(params, "inherit_only", "faster_rcnn", tmp_path)
    model.train()
    inputs = torch.randn(2, 3, 64, 96)
    samples = det_samples(64, 96, [[[8, 8, 40, 30]], []])

    def no_teacher(*_a, **_k):
        raise AssertionError("the teacher's features are computed but nothing reads them")
    model.teacher.extract_feat = no_teacher
    torch.manual_seed(3)
    losses = model.loss(inputs, samples)
    torch.manual_seed(3)
    own = model.student.loss(inputs, samples)            # the student's detection losses
    assert set(losses) == set(own) and not any("kd" in k for k in losses)
    assert torch.equal(total_loss(losses), total_loss(own))

    rows = measure(model, inputs, samples)               # the per-term gradient probe copes
    assert {r.kind for r in rows} == {"total", "detection"}
    assert rows[0].grad_norm > 0 and "kd_grad/detection" in metrics(rows)

    # one mmengine step: its loss parsing takes the dict with no KD entry
    before = copy.deepcopy(model.student.state_dict())
    wrapper = OptimWrapper(torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.01))
    data = {"inputs": [torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8)] * 2,
            "data_samples": samples}
    log_vars = model.train_step(data, wrapper)
    assert torch.isfinite(log_vars["loss"]) and not any("kd" in k for k in log_vars)
    after = model.student.state_dict()
    assert any(not torch.equal(after[k], before[k]) for k in after if k.startswith("neck."))
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, teacher_state[k]), k


def test_its_rows_in_tables_1_and_2(tmp_path, params):
    from test_tables import _write

    from dipkd.reports.tables import table1, table2
    params.update(datasets=["ssdd"], detectors=["faster_rcnn", "retinanet"],
                  baselines=["inherit_only", "fgd"], seeds=[0])
    # Table 1: a row only on Table 2's detector, where the baseline runs
    paths = {s.model_path.as_posix() for s in table1.runs(params)}
    assert "models/distilled/inherit_only/ssdd-faster_rcnn-seed0.pth" in paths
    assert not any("inherit_only/ssdd-retinanet" in p for p in paths)
    params["detectors"] = ["faster_rcnn"]
    values = {"teacher": 0.6, "student": 0.4, "distilled/dipkd": 0.5,
              "distilled/dipkd-inheritfalse": 0.45, "distilled/inherit_only": 0.48,
              "distilled/fgd": 0.5}
    for group, v in values.items():
        _write(tmp_path, group, "ssdd-faster_rcnn", [v] * 12,
               hits=2 if group == "student" else 3)
    rows = table1.collect(params, tmp_path / "metrics")
    row = next(r for r in rows if r.labels["Model"] == "ResNet18 + teacher init, no KD")
    assert row.seeds["mAP"] == [48.0] and row.delta["mAP"].delta > 0    # vs the student
    assert [r.labels["Model"] for r in rows][-1] == "ResNet18 + teacher init, no KD"
    params["baselines"] = ["fgd"]
    assert not any("teacher init" in r.labels["Model"]
                   for r in table1.collect(params, tmp_path / "metrics"))

    params["baselines"] = ["inherit_only", "fgd"]
    rows = table2.collect(params, tmp_path / "metrics")
    assert [(r.labels["Method"], r.labels["Ref"]) for r in rows] == [
        ("Student", ""), ("Inherit-only*", "control"), ("FGD", "CVPR22"), ("DIPKD", "AAAI25")]
    assert rows[1].seeds["SSDD mAP"] == [48.0] and rows[1].delta["SSDD mAP"].delta > 0
    table2.write_table2(rows, "head", params, out_dir=tmp_path / "out")
    md = (tmp_path / "out" / "table2.md").read_text()
    assert "\\* Inherit-only: not a KD method but the control for the inheritance" in md
