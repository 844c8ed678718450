"""KD methods found by name: the one place that says what a method is.

Every KD loss (DIPKD and FitNet in :mod:`dipkd.kd`, the baselines of Table 2 in
:mod:`dipkd.baselines`) is registered once in mmdet's ``MODELS`` registry by the decorator
on its class, and carries as class attributes (:class:`KDMethod`) its ``params.yaml`` key,
the name the tables and figures print, the venue of Table 2's "Ref" column, the work it
reproduces and, when ours differs from the published method, the footnote under Table 2.
``params.yaml``'s ``methods.<name>.type`` names the class the distiller builds (as an mmdet
config names a ``type``; without it, the class whose ``method`` is ``<name>``); a second
entry with the same ``type`` is a variant of that method.

A new KD method is one module with one decorated class, one ``methods.<name>`` entry
(with its ``type``) and its test: the config builder, Table 2, the figures and the MLflow
tags read the rest from here.
"""
from __future__ import annotations

ROLE_NAMES = {"teacher": "Teacher", "student": "Student"}


class KDMethod:
    """What every KD loss class declares (class attributes)."""

    method: str = ""          # its params.yaml key, methods.<method>
    display_name: str = ""    # in the tables and figures
    venue: str = ""           # Table 2's "Ref" column, e.g. "CVPR22"
    reference: str = ""       # the work reproduced
    footnote: str = ""        # where ours differs from the published method (Table 2)
    needs_teacher_head: bool = False   # the distiller then passes the teacher's head scores
    needs_teacher_features: bool = True   # False: the distiller skips the teacher's forward
                                          # and passes teacher_feats=None (no KD term reads it)
    control: bool = False     # a control run (inherit-only), not a KD method: ranked with none


def kd_methods() -> dict[str, type]:
    """params.yaml key -> KD loss class, over every registered KD method."""
    from .. import mmdet_plugins  # noqa: F401  (imports, hence registers, every KD loss)
    from mmdet.registry import MODELS
    return {cls.method: cls for cls in MODELS.module_dict.values()
            if isinstance(cls, type) and issubclass(cls, KDMethod) and cls.method}


def registered_types() -> list[str]:
    return sorted(cls.__name__ for cls in kd_methods().values())


def method_class(name: str, params: dict | None = None) -> type:
    """The class of KD method ``name``: the ``type`` params.yaml gives it
    (``methods.<name>.type``), else the class whose ``method`` is ``name``."""
    entry = (params or {}).get("methods", {}).get(name)
    if isinstance(entry, dict) and "type" in entry:
        from .. import mmdet_plugins  # noqa: F401
        from mmdet.registry import MODELS
        cls = MODELS.get(entry["type"]) if isinstance(entry["type"], str) else None
        if not (isinstance(cls, type) and issubclass(cls, KDMethod)):
            raise ValueError(f"params.yaml: methods.{name}.type "
                             f"{params['methods'][name]['type']!r} is not a registered KD "
                             f"loss; registered: {', '.join(registered_types())}")
        return cls
    methods = kd_methods()
    if name not in methods:
        raise ValueError(f"unknown KD method {name!r}; registered: {', '.join(methods)}")
    return methods[name]


def display_name(name: str, params: dict | None = None) -> str:
    """``Teacher``/``Student`` for the roles, the method's ``display_name`` otherwise (the
    name itself when it is neither)."""
    if name in ROLE_NAMES:
        return ROLE_NAMES[name]
    try:
        return method_class(name, params).display_name or name
    except ValueError:
        return name
