""""Δ vs student" where the distilled model really is better: sign, value, CI and seed pairing
of the tables' Δ column and of the ``delta/<metric>`` metrics logged into MLflow.

The detections are made so that every COCO number is known by hand. Each test image has one
40x40 ship; a model's detection on it is that box shifted right by ``dx`` pixels, so its IoU
is (40 - dx) / (40 + dx) on every image, and the box is a true positive at exactly the IoU
thresholds 0.50:0.05:0.95 it reaches (nothing else is detected). At each threshold the model
is then either perfect (AP 1) or finds nothing (AP 0): its mAP is the fraction of thresholds
reached, on the full test set AND on every bootstrap resample of its images. A paired
difference of two such runs is therefore the same number on every resample, and the 95% CI
of the hierarchical bootstrap (seeds, then images) is known exactly:

    seed  student dx -> mAP    DIPKD dx -> mAP    Δ (pp)
    0     9  (IoU .633) 0.3    6 (IoU .739) 0.5   +20
    1     4  (IoU .818) 0.7    0 (IoU 1)    1.0   +30

Paired by seed: every resample's Δ is +20, +25 or +30 -> Δ +25.0, CI [+20, +30]. With the
student's seeds swapped (a wrong pairing) the per-seed differences would be -20 and +70 and the
CI [-20, +70]; with a sign flip Δ would be -25; the per-run MLflow Δ of seed 1 against the
student of seed 0 would be +70.
"""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from dipkd.reports.tables import table1

GT_BOX = [10.0, 10.0, 40.0, 40.0]              # x, y, w, h
N_IMAGES = 5
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
DX = {("student", 0): 9, ("student", 1): 4,
      ("distilled/dipkd", 0): 6, ("distilled/dipkd", 1): 0,
      # the variant row: as good as DIPKD on seed 0, worse than the student on seed 1
      ("distilled/dipkd-inheritfalse", 0): 6, ("distilled/dipkd-inheritfalse", 1): 9,
      ("distilled/inherit_only", 0): 6, ("distilled/inherit_only", 1): 4,   # Table 1's control
      ("teacher", 0): 0}


def _iou(dx: float) -> float:
    """IoU of the 40x40 GT box and the same box shifted right by dx (by hand)."""
    inter = (40 - dx) * 40
    return inter / (2 * 40 * 40 - inter)


def _map(dx: float) -> float:
    """COCO mAP of a run whose every detection has IoU _iou(dx) with its image's one ship."""
    iou = _iou(dx)
    assert np.abs(iou - COCO_IOU_THRESHOLDS).min() > 1e-3   # well clear of a threshold
    return float(np.mean(iou >= COCO_IOU_THRESHOLDS))


def _gt(n_images=N_IMAGES):
    return {"images": [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.png"}
                       for i in range(1, n_images + 1)],
            "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": GT_BOX,
                             "area": GT_BOX[2] * GT_BOX[3], "iscrowd": 0}
                            for i in range(1, n_images + 1)],
            "categories": [{"id": 1, "name": "ship"}]}


def _write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _write_run(root, group, key, seed, dx, images=None):
    """The metrics file (mAP from the hand computation) and detections of one run; ``images``
    (default all) are the images on which the run detects its ship."""
    images = range(1, N_IMAGES + 1) if images is None else images
    x, y, w, h = GT_BOX
    dets = [{"image_id": i, "category_id": 1, "bbox": [x + dx, y, w, h], "score": 0.9}
            for i in images]
    _write_json(root / "detections" / group / f"{key}-seed{seed}.json", dets)
    metrics = {m: None for m in ("mAP", "AP50", "AP75", "APs", "APm", "APl",
                                 "AR1", "AR10", "mAR", "ARs", "ARm", "ARl")}
    metrics["mAP"] = _map(dx)
    _write_json(root / "metrics" / group / f"{key}-seed{seed}.json", {"metrics": metrics})


def _workspace(root, params):
    params["datasets"], params["detectors"], params["seeds"] = ["ssdd"], ["faster_rcnn"], [0, 1]
    _write_json(root / "data" / "ssdd" / "annotations" / "test.json", _gt())
    for (group, seed), dx in DX.items():
        _write_run(root, group, "ssdd-faster_rcnn", seed, dx)
    return params


def test_hand_made_maps_are_what_pycocotools_says(tmp_path):
    """The premise of the other tests: pycocotools gives each hand-made run the mAP computed
    by hand above (0.3, 0.5, 0.7 and 1.0)."""
    from dipkd.evaluation.bootstrap import PerImageEval
    gt = tmp_path / "gt.json"
    _write_json(gt, _gt())
    for dx, expected in ((9, 0.3), (6, 0.5), (4, 0.7), (0, 1.0)):
        assert _map(dx) == pytest.approx(expected)
        x, y, w, h = GT_BOX
        dets = [{"image_id": i, "category_id": 1, "bbox": [x + dx, y, w, h], "score": 0.9}
                for i in range(1, N_IMAGES + 1)]
        got = PerImageEval(str(gt), dets).metrics(np.array([0, 0, 3]), ("mAP", "AP50"))
        assert got["mAP"] == pytest.approx(expected, abs=1e-12)   # any resample: the same
        assert got["AP50"] == pytest.approx(1.0, abs=1e-12)


def test_table1_delta_sign_value_ci_and_seed_pairing(tmp_path, params):
    params = _workspace(tmp_path, params)
    rows = table1.collect(params, metrics_dir=tmp_path / "metrics")
    by_model = {r.labels["Model"]: r for r in rows}
    dipkd = by_model["ours: ResNet18 + DIPKD"]
    variant = by_model["ours: ResNet18 + DIPKD without inheritance"]
    assert not by_model["ResNet18(stu)"].delta and not by_model["ResNet50(tea)"].delta

    # expected, from the hand-computed per-seed mAPs (percentage points)
    stu = [100 * _map(DX[("student", s)]) for s in (0, 1)]
    dip = [100 * _map(DX[("distilled/dipkd", s)]) for s in (0, 1)]
    var = [100 * _map(DX[("distilled/dipkd-inheritfalse", s)]) for s in (0, 1)]
    paired = [d - s for d, s in zip(dip, stu)]                   # +20, +30
    assert np.mean(dip) - np.mean(stu) == pytest.approx(25.0)
    d = dipkd.delta["mAP"]
    assert d.delta == pytest.approx(25.0, abs=1e-9)              # > 0: DIPKD is better
    assert (d.ci_low, d.ci_high) == (pytest.approx(min(paired), abs=1e-9),
                                     pytest.approx(max(paired), abs=1e-9))   # [20, 30]
    assert d.significant
    # a wrong pairing (seed 0 with seed 1) would have given [-20, +70]: excluded above.
    v = variant.delta["mAP"]                                     # +20 and -40 -> Δ -10
    var_paired = [x - s for x, s in zip(var, stu)]
    assert v.delta == pytest.approx(np.mean(var) - np.mean(stu), abs=1e-9) == -10.0
    assert (v.ci_low, v.ci_high) == (pytest.approx(min(var_paired), abs=1e-9),
                                     pytest.approx(max(var_paired), abs=1e-9))   # [-40, +20]
    assert not v.significant

    table1.write_table1(rows, "head", tmp_path / "out")
    md = (tmp_path / "out" / "table1.md").read_text()
    assert "+25.0 [+20.0, +30.0]†" in md
    assert "-10.0 [-40.0, +20.0]" in md and "-10.0 [-40.0, +20.0]†" not in md
    csv = pd.read_csv(tmp_path / "out" / "table1.csv").set_index("Model")
    assert csv.loc["ours: ResNet18 + DIPKD", ["mAP_delta", "mAP_ci_low", "mAP_ci_high"]] \
        .tolist() == [25.0, 20.0, 30.0]
    assert csv.loc["ours: ResNet18 + DIPKD without inheritance",
                   ["mAP_delta", "mAP_ci_low", "mAP_ci_high"]].tolist() == [-10.0, -40.0, 20.0]
    # the means in the table are the metrics files' (0.75 and 0.5 -> 75.0 and 50.0)
    assert csv.loc["ours: ResNet18 + DIPKD", "mAP"] == pytest.approx(np.mean(dip))
    assert csv.loc["ResNet18(stu)", "mAP"] == pytest.approx(np.mean(stu))


def test_student_missing_ships_gives_a_positive_delta(tmp_path, params):
    """One seed; the student finds the ship on 4 of 8 images (exact boxes), DIPKD on all 8.
    By hand: DIPKD's AP is 1 at every IoU threshold; the student's precision is 1 up to
    recall 1/2 and 0 beyond, so of COCO's 101 recall points 0, 0.01, ..., 1 those <= 0.5
    (51 of them) count: mAP 51/101 and Δ = 100 (1 - 51/101) pp. On a resample DIPKD is never
    worse; it ties only when every drawn image is one the student found (2^-8 < 2.5%), so
    the 95% CI lies above 0."""
    from dipkd.config.params import distill_spec, run_spec
    from dipkd.reports.deltas import delta_vs_student
    params["datasets"], params["detectors"], params["seeds"] = ["ssdd"], ["faster_rcnn"], [0]
    n = 8
    _write_json(tmp_path / "data" / "ssdd" / "annotations" / "test.json", _gt(n))
    x, y, w, h = GT_BOX
    for group, images in (("student", range(1, n + 1, 2)), ("distilled/dipkd", range(1, n + 1))):
        _write_json(tmp_path / "detections" / group / "ssdd-faster_rcnn-seed0.json",
                    [{"image_id": i, "category_id": 1, "bbox": [x, y, w, h], "score": 0.9}
                     for i in images])
    recall_points = np.linspace(0, 1, 101)
    expected = 100 * (1 - np.sum(recall_points <= 0.5) / 101)
    d = delta_vs_student([distill_spec(params, "dipkd", "ssdd", "faster_rcnn", 0)],
                         [run_spec(params, "student", "ssdd", "faster_rcnn", 0)],
                         names=("mAP", "AP50"), base=tmp_path)
    assert d["mAP"].delta == pytest.approx(expected, abs=1e-9)        # +49.5
    assert d["AP50"].delta == pytest.approx(expected, abs=1e-9)       # the same at IoU .5
    assert 0 < d["mAP"].ci_low < d["mAP"].delta < d["mAP"].ci_high <= 100
    # reversed roles: the sign flips, the interval mirrors
    r = delta_vs_student([run_spec(params, "student", "ssdd", "faster_rcnn", 0)],
                         [distill_spec(params, "dipkd", "ssdd", "faster_rcnn", 0)],
                         base=tmp_path)["mAP"]
    assert r.delta == pytest.approx(-expected, abs=1e-9)
    assert (r.ci_low, r.ci_high) == (pytest.approx(-d["mAP"].ci_high, abs=1e-9),
                                     pytest.approx(-d["mAP"].ci_low, abs=1e-9))


def test_mlflow_delta_metrics_pair_each_run_with_its_seed(tmp_path, params, monkeypatch):
    """``log_run_deltas`` (the tables stage) logs into each distilled run its Δ against the
    student of the SAME seed: +20 for seed 0 and +30 for seed 1, each with a CI of zero width
    (the difference is the same on every resample); a run paired with the other seed's
    student would get -20 or +70."""
    import mlflow

    from dipkd.config.params import experiment_name
    from dipkd.reports.deltas import log_run_deltas
    from dipkd.tracking.mlflow_runs import ensure_experiment, local_store_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DIPKD_STORE_ROOT", str(tmp_path / "store"))
    params = _workspace(tmp_path, params)
    exp_id = ensure_experiment(experiment_name(params))
    client = mlflow.tracking.MlflowClient(tracking_uri=local_store_uri())
    run_ids = {}
    for seed in (0, 1):
        run_ids[seed] = client.create_run(exp_id, run_name=f"seed{seed}").info.run_id
        model = tmp_path / "models" / "distilled" / "dipkd" / f"ssdd-faster_rcnn-seed{seed}.pth"
        model.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": {}, "meta": {"mlflow_run_id": run_ids[seed]}}, model)
    try:
        assert log_run_deltas(params, base=tmp_path) == 2
        for seed in (0, 1):
            expected = 100 * (_map(DX[("distilled/dipkd", seed)]) - _map(DX[("student", seed)]))
            assert expected == pytest.approx((20.0, 30.0)[seed])
            metrics = client.get_run(run_ids[seed]).data.metrics
            for suffix in ("", "_ci_low", "_ci_high"):
                assert metrics[f"delta/mAP{suffix}"] == pytest.approx(expected, abs=1e-9), \
                    (seed, suffix, metrics)
                assert metrics[f"delta/AP50{suffix}"] == pytest.approx(0.0, abs=1e-9)
    finally:
        mlflow.end_run()
