"""``FeatureDistiller``: an mmdet detector that trains a student beside a frozen teacher.

- The teacher is built from its mmdet config, loaded from the teacher stage's checkpoint
  (through the safe loader), kept in eval mode, and has ``requires_grad=False``: it receives
  no gradient and its weights never change (``init_weights`` leaves it alone).
- The student's own detection losses come from ``student.loss`` unchanged; its FPN outputs
  (all levels) and its own classification maps (RetinaNet's ``bbox_head`` or Faster R-CNN's
  ``rpn_head``) are captured with forward hooks while that loss runs, so nothing is computed
  twice and no mmdet code is copied.
- The KD loss is a component built from a config dict (``kd_loss=dict(type=...)``); it is
  called as ``kd_loss(student_feats, teacher_feats, data_samples=..., batch_input_shape=...,
  **context)`` and returns a dict of named losses (``loss_kd_tar``, ``loss_kd_ntar``,
  ``loss_rit``, ...) that are added to the student's loss dict, so every method plugs in
  without changing this class. ``context`` holds the dense head's outputs per FPN level
  (RetinaNet's ``bbox_head``, Faster R-CNN's ``rpn_head``): ``student_cls_scores``,
  ``student_bbox_preds``, ``prior_generator`` and ``bbox_coder`` (the student head's
  anchor generator and box coder) and,
  only when the loss sets ``needs_teacher_head = True``, ``teacher_cls_scores`` and
  ``teacher_bbox_preds`` (the frozen teacher's head on the teacher's features, no grad);
  otherwise those two are ``None``. A loss takes what it needs and ignores the rest. A loss
  that sets ``needs_teacher_features = False`` (the inherit-only control, which has no KD
  term) gets ``teacher_feats=None`` and the teacher's forward pass is skipped. Its loss dict
  may be empty: the student then trains on its detection losses alone.
- ``fpn_levels`` (``methods.<m>.fpn_levels``): the FPN outputs distilled, by index (0 = the
  finest; Faster R-CNN P2..P6, RetinaNet P3..P7). The loss receives only those levels' features
  and dense-head outputs, plus ``fpn_levels`` in its context (for anchors/strides). The DIPKD
  authors hook ``neck.fpn_convs.0-3`` (Mok-kn/Dip configs/*_distill_*.py): four levels.
- ``inherit`` (``methods.<m>.inherit``): FGD's ``init_student=True`` (yzd-v/FGD
  mmdet/distillation/distillers/detection_distiller.py; the DIPKD authors' configs set it
  too): after the student's own initialisation, every teacher tensor outside the backbone whose
  name and shape the student shares (FPN output convs, RPN / RetinaNet head, RoI head) is
  copied into the student. The lateral convs differ in shape (R50 vs R18 inputs) and keep the
  student's initialisation, as mmcv's non-strict ``load_state_dict`` skips them in FGD's code.
  Done in :meth:`init_weights`, which mmengine's runner calls before training (a resumed run
  then loads its own checkpoint over it).
- Inference is the student's; :func:`student_state_dict` strips the wrapper so the exported
  checkpoint is a plain student that mmdet loads without dipkd.
"""
from __future__ import annotations

import copy

import torch
from mmengine.config import ConfigDict
from mmdet.models.detectors.base import BaseDetector
from mmdet.registry import MODELS

STUDENT_PREFIX = "student."


def student_state_dict(state_dict: dict) -> dict:
    """The student's weights of a distiller state dict, under the student's own names."""
    return type(state_dict)((k[len(STUDENT_PREFIX):], v) for k, v in state_dict.items()
                            if k.startswith(STUDENT_PREFIX))


def inherit_from_teacher(student, teacher) -> list[str]:
    """Copy every teacher tensor outside the backbone whose name and shape the student has
    (FGD's ``init_student``); returns the copied names. Tensors the two do not share in shape
    (the FPN lateral convs of R50 vs R18) keep the student's values."""
    own = student.state_dict()
    copied = []
    with torch.no_grad():
        for name, value in teacher.state_dict().items():
            if name.startswith("backbone.") or name not in own:
                continue
            if own[name].shape != value.shape:
                continue
            own[name].copy_(value)
            copied.append(name)
    return copied


def dense_head(detector):
    """The head that runs densely on the FPN levels (Faster R-CNN's RPN, RetinaNet's
    ``bbox_head``: :data:`dipkd.models.detectors.DETECTORS`)."""
    from ..models.detectors import dense_head_name
    return getattr(detector, dense_head_name(detector))


class FeatureDistiller(BaseDetector):
    def __init__(self, student: dict, teacher: dict, kd_loss: dict,
                 teacher_ckpt: str | None = None, data_preprocessor: dict | None = None,
                 fpn_levels=None, inherit: bool = False, init_cfg=None):
        student = ConfigDict(copy.deepcopy(student))  # mmdet detectors read cfg attributes
        teacher = ConfigDict(copy.deepcopy(teacher))
        preprocessor = data_preprocessor or student.get("data_preprocessor")
        super().__init__(data_preprocessor=preprocessor, init_cfg=init_cfg)
        self.student = MODELS.build(student)
        self.teacher = MODELS.build(teacher)
        if teacher_ckpt is not None:
            from mmengine.runner.checkpoint import load_checkpoint
            load_checkpoint(self.teacher, teacher_ckpt, map_location="cpu", strict=True)
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.kd_loss = MODELS.build(kd_loss)
        self.fpn_levels = None if fpn_levels is None else [int(i) for i in fpn_levels]
        if self.fpn_levels is not None and (not self.fpn_levels or len(set(self.fpn_levels))
                                            != len(self.fpn_levels)
                                            or min(self.fpn_levels) < 0):
            raise ValueError(f"fpn_levels must be distinct non-negative indices, got {fpn_levels}")
        self.inherit = bool(inherit)
        self.inherited: list[str] = []   # names copied from the teacher by init_weights
        # dipkd.kd_terms (KDTermGradHook, benchmarks/kd_terms.py): when set, loss() stores the
        # gradient norm each term of the step puts on the distilled student features
        self.grad_norm_probe = False
        self.last_term_grads = None
        self._captured: dict = {}
        self.student.neck.register_forward_hook(self._capture("feats"))
        dense_head(self.student).register_forward_hook(self._capture("head"))

    def _capture(self, key):
        def hook(_module, _inputs, output):
            self._captured[key] = output
        return hook

    def init_weights(self) -> None:
        """Initialise the student and the KD modules; the loaded teacher is left untouched."""
        self.student.init_weights()
        if hasattr(self.kd_loss, "init_weights"):
            self.kd_loss.init_weights()
        if self.inherit:
            self.inherited = inherit_from_teacher(self.student, self.teacher)

    def _levels(self, n: int) -> list[int]:
        levels = list(range(n)) if self.fpn_levels is None else self.fpn_levels
        if max(levels) >= n:
            raise ValueError(f"fpn_levels {levels}: the neck has only {n} outputs")
        return levels

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    def extract_feat(self, batch_inputs):
        return self.student.extract_feat(batch_inputs)

    def loss(self, batch_inputs, batch_data_samples) -> dict:
        teacher_head_out, teacher_feats = (None, None), None
        with torch.no_grad():
            if getattr(self.kd_loss, "needs_teacher_features", True):
                teacher_feats = self.teacher.extract_feat(batch_inputs)
            if teacher_feats is not None and getattr(self.kd_loss, "needs_teacher_head", False):
                teacher_head_out = dense_head(self.teacher)(teacher_feats)[:2]
        self._captured.clear()
        losses = self.student.loss(batch_inputs, batch_data_samples)
        levels = self._levels(len(self._captured["feats"]))
        pick = (lambda seq: None if seq is None else [seq[i] for i in levels])
        student_feats = pick(self._captured["feats"])
        head_out = self._captured.get("head") or (None, None)
        student_head = dense_head(self.student)
        kd = self.kd_loss(student_feats, pick(teacher_feats), data_samples=batch_data_samples,
                          batch_input_shape=tuple(batch_inputs.shape[-2:]),
                          student_cls_scores=pick(head_out[0]),
                          student_bbox_preds=pick(head_out[1]),
                          teacher_cls_scores=pick(teacher_head_out[0]),
                          teacher_bbox_preds=pick(teacher_head_out[1]),
                          prior_generator=student_head.prior_generator,
                          bbox_coder=student_head.bbox_coder, fpn_levels=list(levels))
        clash = set(kd) & set(losses)
        if clash:
            raise KeyError(f"KD loss names clash with the detector's: {sorted(clash)}")
        losses.update(kd)
        if self.grad_norm_probe:
            from ..kd_terms import term_grads
            self.last_term_grads = term_grads(losses, student_feats, kd)
        self._captured.clear()
        return losses

    def predict(self, batch_inputs, batch_data_samples, rescale: bool = True):
        return self.student.predict(batch_inputs, batch_data_samples, rescale=rescale)

    def _forward(self, batch_inputs, batch_data_samples=None):
        return self.student._forward(batch_inputs, batch_data_samples)


def register() -> None:
    if "FeatureDistiller" not in MODELS.module_dict:
        MODELS.register_module(module=FeatureDistiller)
