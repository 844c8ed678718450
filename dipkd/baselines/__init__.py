"""Baseline KD methods of the paper's Table 2, as KD-loss components of the distiller.

A plugin folder (:mod:`dipkd.plugins`): every module here is imported, and each is one
method: one class registered in mmdet's MODELS registry by its decorator, carrying its
name, venue, reference and deviation footnote (:class:`dipkd.kd.methods.KDMethod`). They
share the distiller's interface: ``forward(student_feats, teacher_feats, data_samples,
batch_input_shape, **context) -> dict of named losses`` (see :mod:`dipkd.distill.distiller`
for the context). A new method is one module here and one ``methods.<name>`` entry with its
``type`` in params.yaml; its class is importable from this package by its name.
"""
from ..kd.methods import KDMethod
from ..plugins import classes_defined_in, import_submodules

_METHODS = classes_defined_in(import_submodules(__name__), KDMethod)
globals().update(_METHODS)
__all__ = sorted(_METHODS)
