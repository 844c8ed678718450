"""The validation after a run's last epoch, kept as its test.

A training stage validates on the test split (``val_dataloader`` is the test loader,
:func:`dipkd.mmdet_config.build_config`), and mmengine's loop always validates after the last
epoch, after the last checkpoint is written: the same weights the stage exports, on the same
images, through the same pipeline and :class:`~dipkd.evaluation.metric.SARCocoMetric`, as the
stage's test (:func:`dipkd.evaluation.run.evaluate`) that used to run them all again in a
second Runner. :class:`FinalValidationHook` records that validation in the run's work dir
(``final_validation/``: the twelve metrics and the detections, written when it ends, so a
run killed before it leaves no record); the stage's test then reads it instead of running the
test loop (:func:`read`). Equal to a fresh test to the bit (tested,
``tests/test_final_validation.py``); a run without the record (an older work dir, a
multi-process run, a model tested on its own with ``pipeline.evaluate``) runs the test loop.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .coco_eval import METRIC_NAMES, write_json_atomic

RECORD_DIR = "final_validation"       # in the run's work dir
METRICS_FILE, DETECTIONS_FILE = "metrics.json", "detections.json"
HOOK_TYPE = "FinalValidationHook"


class FinalValidationHook(Hook):
    """Write the metrics and detections of the validation after the last epoch to
    ``<work_dir>/final_validation/`` (one process only: a multi-process run's ranks share the
    validation, and its test runs as before)."""

    priority = "LOW"

    def _final(self, runner) -> bool:
        from mmengine.dist import get_world_size
        loop = runner.train_loop
        return get_world_size() == 1 and loop.epoch == loop.max_epochs

    def _metrics(self, runner):
        return [m for m in runner.val_evaluator.metrics if hasattr(m, "detections_out")]

    def before_val_epoch(self, runner) -> None:
        record = Path(runner.work_dir) / RECORD_DIR
        shutil.rmtree(record, ignore_errors=True)      # never a stale record beside new weights
        if self._final(runner):
            record.mkdir(parents=True)
            for metric in self._metrics(runner):
                metric.detections_out = str(record / DETECTIONS_FILE)

    def after_val_epoch(self, runner, metrics=None) -> None:
        if not self._final(runner):
            return
        for metric in self._metrics(runner):
            metric.detections_out = None
        raw = metrics or {}
        record = Path(runner.work_dir) / RECORD_DIR
        write_json_atomic(record / METRICS_FILE, {
            "epoch": runner.train_loop.epoch,
            "metrics": {name: raw.get(f"coco/{name}") for name in METRIC_NAMES}})


def register() -> None:
    """Register :class:`FinalValidationHook` in mmengine's ``HOOKS``."""
    if HOOK_TYPE not in HOOKS.module_dict:
        HOOKS.register_module(module=FinalValidationHook)


def add_hook(cfg) -> None:
    """Record the final validation of the run ``cfg`` trains (after its fingerprint: it
    changes nothing the run computes)."""
    cfg.custom_hooks = [*cfg.get("custom_hooks", []), dict(type=HOOK_TYPE)]


def read(work_dir: Path, detections_out: Path | None = None) -> dict | None:
    """The recorded final validation's ``{metric: value or None}`` (its detections copied to
    ``detections_out``), or None when the run left no complete record."""
    record = Path(work_dir) / RECORD_DIR
    try:
        data = json.loads((record / METRICS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    if detections_out is not None:
        if not (record / DETECTIONS_FILE).is_file():
            return None
        Path(detections_out).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(record / DETECTIONS_FILE, detections_out)
    return {k: (None if v is None else float(v)) for k, v in data["metrics"].items()}
