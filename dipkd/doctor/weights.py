"""The ImageNet backbone weights (``train.pretrained``): there, and loading key for key.

One check per backbone depth of ``roles`` (teacher R50, student R18). SKIP when the profile
trains from random initialisation. Otherwise the torchvision file must be in torch's hub cache
or downloadable (:func:`dipkd.models.pretrained.ensure_pretrained`, the training stage's own
step: offline it FAILs with its one line), and mmdet's ResNet built as the detectors build it
(:func:`dipkd.models.detectors.backbone_cfg`) and initialised as mmengine's runner does must
then hold exactly the file's tensors, every one of them (torchvision's ``fc`` is the only
entry left over).
"""
from __future__ import annotations

from .core import Check, CheckFailed, CheckSkipped, Context


def depths(params: dict) -> list[int]:
    """The distinct backbone depths of the roles (teacher first)."""
    found = []
    for role in ("teacher", "student"):
        depth = int(params["roles"][role]["depth"])
        if depth not in found:
            found.append(depth)
    return found


def weights_file(depth: int):
    """The cached torchvision file of ResNet-``depth``, downloaded when absent (a one-line
    :class:`CheckFailed` when that fails)."""
    from ..models.pretrained import PretrainedWeightsError, ensure_pretrained
    try:
        return ensure_pretrained(depth)
    except PretrainedWeightsError as exc:
        raise CheckFailed(str(exc)) from None


def loaded_backbone(depth: int):
    """mmdet's ResNet-``depth`` with ImageNet weights, initialised as training does."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import ConfigDict

    from ..models.detectors import backbone_cfg
    register_all_modules()
    backbone = MODELS.build(ConfigDict(backbone_cfg(depth, pretrained=True)))
    backbone.init_weights()
    return backbone


def unmatched(own: dict, file_state: dict) -> tuple[list[str], list[str], list[str]]:
    """(backbone tensors not in the file, those whose values differ, file entries beyond
    torchvision's ``fc`` that the backbone does not use)."""
    import torch
    missing = sorted(set(own) - set(file_state))
    differ = sorted(k for k in set(own) & set(file_state)
                    if not torch.equal(own[k].cpu(), file_state[k]))
    unused = sorted(set(file_state) - set(own) - {"fc.weight", "fc.bias"})
    return missing, differ, unused


def imagenet_check(depth: int) -> Check:
    """The ``ImageNet R<depth>`` check (see the module)."""
    def run(ctx: Context) -> str:
        import torch
        prof = ctx.params["profiles"][ctx.profile]["train"]
        if not prof.get("pretrained", False):
            raise CheckSkipped(f"profiles.{ctx.profile}.train.pretrained is false "
                               "(random initialisation)")
        path = weights_file(depth)
        file_state = torch.load(path, map_location="cpu", weights_only=True)
        own = loaded_backbone(depth).state_dict()
        missing, differ, unused = unmatched(own, file_state)
        if missing or differ or unused:
            raise CheckFailed(f"{path.name}: {len(missing)} backbone tensors missing from the "
                              f"file, {len(differ)} not loaded, {len(unused)} file entries "
                              f"unused; e.g. {(missing + differ + unused)[:3]}")
        return (f"{path} ({path.stat().st_size / 2**20:.1f} MiB): all {len(own)} backbone "
                f"tensors = the file's (fc unused)")
    return Check(f"ImageNet R{depth}", run, needs_device=False)


def checks(params: dict) -> list[Check]:
    return [imagenet_check(d) for d in depths(params)]
