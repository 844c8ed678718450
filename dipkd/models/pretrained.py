"""ImageNet backbone weights (``pretrained: true``): fetched before training starts.

mmengine downloads ``torchvision://resnetXX`` lazily, deep inside model initialisation, and
an offline machine fails there with a long traceback. :func:`ensure_pretrained` does the
download first (into torch's hub cache, where mmengine looks), shows progress, writes the
file atomically, and on failure raises one line that says what to do.
"""
from __future__ import annotations

import os
from pathlib import Path


class PretrainedWeightsError(RuntimeError):
    """The ImageNet weights are neither cached nor downloadable."""


def weights_url(depth: int) -> str:
    from mmengine.runner.checkpoint import get_torchvision_models
    return get_torchvision_models()[f"resnet{depth}"]


def cached_path(url: str) -> Path:
    import torch
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def ensure_pretrained(depth: int, url: str | None = None) -> Path:
    """Return the cached weights of torchvision's ResNet-``depth``, downloading them if
    needed."""
    import torch
    url = url or weights_url(depth)
    path = cached_path(url)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    print(f"[dipkd] downloading ImageNet weights for ResNet{depth}: {url}", flush=True)
    try:
        torch.hub.download_url_to_file(url, str(tmp), progress=True)
    except Exception as exc:  # URLError, HTTPError, timeouts, ...
        tmp.unlink(missing_ok=True)
        raise PretrainedWeightsError(
            f"ImageNet weights for ResNet{depth} could not be downloaded from {url} "
            f"({exc.__class__.__name__}: {str(exc)[:120]}); set pretrained: false in "
            f"params.yaml or place the file at {path}") from None
    os.replace(tmp, path)
    return path
