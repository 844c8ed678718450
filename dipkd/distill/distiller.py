"""``FeatureDistiller``: an mmdet detector that trains a student beside a frozen teacher.

- The teacher is built from its mmdet config, loaded from the teacher stage's checkpoint
  (through the safe loader), kept in eval mode, and has ``requires_grad=False``: it receives
  no gradient and its weights never change (``init_weights`` leaves it alone).
- The student's own detection losses come from ``student.loss`` unchanged; its FPN outputs
  (all levels) and its own classification maps (RetinaNet's ``bbox_head`` or Faster R-CNN's
  ``rpn_head``) are captured with forward hooks while that loss runs, so nothing is computed
  twice and no mmdet code is copied.
- The KD loss is a component built from a config dict (``kd_loss=dict(type=...)``); it gets
  ``(student_feats, teacher_feats, data_samples, batch_input_shape, student_cls_scores)``
  and returns a dict of named losses (``loss_kd_tar``, ``loss_kd_ntar``, ``loss_rit``, ...)
  that are added to the student's loss dict, so every method plugs in without changing
  this class.
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


class FeatureDistiller(BaseDetector):
    def __init__(self, student: dict, teacher: dict, kd_loss: dict,
                 teacher_ckpt: str | None = None, data_preprocessor: dict | None = None,
                 init_cfg=None):
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
        self._captured: dict = {}
        self.student.neck.register_forward_hook(self._capture("feats"))
        head = getattr(self.student, "rpn_head", None) or self.student.bbox_head
        head.register_forward_hook(self._capture("head"))

    def _capture(self, key):
        def hook(_module, _inputs, output):
            self._captured[key] = output
        return hook

    def init_weights(self) -> None:
        """Initialise the student and the KD modules; the loaded teacher is left untouched."""
        self.student.init_weights()
        if hasattr(self.kd_loss, "init_weights"):
            self.kd_loss.init_weights()

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    def extract_feat(self, batch_inputs):
        return self.student.extract_feat(batch_inputs)

    def loss(self, batch_inputs, batch_data_samples) -> dict:
        with torch.no_grad():
            teacher_feats = self.teacher.extract_feat(batch_inputs)
        self._captured.clear()
        losses = self.student.loss(batch_inputs, batch_data_samples)
        student_feats = self._captured["feats"]
        head_out = self._captured.get("head")
        cls_scores = head_out[0] if head_out is not None else None
        kd = self.kd_loss(student_feats, teacher_feats, data_samples=batch_data_samples,
                          batch_input_shape=tuple(batch_inputs.shape[-2:]),
                          student_cls_scores=cls_scores)
        clash = set(kd) & set(losses)
        if clash:
            raise KeyError(f"KD loss names clash with the detector's: {sorted(clash)}")
        losses.update(kd)
        self._captured.clear()
        return losses

    def predict(self, batch_inputs, batch_data_samples, rescale: bool = True):
        return self.student.predict(batch_inputs, batch_data_samples, rescale=rescale)

    def _forward(self, batch_inputs, batch_data_samples=None):
        return self.student._forward(batch_inputs, batch_data_samples)


def register() -> None:
    if "FeatureDistiller" not in MODELS.module_dict:
        MODELS.register_module(module=FeatureDistiller)
