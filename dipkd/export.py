"""Export a trained model as a checkpoint that plain mmdet loads by itself.

mmdet's own tools find a model's config in the checkpoint, in ``meta["cfg"]`` (mmengine's
``BaseInferencer._load_model_from_metafile`` and the ``message_hub`` fallback it tries first),
or in a config file the user names. Every exported model therefore carries

- ``state_dict``: the detector's weights only (a distiller's checkpoint reduced to its
  student, :func:`dipkd.distill.distiller.student_state_dict`);
- ``meta["cfg"]``: :func:`inference_config` of the detector that the weights belong to: for
  a distilled model the student's config, not the distiller's (which would need the
  teacher's checkpoint and dipkd's registries to build);
- ``meta["train_config"]``: the exact config the run trained with (the distiller's for a
  distilled model), for provenance;
- ``meta["dataset_meta"]`` (classes), and our provenance keys (MLflow run id, fingerprint,
  role, method, ...);

and the same inference config is written beside it as ``<model>.py``, so that
``DetInferencer(model="<model>.py", weights="<model>.pth")``, ``init_detector`` and mmdet's
``tools/test.py`` work without dipkd installed.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .checkpoint import safe_load

# meta keys of mmengine's checkpoint that stay in the export
KEPT_META = ("dataset_meta", "epoch", "iter", "seed", "mmengine_version")


def inference_config(cfg):
    """A copy of an mmengine ``Config`` built by :func:`dipkd.mmdet_config.build_config`
    that needs nothing but mmdet: no ``custom_imports`` of dipkd, mmdet's ``CocoMetric``
    instead of our ``SARCocoMetric`` (same pycocotools evaluation, without the detections
    dump), the local visualiser only (no MLflow backend), no pretrained-weight download."""
    from mmengine.config import Config

    out = Config(cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg))
    out.pop("custom_imports", None)
    for key in ("val_evaluator", "test_evaluator"):
        if key in out:
            out[key] = dict(type="CocoMetric", ann_file=out[key]["ann_file"], metric="bbox")
    local = [dict(type="LocalVisBackend")]
    out.vis_backends = local
    if "visualizer" in out:
        out.visualizer.vis_backends = local
    backbone = out.model.get("backbone", {})
    if backbone.get("init_cfg") is not None:
        backbone["init_cfg"] = None
    out.load_from = None
    out.resume = False
    for key in ("work_dir", "launcher"):
        out.pop(key, None)
    return out


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def config_path(model_path: Path) -> Path:
    """``models/.../<run>.pth`` -> ``models/.../<run>.py``: the model's mmdet config file."""
    return Path(model_path).with_suffix(".py")


def export_model(checkpoint: Path, out: Path, extra_meta: dict, model_cfg,
                 train_cfg=None) -> None:
    """Write the final weights of ``checkpoint`` to ``out`` as a plain mmdet checkpoint and
    :func:`inference_config` of ``model_cfg`` (the detector the weights belong to) beside it
    (:func:`config_path`), both atomically; ``train_cfg`` (default ``model_cfg``) is kept
    as ``meta["train_config"]``."""
    from .distill.distiller import STUDENT_PREFIX, student_state_dict

    ckpt = safe_load(checkpoint)
    state = ckpt["state_dict"]
    if any(k.startswith(STUDENT_PREFIX) for k in state):
        state = student_state_dict(state)
    cfg_text = inference_config(model_cfg).pretty_text
    meta = {k: v for k, v in ckpt.get("meta", {}).items() if k in KEPT_META}
    meta.update(extra_meta)
    meta["cfg"] = cfg_text
    meta["train_config"] = (train_cfg if train_cfg is not None else model_cfg).pretty_text
    _atomic_write(config_path(out), lambda tmp: tmp.write_text(cfg_text))
    _atomic_write(Path(out), lambda tmp: torch.save({"state_dict": state, "meta": meta}, tmp))
