"""Everything dipkd adds to mmdet/mmengine registries, imported through ``custom_imports``.

Importing this module registers the SAR COCO metric, the distiller, DIPKD and the baseline KD losses, and
installs the safe checkpoint loader.
"""
from .baselines import register as _register_baselines
from .checkpoint import install as _install_safe_loader
from .distill.distiller import register as _register_distiller
from .evaluation.metric import register_metric
from .kd import register as _register_kd_losses

register_metric()
_register_distiller()
_register_kd_losses()
_register_baselines()
_install_safe_loader()
