"""What each loss term of a distillation step does: the L2 norm of the gradient it puts on
the student's distilled FPN features, next to the summed detection losses'.

For a loss dict of a :class:`~dipkd.distill.distiller.FeatureDistiller` step (the student's
detection losses ``loss_cls``, ``loss_bbox``, ``loss_rpn_cls``, ... plus the KD loss's
``loss_kd_*``, ``loss_rit``, ``loss_fgd_*``, ...), every term ``t`` gets
``||d t / d F||_2`` over all distilled levels ``F = [F_l]`` (the features the KD loss reads,
``fpn_levels``), computed with ``torch.autograd.grad(t, F, retain_graph=True)`` (0 when ``t``
does not reach ``F``), and its ratio to the same norm of the summed detection losses (every
``loss*`` entry that the KD loss did not return; list-valued entries such as
``loss_rpn_cls`` are summed, as mmengine's ``parse_losses`` does). A term whose ratio is
below :data:`INERT_RATIO` is flagged ``inert``: next to the detection gradient it cannot move
the student.

- :func:`term_grads` does this for a loss dict and the features;
- :func:`measure` runs one ``model.loss`` of a built distiller on a batch with the
  distiller's ``grad_norm_probe`` on (the distiller then calls :func:`term_grads` on the
  step's own losses, before anything is backpropagated) and returns the rows;
- :class:`KDTermGradHook` (registered in mmengine's ``HOOKS``; the distillation config of
  :func:`dipkd.mmdet_config.build_distill_config` adds it) switches the probe on at
  every logging iteration of a training run and logs ``kd_grad/<term>`` (the norm) and
  ``kd_grad_ratio/<term>`` (the ratio) through the runner's visualizer, so the MLflow backend
  records them as metrics at the same step as the losses.

``benchmarks/kd_terms.py`` writes ``reports/kd_terms.md`` with these numbers for every method.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

INERT_RATIO = 1e-3
DETECTION = "detection"   # the row of the summed detection losses
METRIC_PREFIX = "kd_grad"
RATIO_PREFIX = "kd_grad_ratio"


@dataclass(frozen=True)
class TermGrad:
    """One loss term of a step: ``kind`` is ``total`` (the summed detection losses, the
    reference), ``detection`` (one of the student's own losses) or ``kd`` (a KD term)."""

    name: str
    kind: str
    value: float
    grad_norm: float
    ratio: float

    @property
    def inert(self) -> bool:
        return self.ratio < INERT_RATIO


def summed(value) -> torch.Tensor:
    """A loss entry as one scalar: a tensor summed, a list of tensors summed together."""
    if isinstance(value, torch.Tensor):
        return value.sum()
    return sum(v.sum() for v in value)


def grad_norm(term, feats) -> float:
    """``||d term / d feats||_2`` over all tensors of ``feats`` (0 when ``term`` does not
    depend on them). The graph is kept, so the step can still be backpropagated."""
    if not isinstance(term, torch.Tensor) or not term.requires_grad:
        return 0.0
    feats = [f for f in feats if f.requires_grad]
    if not feats:
        return 0.0
    grads = torch.autograd.grad(term, feats, retain_graph=True, allow_unused=True)
    return math.sqrt(sum(float(g.detach().double().pow(2).sum()) for g in grads
                         if g is not None))


def _ratio(norm: float, ref: float) -> float:
    if ref > 0:
        return norm / ref
    return math.inf if norm > 0 else 0.0


def term_grads(losses: dict, feats, kd_keys) -> list[TermGrad]:
    """Rows for the summed detection losses first, then every ``loss*`` entry of ``losses``
    in its order. ``kd_keys``: the entries the KD loss returned; the others are the
    student's detection losses."""
    kd_keys = set(kd_keys)
    terms = {k: summed(v) for k, v in losses.items() if "loss" in k}
    det = [terms[k] for k in terms if k not in kd_keys]
    det_total = sum(det) if det else torch.zeros(())
    ref = grad_norm(det_total, feats)
    rows = [TermGrad(DETECTION, "total", float(det_total.detach()), ref, _ratio(ref, ref))]
    for name, term in terms.items():
        norm = grad_norm(term, feats)
        rows.append(TermGrad(name, "kd" if name in kd_keys else "detection",
                             float(term.detach()), norm, _ratio(norm, ref)))
    return rows


def measure(model, inputs, data_samples) -> list[TermGrad]:
    """:func:`term_grads` of one ``model.loss(inputs, data_samples)`` of a
    ``FeatureDistiller`` (inputs already through its data preprocessor)."""
    previous = model.grad_norm_probe
    model.grad_norm_probe = True
    try:
        model.loss(inputs, data_samples)
    finally:
        model.grad_norm_probe = previous
    rows, model.last_term_grads = model.last_term_grads, None
    return rows


def metrics(rows) -> dict:
    """The MLflow metrics of a step's rows: ``kd_grad/<term>`` (the gradient norm) for every
    row and ``kd_grad_ratio/<term>`` (the ratio to the detection losses') for every term with
    a finite ratio (the reference row itself has none)."""
    out = {f"{METRIC_PREFIX}/{r.name}": r.grad_norm for r in rows}
    out.update({f"{RATIO_PREFIX}/{r.name}": r.ratio for r in rows
                if r.kind != "total" and math.isfinite(r.ratio)})
    return out


class KDTermGradHook(Hook):
    """Every ``interval`` iterations (the logger's rule: ``(batch_idx + 1) % interval == 0``)
    of a distillation run, the distiller computes :func:`term_grads` from that step's own
    losses (``grad_norm_probe``) and this hook logs them through the runner's visualizer at
    the logger's step (``runner.iter + 1``): ``kd_grad/<term>`` and ``kd_grad_ratio/<term>``.
    Other models are left alone."""

    priority = "NORMAL"

    def __init__(self, interval: int = 50):
        self.interval = int(interval)

    @staticmethod
    def _distiller(runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        return model if hasattr(model, "grad_norm_probe") else None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        model = self._distiller(runner)
        if model is not None:
            model.last_term_grads = None
            model.grad_norm_probe = self.every_n_inner_iters(batch_idx, self.interval)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        model = self._distiller(runner)
        if model is None or not model.grad_norm_probe:
            return
        model.grad_norm_probe = False
        rows, model.last_term_grads = model.last_term_grads, None
        if rows:
            runner.visualizer.add_scalars(metrics(rows), step=runner.iter + 1)


def register() -> None:
    """Register :class:`KDTermGradHook` in mmengine's ``HOOKS`` (mmdet's registry finds it
    through its parent)."""
    from mmengine.registry import HOOKS
    if "KDTermGradHook" not in HOOKS.module_dict:
        HOOKS.register_module(module=KDTermGradHook)
