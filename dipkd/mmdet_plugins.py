"""Everything dipkd adds to mmdet/mmengine registries, imported through ``custom_imports``.

Importing this module registers the SAR COCO metric and installs the safe checkpoint loader.
"""
from .checkpoint import install as _install_safe_loader
from .evaluation.metric import register_metric

register_metric()
_install_safe_loader()
