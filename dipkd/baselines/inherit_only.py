"""Inherit-only: the control for what a KD loss adds over the teacher's initialisation.

Not a KD method: the student's neck and heads are initialised from the teacher exactly as
DIPKD's ``inherit: true`` does (the distiller's ``inherit``, FGD's ``init_student``:
:func:`dipkd.distill.distiller.inherit_from_teacher`, set by ``methods.inherit_only.inherit``)
and the student is then trained on its own detection losses alone: this loss returns no term,
so the distiller's loss dict is the student's (``mmengine``'s ``parse_losses`` sums it as it
would a plain student's; :mod:`dipkd.kd_terms` measures the detection terms only).

Asked for by issue 26 (the CPU study inferred "most of the gain is the inheritance" from
DIPKD with and without it; nothing measured inheritance without a KD loss). It declares
``needs_teacher_features = False``: the distiller then skips the teacher's forward pass,
whose output nothing would read (the teacher holds no randomness in eval mode, so the run is
the same, only cheaper). No parameters of its own (the adapter is the identity whatever the
channel counts): nothing in the optimizer goes without a gradient.
"""
from __future__ import annotations

from mmdet.registry import MODELS
from torch import nn

from ..kd.feature_kd import FeatureKDLoss


@MODELS.register_module()
class InheritOnlyLoss(FeatureKDLoss):
    method = "inherit_only"
    display_name = "Inherit-only"
    venue = "control"
    reference = ("no KD loss: the student's neck and heads initialised from the teacher as "
                 "DIPKD's inherit: true (FGD's init_student), then detection losses alone")
    footnote = ("not a KD method but the control for the inheritance: the student's neck and "
                "heads copied from the teacher as DIPKD's `inherit: true` does, then trained "
                "on its detection losses alone (no KD loss)")
    needs_teacher_features = False
    control = True

    def __init__(self, student_channels: int = 256, teacher_channels: int = 256):
        super().__init__(student_channels, teacher_channels, adapter=nn.Identity())

    def forward(self, student_feats, teacher_feats=None, data_samples=None,
                batch_input_shape=None, **_context) -> dict:
        """No KD term: an empty loss dict, whatever the features."""
        return {}
