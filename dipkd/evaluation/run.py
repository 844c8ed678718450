"""Evaluate a trained model on the test split and record the paper's Table 1 metrics.

The model is tested with mmengine's ``Runner.test`` and the :class:`SARCocoMetric`
(pycocotools). The twelve COCO numbers go to ``spec.metrics_path`` (a DVC metrics file) and
into the MLflow run that trained the model (``test/<metric>`` plus the JSON as artifact).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from ..checkpoint import checkpoint_meta
from ..mmdet_config import build_config, own_visualizer
from ..config.params import RunSpec
from ..datasets.coco_layout import validate_layout
from . import final_validation as final_validation_record
from .coco_eval import METRIC_NAMES, write_metrics_json
from .final_validation import RECORD_DIR


def test_model(spec: RunSpec, model_path: Path, cfg=None,
               detections_out: Path | None = None) -> dict:
    """Run the test loop on ``model_path``; return ``{metric: value or None}``. With
    ``detections_out`` the test-set detections are written there too (COCO results JSON)."""
    from mmengine.runner import Runner

    from .. import mmdet_plugins  # noqa: F401

    validate_layout(spec.dataset.root)
    if cfg is None:
        cfg = build_config(spec, deterministic=not torch.cuda.is_available())
    work_dir = spec.work_dir / "test"
    shutil.rmtree(work_dir, ignore_errors=True)
    cfg.work_dir = str(work_dir)
    cfg.load_from = str(model_path)
    cfg.resume = False
    own_visualizer(cfg)
    if detections_out is not None:
        cfg.test_evaluator["detections_out"] = str(detections_out)
    runner = Runner.from_cfg(cfg)
    raw = runner.test()
    prefix = "coco/"
    metrics = {name: raw.get(prefix + name) for name in METRIC_NAMES}
    return {k: (None if v is None else float(v)) for k, v in metrics.items()}


def _evaluation_run(spec: RunSpec, meta: dict, model_path: Path):
    """The MLflow run the test metrics go to: the model's training run (``meta``'s
    ``mlflow_run_id``) when the store has it; else (a colleague's model, a deleted
    ``mlflow.db``) a new run of its own, tagged ``original_run_id``, with the run's tags."""
    import mlflow

    from ..tracking import ensure_experiment, run_tags
    from ..tracking.mlflow_runs import run_exists

    exp_id = ensure_experiment(spec.experiment)
    run_id = meta.get("mlflow_run_id")
    if run_id and run_exists(run_id):
        return mlflow.start_run(run_id=run_id)
    if run_id:
        print(f"[dipkd] {model_path}: its training run {run_id} is not in this MLflow "
              "store; logging the evaluation as a new run", flush=True)
    tags = run_tags(spec, model_path=str(model_path), evaluation_only="true")
    if run_id:
        tags["original_run_id"] = run_id
    return mlflow.start_run(experiment_id=exp_id, run_name=f"eval/{spec.group}/{spec.run_key}",
                            tags=tags)


def evaluate(spec: RunSpec, model_path: Path | None = None, out: Path | None = None,
             cfg=None, *, final_validation: bool = False) -> dict:
    """Test, write the metrics JSON (and the detections, :attr:`RunSpec.detections_path`)
    and log it into the model's MLflow run (:func:`_evaluation_run`). With
    ``final_validation`` (the training stage testing the model it just exported) the
    validation after the run's last epoch is the test when the run recorded it
    (:mod:`dipkd.evaluation.final_validation`: the same weights on the same images)."""
    import mlflow

    model_path = Path(model_path or spec.model_path)
    out = Path(out or spec.metrics_path)
    meta = checkpoint_meta(model_path)
    # the detections beside a custom metrics file, else at the run's own path
    detections = (spec.detections_path if out == Path(spec.metrics_path)
                  else out.with_suffix(".detections.json"))
    metrics = (final_validation_record.read(spec.work_dir, detections)
               if final_validation else None)
    if metrics is None:
        metrics = test_model(spec, model_path, cfg, detections_out=detections)
    else:
        print(f"[dipkd] {spec.role} {spec.key}: the test is the validation after the last "
              f"epoch (same weights, same images: {spec.work_dir / RECORD_DIR})", flush=True)
    write_metrics_json(out, metrics)   # metrics only: role, seed, model are MLflow tags
    with _evaluation_run(spec, meta, model_path):
        mlflow.log_metrics({f"test/{k}": v for k, v in metrics.items() if v is not None})
        mlflow.log_artifact(str(out), artifact_path="metrics")
        if spec.log_path.is_file():      # the stage's full log (training and this test)
            mlflow.log_artifact(str(spec.log_path), artifact_path="logs")
        mlflow.set_tag("evaluated", "true")
    print(f"[dipkd] {spec.role} {spec.key}: " +
          ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if v is not None), flush=True)
    return metrics

