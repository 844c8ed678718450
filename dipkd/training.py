"""Train one detector (teacher or student) with mmengine's Runner, tracked in MLflow.

A training stage is resumable: its work dir keeps mmengine's epoch checkpoints, and running
the stage again after a kill resumes from ``last_checkpoint``. The work dir is stamped with a
fingerprint of the config and the data; a stale work dir (other params or data) is cleared
rather than resumed. The result is a plain mmdet checkpoint (``state_dict`` + ``meta``) that
mmdet can load without dipkd, written atomically to ``spec.model_path``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from .checkpoint import safe_load
from .config.mmdet_config import build_config
from .config.params import RunSpec
from .datasets.coco_layout import validate_layout
from .models.pretrained import ensure_pretrained

FINGERPRINT = "fingerprint.json"
RUN_FILE = "mlflow_run.json"


def data_fingerprint(root: Path) -> str:
    h = hashlib.sha256()
    for split in ("train", "test"):
        h.update((root / "annotations" / f"{split}.json").read_bytes())
    return h.hexdigest()


def config_fingerprint(cfg, data_root: Path) -> str:
    text = cfg.pretty_text + data_fingerprint(data_root)
    return hashlib.sha256(text.encode()).hexdigest()


def prepare_work_dir(work_dir: Path, fingerprint: str) -> bool:
    """Make ``work_dir`` ready; return True when it holds a checkpoint to resume from."""
    stamp = work_dir / FINGERPRINT
    if work_dir.exists():
        old = json.loads(stamp.read_text()).get("fingerprint") if stamp.exists() else None
        if old != fingerprint:
            print(f"[dipkd] {work_dir}: config or data changed since the last run; "
                  "starting from scratch", flush=True)
            shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"fingerprint": fingerprint}))
    return (work_dir / "last_checkpoint").exists()


def export_model(checkpoint: Path, out: Path, extra_meta: dict) -> None:
    """Write the final weights as a plain mmdet checkpoint, atomically. A distiller's
    checkpoint is reduced to its student, so mmdet loads it without dipkd."""
    from .distill.distiller import STUDENT_PREFIX, student_state_dict
    ckpt = safe_load(checkpoint)
    state = ckpt["state_dict"]
    if any(k.startswith(STUDENT_PREFIX) for k in state):
        state = student_state_dict(state)
    meta = {k: v for k, v in ckpt.get("meta", {}).items()
            if k in ("dataset_meta", "epoch", "iter", "seed", "mmengine_version")}
    meta.update(extra_meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save({"state_dict": state, "meta": meta}, tmp)
    os.replace(tmp, out)


def latest_checkpoint(work_dir: Path) -> Path:
    pointer = work_dir / "last_checkpoint"
    if not pointer.exists():
        raise FileNotFoundError(f"{pointer}: training left no checkpoint")
    return Path(pointer.read_text().strip())


def train(spec: RunSpec, *, cfg=None, extra_tags: dict | None = None) -> Path:
    """Train ``spec`` (resuming if possible), export the model, return its path."""
    import mlflow
    from mmengine.runner import Runner

    from . import mmdet_plugins  # noqa: F401  (registries, safe checkpoint loader)
    from .tracking import mlflow_vis_backend, open_run

    validate_layout(spec.dataset.root)
    if spec.train.get("pretrained"):
        ensure_pretrained(spec.depth)
    if cfg is None:
        cfg = build_config(spec, deterministic=not torch.cuda.is_available())
    fingerprint = config_fingerprint(cfg, spec.dataset.root)
    work_dir = spec.work_dir
    resume = prepare_work_dir(work_dir, fingerprint)
    backends = [dict(type="LocalVisBackend"), mlflow_vis_backend(spec)]
    cfg.vis_backends = backends
    cfg.visualizer.vis_backends = backends
    cfg.resume = resume
    if resume:
        print(f"[dipkd] resuming {work_dir} from {latest_checkpoint(work_dir)}", flush=True)
    open_run(spec, work_dir / RUN_FILE, run_name=f"{spec.group}/{spec.key}",
             **(extra_tags or {}))
    try:
        runner = Runner.from_cfg(cfg)
        runner.train()
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run()  # no-op when mmengine's backend already closed it
    run_id = json.loads((work_dir / RUN_FILE).read_text())["run_id"]
    export_model(latest_checkpoint(work_dir), spec.model_path,
                 {"mlflow_run_id": run_id, "fingerprint": fingerprint, "role": spec.role,
                  "method": spec.method, "dataset": spec.dataset.name,
                  "detector": spec.detector, "config": cfg.pretty_text})
    print(f"[dipkd] wrote {spec.model_path}", flush=True)
    return spec.model_path
