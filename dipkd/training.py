"""Train one detector (teacher or student) with mmengine's Runner, tracked in MLflow.

A training stage is resumable: its work dir keeps mmengine's epoch checkpoints, and running
the stage again after a kill resumes from ``last_checkpoint``; once the model is exported and
tested the stage deletes the checkpoints (:func:`prune_work_dir`, ``pipeline/train.py``).
The work dir is stamped with a fingerprint of the config and the data; a stale work dir
(other params or data) is cleared rather than resumed. The result is a plain mmdet checkpoint (``state_dict`` + ``meta`` with
its mmdet config, :mod:`dipkd.export`) that mmdet loads without dipkd, written atomically to
``spec.model_path`` with its config file beside it, and the training
curves (loss and validation mAP per epoch) go to ``spec.curves_path`` for ``dvc plots``.

With ``compute.gpus: N > 1`` the stage runs in N torchrun workers (:mod:`dipkd.launch`) that
all call :func:`train`: rank 0 alone prepares the work dir (the others wait at a barrier),
opens and closes the MLflow run and exports the model; ``batch_size`` is per process.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch

from . import console, launch
from .mmdet_config import build_config, own_visualizer
from .rng_state import keep_rng_state
from .config.params import RunSpec
from .datasets.coco_layout import validate_layout
from .evaluation import final_validation
from .export import export_model
from .models.pretrained import ensure_pretrained
from .tracking.curves import write_curves

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


def _readable_checkpoint(work_dir: Path) -> tuple[Path | None, str]:
    """The checkpoint to resume from: the one ``last_checkpoint`` names if it loads, else the
    newest other ``epoch_*.pth`` of the work dir that does (the pointer is rewritten to it);
    None when none loads. Also returns what was skipped and why (empty if nothing)."""
    from .checkpoint import CorruptCheckpointError, safe_load
    pointer = work_dir / "last_checkpoint"
    named = Path(pointer.read_text().strip())
    epochs = sorted(work_dir.glob("epoch_*.pth"), reverse=True,
                    key=lambda p: int(p.stem[6:]) if p.stem[6:].isdigit() else -1)
    skipped = []
    for ckpt in [named] + [p for p in epochs if p.resolve() != named.resolve()]:
        try:
            safe_load(ckpt)
        except (CorruptCheckpointError, FileNotFoundError) as exc:   # cut short, or gone
            why = str(exc).splitlines()[0].removeprefix(f"{ckpt}: ")[:120]
            skipped.append(f"{ckpt} unreadable ({why})")
            continue
        if skipped:
            pointer.write_text(str(ckpt.resolve()))
        return ckpt, "; ".join(skipped)
    return None, "; ".join(skipped)


def prepare_work_dir(work_dir: Path, fingerprint: str) -> bool:
    """Make ``work_dir`` ready; return True when it holds a checkpoint to resume from. A last
    checkpoint that does not load (cut short) falls back to the previous one; with none left
    the work dir is cleared as for other params."""
    stamp = work_dir / FINGERPRINT
    if work_dir.exists():
        old = json.loads(stamp.read_text()).get("fingerprint") if stamp.exists() else None
        reason = "config or data changed since the last run" if old != fingerprint else None
        if reason is None and (work_dir / "last_checkpoint").exists():
            ckpt, skipped = _readable_checkpoint(work_dir)
            if ckpt is None:
                reason = f"{skipped}; no readable checkpoint left"
            elif skipped:
                console.say(f"[dipkd] warning: {skipped}; resuming from {ckpt} instead")
        if reason:
            console.say(f"[dipkd] {work_dir}: {reason}; starting from scratch")
            shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"fingerprint": fingerprint}))
    return (work_dir / "last_checkpoint").exists()


def tag_model(run_id: str, model_path: Path) -> None:
    """Tag the run with its exported model: path (relative to the project) and DVC hash, so
    that a run in ``mlflow ui`` leads to the file ``dvc checkout`` restores."""
    import mlflow
    mlflow.tracking.MlflowClient().set_tag(run_id, "model_path", str(model_path))
    with open(model_path, "rb") as fh:   # DVC's hash of a file output: md5 of its content
        md5 = hashlib.file_digest(fh, "md5").hexdigest()
    mlflow.tracking.MlflowClient().set_tag(run_id, "model_dvc_md5", md5)


def prune_work_dir(work_dir: Path) -> None:
    """After a finished training has been exported and tested: drop the epoch checkpoints
    (each holds the model and optimizer state; dozens of runs would fill the disk), the resume
    pointer, the MLflow run record and the final validation's record, keeping the logs. Running the stage again trains a new run."""
    for ckpt in work_dir.glob("epoch_*.pth"):
        ckpt.unlink()
    for name in ("last_checkpoint", RUN_FILE):
        (work_dir / name).unlink(missing_ok=True)
    shutil.rmtree(work_dir / final_validation.RECORD_DIR, ignore_errors=True)


def latest_checkpoint(work_dir: Path) -> Path:
    pointer = work_dir / "last_checkpoint"
    if not pointer.exists():
        raise FileNotFoundError(f"{pointer}: training left no checkpoint")
    return Path(pointer.read_text().strip())


def train(spec: RunSpec, *, cfg=None, extra_tags: dict | None = None) -> Path:
    """Train ``spec`` (resuming if possible), export the model, return its path. The work
    dir keeps its checkpoints until the caller prunes it (after the test), so a run whose test
    failed resumes at its last epoch instead of training again."""
    import mlflow
    from mmengine.runner import Runner

    from . import mmdet_plugins  # noqa: F401  (registries, safe checkpoint loader)
    from .tracking import mlflow_vis_backend, open_run

    validate_layout(spec.dataset.root)
    # In a multi-process run (compute.gpus > 1, see dipkd.launch) every rank runs this
    # function; only rank 0 (the leader) prepares the work dir, talks to MLflow and exports.
    # In one process the leader is the only process and nothing below changes.
    launch.init_worker()
    distributed, leader = launch.is_distributed(), launch.is_leader()
    if spec.train.pretrained and leader:
        ensure_pretrained(spec.depth)
    if cfg is None:
        cfg = build_config(spec, deterministic=not torch.cuda.is_available())
    if distributed:
        launch.configure(cfg, spec.work_dir)
    fingerprint = config_fingerprint(cfg, spec.dataset.root)
    work_dir = spec.work_dir
    if leader:
        resume = prepare_work_dir(work_dir, fingerprint)
    launch.barrier()  # the other ranks wait for rank 0's work dir
    if not leader:
        if spec.train.pretrained:
            ensure_pretrained(spec.depth)  # fetched by rank 0 by now
        resume = (work_dir / "last_checkpoint").exists()
    # mmengine's visualizer writes from rank 0 only; the other ranks do not even get the
    # MLflow backend, so they cannot open a run.
    backends = [dict(type="LocalVisBackend")] + ([mlflow_vis_backend(spec)] if leader else [])
    cfg.vis_backends = backends
    cfg.visualizer.vis_backends = backends
    own_visualizer(cfg)
    keep_rng_state(cfg)      # a resumed run draws what the uninterrupted one would have
    final_validation.add_hook(cfg)   # the stage's test reads it (dipkd.evaluation.run)
    if leader and console.progress_bar_wanted():   # after the fingerprint: display only
        cfg.custom_hooks = [*cfg.get("custom_hooks", []), dict(type="ProgressBarHook")]
    cfg.resume = resume
    if resume and leader:
        console.say(f"[dipkd] resuming {work_dir} from {latest_checkpoint(work_dir)}")
    if distributed:
        print(f"[dipkd] rank {launch.rank()}/{launch.world_size()} ({launch.backend()}): "
              f"training {spec.group}/{spec.key}", flush=True)
    if leader:
        open_run(spec, work_dir / RUN_FILE, run_name=f"{spec.group}/{spec.run_key}",
                 data_digest=data_fingerprint(spec.dataset.root),
                 world_size=launch.world_size(), **(extra_tags or {}))
    try:
        runner = Runner.from_cfg(cfg)
        runner.train()
    except BaseException:
        if leader:
            mlflow.end_run(status="FAILED")
        raise
    if not leader:
        launch.finish()
        return spec.model_path
    mlflow.end_run()  # no-op when mmengine's backend already closed it
    run_id = json.loads((work_dir / RUN_FILE).read_text())["run_id"]
    export_model(latest_checkpoint(work_dir), spec.model_path,
                 {"mlflow_run_id": run_id, "fingerprint": fingerprint, "role": spec.role,
                  "method": spec.method, "dataset": spec.dataset.name,
                  "detector": spec.detector, "world_size": launch.world_size()},
                 model_cfg=build_config(spec), train_cfg=cfg)
    tag_model(run_id, spec.model_path)
    write_curves(work_dir, spec.curves_path)
    print(f"[dipkd] wrote {spec.model_path} and {spec.curves_path}", flush=True)
    launch.finish()
    return spec.model_path
