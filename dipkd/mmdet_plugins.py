"""Everything dipkd adds to mmdet/mmengine registries, imported through ``custom_imports``.

Importing this module registers the SAR COCO metric, the distiller, DIPKD and the baseline KD
losses, the per-term gradient-norm hook (``KDTermGradHook``), the hook that keeps the final
validation as the test (``FinalValidationHook``), and installs the faster, bit-identical CPU
RoIAlign (:mod:`dipkd.models.roi_align_cpu`), the safe checkpoint
loader and the memo of mmengine's config formatting (:mod:`dipkd.config_text`).
"""
from . import baselines as _baselines  # noqa: F401  (the KD losses register on import)
from . import kd as _kd  # noqa: F401
from .checkpoint import install as _install_safe_loader
from .config_text import install as _install_config_text_memo
from .distill.distiller import register as _register_distiller
from .evaluation.final_validation import register as _register_final_validation
from .evaluation.metric import register_metric
from .kd_terms import register as _register_kd_term_hook
from .models.roi_align_cpu import install as _install_cpu_roi_align
from .progress import register as _register_progress_hook
from . import rng_state as _rng_state  # noqa: F401  (its hooks register on import)
from .models import cpu_bf16 as _cpu_bf16  # noqa: F401  (its hook registers on import)

register_metric()
_register_distiller()
_register_kd_term_hook()
_register_progress_hook()
_register_final_validation()
_install_safe_loader()
_install_cpu_roi_align()
_install_config_text_memo()
