""""Δ vs student" of the tables' distilled rows: the paired bootstrap
(:mod:`dipkd.evaluation.bootstrap`) of a distilled model's runs against the student's runs of
the same dataset and detector, from the detections the training stages saved when testing
(:attr:`RunSpec.detections_path`) and the test split's ground truth.

Paths are resolved under ``base`` (the project root; tests pass a temporary one): the
detections under ``base/detections``, the ground truth under ``base/data/<dataset>``. A
missing detections file is an error naming the stage to run, never a blank.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ..evaluation.bootstrap import Delta, PerImageEval, paired_bootstrap


@lru_cache(maxsize=256)
def _per_image(detections: str, gt: str, mtime: float) -> PerImageEval:
    import json
    return PerImageEval(gt, json.loads(Path(detections).read_text()))


def per_image_eval(spec, base: Path = Path(".")) -> PerImageEval:
    path = Path(base) / spec.detections_path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: detections of {spec.group}/{spec.run_key} missing; "
                                f"run its training stage (dvc repro)")
    gt = Path(base) / spec.dataset.root / "annotations" / "test.json"
    return _per_image(str(path), str(gt), path.stat().st_mtime)


def delta_vs_student(model_specs, student_specs, names=("mAP",),
                     base: Path = Path(".")) -> dict[str, Delta]:
    """``{metric: Delta}`` (percentage points) of the model's runs over the student's, runs
    paired by seed (both lists in the same seed order)."""
    model = [per_image_eval(s, base) for s in model_specs]
    student = [per_image_eval(s, base) for s in student_specs]
    return paired_bootstrap(model, student, names=tuple(names))


def mlflow_run_of(model: Path, client) -> str | None:
    """The MLflow run that trained ``model`` (its checkpoint's ``meta.mlflow_run_id``) when
    it is in ``client``'s store; else None, with a note (a colleague's model, a new db)."""
    from ..checkpoint import checkpoint_meta
    run_id = checkpoint_meta(model).get("mlflow_run_id")
    try:
        client.get_run(run_id)
    except Exception:  # noqa: BLE001  (not in this store)
        print(f"[dipkd] {model}: MLflow run {run_id} not in this store; nothing logged")
        return None
    return run_id


def log_run_deltas(params: dict, base: Path = Path("."), names=("mAP", "AP50")) -> int:
    """Log "Δ vs student" into the MLflow run of every distilled model that has detections:
    metrics ``delta/<metric>``, ``delta/<metric>_ci_low``, ``delta/<metric>_ci_high`` (this
    run against the student of the same dataset, detector and seed; images resampled).
    Returns how many runs were updated; a run missing from the store is skipped with a note."""
    import math
    import re

    import mlflow

    from ..config.params import DETECTORS, dataset_spec, experiment_name
    from ..tracking import ensure_experiment

    pattern = re.compile(rf"^(.+)-({'|'.join(DETECTORS)})-seed(\d+)$")
    ensure_experiment(experiment_name(params))
    client, updated = mlflow.tracking.MlflowClient(), 0
    for det_file in sorted((Path(base) / "detections" / "distilled").glob("*/*.json")):
        match = pattern.match(det_file.stem)
        student = Path(base) / "detections" / "student" / det_file.name
        model = Path(base) / "models" / "distilled" / det_file.parent.name / \
            f"{det_file.stem}.pth"
        if not match or match.group(1) not in params["data"] or not student.is_file() \
                or not model.is_file():
            continue
        gt = Path(base) / dataset_spec(params, match.group(1)).root / "annotations" / "test.json"
        d = paired_bootstrap([_per_image(str(det_file), str(gt), det_file.stat().st_mtime)],
                             [_per_image(str(student), str(gt), student.stat().st_mtime)],
                             names=tuple(names))
        run_id = mlflow_run_of(model, client)
        if run_id is None:
            continue
        for k, v in d.items():
            for suffix, value in (("", v.delta), ("_ci_low", v.ci_low), ("_ci_high", v.ci_high)):
                if math.isfinite(value):
                    client.log_metric(run_id, f"delta/{k}{suffix}", value)
        updated += 1
    return updated
