"""Per-term gradient norms (dipkd/kd_terms.py): the norms against analytic values, the inert
flag, the distiller's probe, the training hook's metrics, and benchmarks/kd_terms.py's report."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from _helpers import build_distiller, det_samples, load_script, tiny_workspace
from dipkd.kd_terms import INERT_RATIO, KDTermGradHook, TermGrad, measure, metrics, term_grads

REPO = Path(__file__).resolve().parents[1]


def _feats():
    torch.manual_seed(0)
    return [torch.randn(2, 3, 4, 5, requires_grad=True), torch.randn(2, 3, 2, 3,
                                                                       requires_grad=True)]


def test_norms_match_the_analytic_gradients():
    f0, f1 = feats = _feats()
    a, b, c = 0.7, 3e-4, 0.05
    outside = torch.ones(3, requires_grad=True)   # a term that never reaches the features
    losses = {"loss_cls": a * (f0 ** 2).sum(),                     # d/df0 = 2a f0
              "loss_rpn_cls": [c * f0.sum(), c * f0.sum()],        # a list: summed, 2c
              "acc": torch.tensor(90.0),                           # not a loss
              "loss_kd_x": b * (f1 ** 2).sum(),                    # KD: d/df1 = 2b f1
              "loss_kd_off": (outside ** 2).sum(),                 # unused: 0
              "loss_kd_const": torch.tensor(1.5)}                  # no graph: 0
    rows = term_grads(losses, feats, kd_keys={"loss_kd_x", "loss_kd_off", "loss_kd_const"})
    by = {r.name: r for r in rows}
    assert [r.name for r in rows] == ["detection", "loss_cls", "loss_rpn_cls", "loss_kd_x",
                                      "loss_kd_off", "loss_kd_const"]
    with torch.no_grad():
        det_ref = float((2 * a * f0 + 2 * c).norm())   # loss_cls + loss_rpn_cls, on f0 only
        assert by["loss_cls"].grad_norm == pytest.approx(2 * a * float(f0.norm()), rel=1e-6)
        assert by["loss_rpn_cls"].grad_norm == pytest.approx(2 * c * math.sqrt(f0.numel()),
                                                             rel=1e-6)
        assert by["loss_rpn_cls"].value == pytest.approx(2 * c * float(f0.sum()), rel=1e-6)
        assert by["loss_kd_x"].grad_norm == pytest.approx(2 * b * float(f1.norm()), rel=1e-6)
    assert by["detection"].grad_norm == pytest.approx(det_ref, rel=1e-6)
    assert by["detection"].kind == "total" and by["detection"].ratio == 1.0
    assert by["loss_cls"].kind == "detection" and by["loss_kd_x"].kind == "kd"
    assert by["loss_kd_x"].ratio == pytest.approx(by["loss_kd_x"].grad_norm / det_ref)
    assert by["loss_kd_off"].grad_norm == 0 and by["loss_kd_const"].grad_norm == 0
    assert by["loss_kd_const"].value == 1.5
    # the graph is kept: the step can still be backpropagated
    sum(v if isinstance(v, torch.Tensor) else sum(v) for k, v in losses.items()
        if k.startswith("loss")).backward()
    assert f0.grad is not None and f1.grad is not None


def test_inert_below_one_in_a_thousand():
    assert TermGrad("t", "kd", 1.0, 1.0, INERT_RATIO * 0.99).inert
    assert not TermGrad("t", "kd", 1.0, 1.0, INERT_RATIO).inert
    f0, f1 = feats = _feats()
    base = {"loss_bbox": (f0 ** 2).sum()}   # grad norm 2 ||f0||
    scale = float(f0.detach().norm() / f1.detach().norm())
    for factor, inert in ((0.5e-3, True), (2e-3, False)):
        losses = dict(base, loss_rit=factor * scale * (f1 ** 2).sum())   # ratio = factor
        rit = term_grads(losses, feats, {"loss_rit"})[-1]
        assert rit.ratio == pytest.approx(factor, rel=1e-5) and rit.inert is inert
    m = metrics(term_grads(dict(base, loss_rit=(f1 ** 2).sum()), feats, {"loss_rit"}))
    assert set(m) == {"kd_grad/detection", "kd_grad/loss_bbox", "kd_grad/loss_rit",
                      "kd_grad_ratio/loss_bbox", "kd_grad_ratio/loss_rit"}


@pytest.fixture(scope="module")
def distiller(tmp_path_factory):
    """One DIPKD RetinaNet distiller for the tests of this module (building one takes ~15 s)."""
    import yaml
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    return build_distiller(params, "dipkd", "retinanet", tmp_path_factory.mktemp("t"))[0].train()


def _batch():
    return torch.randn(2, 3, 64, 96), det_samples(64, 96, [[[8, 8, 40, 30]], [[50, 20, 70, 44]]])


def test_probe_measures_the_steps_own_losses(distiller):
    model = distiller
    inputs, samples = _batch()
    torch.manual_seed(1)
    rows = measure(model, inputs, samples)
    assert not model.grad_norm_probe and model.last_term_grads is None
    kinds = {r.name: r.kind for r in rows}
    assert kinds["detection"] == "total"
    assert kinds["loss_cls"] == kinds["loss_bbox"] == "detection"
    assert {k for k, v in kinds.items() if v == "kd"} == {"loss_kd_tar", "loss_kd_ntar",
                                                           "loss_rit"}
    # independently: the same step (same seed) with the distilled features the KD loss reads
    seen = {}
    real_forward = model.kd_loss.forward

    def spy(student_feats, *args, **kwargs):
        seen["feats"] = student_feats
        return real_forward(student_feats, *args, **kwargs)

    model.kd_loss.forward = spy
    torch.manual_seed(1)
    losses = model.loss(inputs, samples)
    feats = seen["feats"]
    assert len(feats) == len(model.fpn_levels)
    for r in rows[1:]:
        term = losses[r.name]
        term = term.sum() if isinstance(term, torch.Tensor) else sum(t.sum() for t in term)
        grads = torch.autograd.grad(term, feats, retain_graph=True, allow_unused=True)
        ref = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads if g is not None))
        assert r.grad_norm == pytest.approx(ref, rel=1e-5, abs=1e-12), r.name
        assert r.value == pytest.approx(float(term), rel=1e-5), r.name
    assert rows[0].grad_norm > 0


def test_the_probe_changes_no_gradient_of_the_step(distiller):
    """Why ``kd_probe: false`` (the smoke profile) changes no trained number: a step's losses
    and parameter gradients are the same to the bit with the probe on and off."""
    model = distiller
    inputs, samples = _batch()
    results = []
    for probe in (True, False):
        model.zero_grad(set_to_none=True)
        model.grad_norm_probe = probe
        torch.manual_seed(1)
        losses = model.loss(inputs, samples)
        model.grad_norm_probe = False
        assert (model.last_term_grads is not None) is probe
        model.last_term_grads = None
        total, _ = model.parse_losses(losses)
        total.backward()
        results.append((float(total), {n: p.grad.clone() for n, p in model.named_parameters()
                                       if p.grad is not None}))
    (with_probe, grads_on), (without, grads_off) = results
    assert with_probe == without and grads_on.keys() == grads_off.keys() and grads_on
    assert all(torch.equal(grads_on[n], grads_off[n]) for n in grads_on)
    model.zero_grad(set_to_none=True)


class _Visualizer:
    def __init__(self):
        self.calls = []

    def add_scalars(self, scalars, step=0, **kwargs):
        self.calls.append((dict(scalars), step))


def test_hook_logs_every_term_at_log_intervals(distiller):
    from mmengine.registry import HOOKS as ENGINE_HOOKS
    from mmdet.registry import HOOKS
    hook = HOOKS.build(dict(type="KDTermGradHook", interval=2))   # found through mmdet's scope
    assert isinstance(hook, KDTermGradHook) and "KDTermGradHook" in ENGINE_HOOKS.module_dict
    runner = SimpleNamespace(model=distiller, visualizer=_Visualizer(), iter=0)
    inputs, samples = _batch()
    for batch_idx in range(3):
        runner.iter = 10 + batch_idx
        hook.before_train_iter(runner, batch_idx)
        assert distiller.grad_norm_probe is (batch_idx % 2 == 1)
        distiller.loss(inputs, samples)
        hook.after_train_iter(runner, batch_idx)
        assert not distiller.grad_norm_probe and distiller.last_term_grads is None
    assert [step for _, step in runner.visualizer.calls] == [12]   # the logger's step
    scalars = runner.visualizer.calls[0][0]
    assert {"kd_grad/detection", "kd_grad/loss_kd_tar", "kd_grad/loss_kd_ntar",
            "kd_grad/loss_rit", "kd_grad/loss_cls", "kd_grad_ratio/loss_rit"} <= set(scalars)
    assert all(math.isfinite(v) and v >= 0 for v in scalars.values())
    # a plain detector (no probe) is left alone
    plain = SimpleNamespace(model=distiller.student, visualizer=_Visualizer(), iter=1)
    hook.before_train_iter(plain, 1)
    hook.after_train_iter(plain, 1)
    assert not plain.visualizer.calls


def test_distill_config_adds_the_hook_at_the_probe_interval(params, tmp_path):
    from dipkd.mmdet_config import build_distill_config
    from dipkd.config.params import distill_spec, run_spec
    def build():
        return build_distill_config(distill_spec(params, "fitnet", "ssdd", "retinanet"),
                                    run_spec(params, "teacher", "ssdd", "retinanet"),
                                    tmp_path / "teacher.pth")
    train = params["profiles"][params["profile"]]["train"]
    assert params["profile"] == "smoke" and train["kd_probe"] is False   # its numbers are 0
    assert not [h for h in build().get("custom_hooks", []) if h["type"] == "KDTermGradHook"]
    train["kd_probe"] = True
    assert build().custom_hooks == [dict(type="KDTermGradHook", interval=train["log_interval"])]
    train["kd_probe_interval"] = 40  # once an epoch
    cfg = build_distill_config(distill_spec(params, "fitnet", "ssdd", "retinanet"),
                               run_spec(params, "teacher", "ssdd", "retinanet"),
                               tmp_path / "teacher.pth")
    assert cfg.custom_hooks == [dict(type="KDTermGradHook", interval=40)]


def _script():
    return load_script("benchmarks/kd_terms.py")


def test_report_format():
    script = _script()
    rows = [TermGrad("detection", "total", 2.5, 4.0, 1.0),
            TermGrad("loss_cls", "detection", 1.5, 3.0, 0.75),
            TermGrad("loss_kd_tar", "kd", 0.02, 0.4, 0.1),
            TermGrad("loss_rit", "kd", 1e-9, 4e-8, 1e-8)]
    measured = dict(seed=0, profile="paper", dataset="ssdd",
                    teachers={"retinanet": "randomly initialised R50"},
                    settings={"retinanet": dict(width=512, height=512, input=(512, 512),
                                                boxes=[2, 3],
                                                sides=torch.tensor([[12.0, 30.0]]),
                                                model={})},
                    results=[dict(detector="retinanet", method="dipkd", rows=rows,
                                  levels=[0, 1, 2, 3], inherit=True)])
    text = script.report(measured, machine_line="MACHINE")
    assert text.startswith("# What each loss term does, measured\n\nRun: MACHINE; seed 0.")
    assert "## RetinaNet R50 -> R18, 512x512" in text
    assert "Teacher: randomly initialised R50. Input 512x512 after padding, batch 2, 2 + 3 " \
           "ships (box sides 12-30 px" in text
    assert "| dipkd | 0,1,2,3 | yes | detection (sum) | 2.5 | 4 | 1 | |" in text
    assert "| | | | `loss_kd_tar` (KD) | 0.02 | 0.4 | 0.1 | |" in text
    assert "| | | | `loss_rit` (KD) | 1.00e-09 | 4.00e-08 | 1.00e-08 | inert |" in text
    assert "- RetinaNet, dipkd: `loss_rit` (ratio 1.00e-08)" in text
    line = script.machine()
    assert f"torch {torch.__version__}" in line and "cores" in line and "git " in line
    assert script.parse_method("dipkd:rit_form=paper,tau=1") == ("dipkd", {"rit_form": "paper",
                                                                           "tau": "1"})
    assert script.method_label("dipkd", {"rit_form": "paper"}) == "dipkd (rit_form=paper)"


@pytest.mark.slow
def test_script_on_a_tiny_batch(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "kd_terms.md"
    _script().main(["--out", str(out), "--methods", "fitnet", "dipkd:rit_form=paper",
                    "--detectors", "retinanet", "--profile", "smoke", "--scale", "128", "96"])
    text = out.read_text()
    assert "## RetinaNet R50 -> R18, 128x96" in text
    assert re.search(r"^\| fitnet \| [0-9,]+ \| (yes|no) \| detection \(sum\) \| ", text, re.M)
    assert "| dipkd (rit_form=paper) | 0,1,2,3 | yes | detection (sum) |" in text
    assert "`loss_cls` |" in text and "`loss_bbox` |" in text   # the detection terms too
    assert "`loss_kd_mse` (KD)" in text and "`loss_rit` (KD)" in text
    assert "## Inert KD terms (ratio < 0.001)" in text


@pytest.mark.slow
def test_distillation_run_logs_kd_grad_metrics_to_mlflow(tmp_path, params):
    """A real (tiny) distillation run: every term's gradient norm is an MLflow metric per
    logging step."""
    params["profiles"]["smoke"]["train"]["kd_probe"] = True   # off in the smoke profile
    ws = tiny_workspace(tmp_path, params, detector="retinanet", epochs=1)
    # the teacher stage's output: a randomly initialised R50 (training one adds minutes)
    _, teacher_state, _ = build_distiller(params, "fitnet", "retinanet", tmp_path)
    (ws / "models/teacher").mkdir(parents=True)
    torch.save({"state_dict": teacher_state, "meta": {}},
               ws / "models/teacher/ssdd-retinanet-seed0.pth")
    env = dict(os.environ, PYTHONPATH=str(REPO), DVC_ROOT=str(ws))
    proc = subprocess.run([sys.executable, "-m", "pipeline.train", "--role", "distilled",
                           "--method", "fitnet", "--dataset", "ssdd", "--detector", "retinanet"],
                          cwd=ws, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import mlflow
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dipkd-repro/smoke")
    run = next(r for r in client.search_runs([exp.experiment_id])
               if r.data.tags.get("role") == "distilled")
    history = client.get_metric_history(run.info.run_id, "kd_grad/loss_kd_mse")
    assert len(history) >= 2 and all(m.value > 0 for m in history)   # log_interval 1
    assert "kd_grad/detection" in run.data.metrics
    assert "kd_grad_ratio/loss_kd_mse" in run.data.metrics
    curves = json.loads((ws / "plots/distilled/fitnet/ssdd-retinanet-seed0.json").read_text())
    assert curves and curves[0]["loss"] > 0   # the extra scalars leave the curves alone
