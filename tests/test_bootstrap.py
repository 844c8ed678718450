"""The paired (hierarchical) bootstrap of "Δ vs student" against hand-made cases and against
a bootstrap written independently here (full COCOeval on rebuilt, resampled datasets)."""
import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from dipkd.evaluation.bootstrap import PerImageEval, paired_bootstrap
from dipkd.evaluation.coco_eval import evaluate_detections


def _gt(n_images=30, seed=0):
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "width": 200, "height": 200, "file_name": f"{i}.png"})
        for _ in range(int(rng.integers(1, 4))):
            x, y = rng.uniform(0, 150, 2)
            w, h = rng.uniform(12, 45, 2)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1,
                         "bbox": [float(x), float(y), float(w), float(h)],
                         "area": float(w * h), "iscrowd": 0})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": 1, "name": "ship"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _good(coco, seed=1):
    """Detections near every GT box with high scores, plus low-score false positives."""
    rng = np.random.default_rng(seed)
    dets = []
    for a in coco.dataset["annotations"]:
        x, y, w, h = a["bbox"]
        jitter = rng.normal(0, 1.5, 4)
        dets.append({"image_id": a["image_id"], "category_id": 1,
                     "bbox": [x + jitter[0], y + jitter[1], max(1, w + jitter[2]),
                              max(1, h + jitter[3])], "score": float(rng.uniform(0.6, 1.0))})
    for img in coco.dataset["images"]:
        dets.append({"image_id": img["id"], "category_id": 1,
                     "bbox": [float(v) for v in rng.uniform(0, 150, 2)] + [20.0, 20.0],
                     "score": float(rng.uniform(0.0, 0.4))})
    return dets


def test_full_set_metric_equals_cocoeval():
    coco = _gt()
    dets = _good(coco)
    ours = PerImageEval(coco, dets).metrics(None, ("mAP", "AP50"))
    ref = evaluate_detections(coco, dets)
    assert ours["mAP"] == pytest.approx(ref["mAP"]) and ours["AP50"] == pytest.approx(ref["AP50"])


def test_identical_detections_give_zero_with_zero_width_ci():
    coco = _gt()
    a, b = PerImageEval(coco, _good(coco)), PerImageEval(coco, _good(coco))
    d = paired_bootstrap([a], [b], names=("mAP", "AP50"), resamples=200)
    for v in d.values():
        assert (v.delta, v.ci_low, v.ci_high) == (0.0, 0.0, 0.0) and not v.significant


def test_shuffled_scores_give_a_ci_entirely_below_zero():
    coco = _gt(40)
    good = _good(coco)
    scores = [d["score"] for d in good]
    np.random.default_rng(5).shuffle(scores)
    shuffled = [dict(d, score=s) for d, s in zip(good, scores)]
    d = paired_bootstrap([PerImageEval(coco, shuffled)], [PerImageEval(coco, good)],
                         names=("mAP",), resamples=300)["mAP"]
    assert d.delta < 0 and d.ci_high < 0 and d.significant
    assert d.ci_low <= d.delta <= d.ci_high


def _naive_metric(coco, dets, images):
    """mAP of ``dets`` on the images at positions ``images`` (repeats become new images),
    by rebuilding the dataset and running COCOeval from scratch: nothing shared with the
    implementation under test but pycocotools itself."""
    ids = coco.getImgIds()
    gt_images, gt_anns, res = [], [], []
    for new_id, pos in enumerate(images, start=1):
        old = ids[pos]
        gt_images.append(dict(coco.imgs[old], id=new_id))
        for a in coco.imgToAnns[old]:
            gt_anns.append(dict(a, id=len(gt_anns) + 1, image_id=new_id))
        res += [dict(d, image_id=new_id) for d in dets if d["image_id"] == old]
    gt = COCO()
    gt.dataset = {"images": gt_images, "annotations": gt_anns,
                  "categories": coco.dataset["categories"]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(res), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0]


def test_ci_matches_an_independent_bootstrap():
    coco = _gt(12, seed=3)
    good = _good(coco, seed=4)
    worse = [dict(d, score=d["score"] * (0.5 if i % 3 == 0 else 1.0))
             for i, d in enumerate(_good(coco, seed=9))]
    resamples, n = 60, 12
    got = paired_bootstrap([PerImageEval(coco, worse)], [PerImageEval(coco, good)],
                           names=("mAP",), resamples=resamples, seed=7)["mAP"]
    rng = np.random.default_rng(7)      # the same draws: one image draw per resample
    diffs = []
    for _ in range(resamples):
        images = rng.integers(0, n, n)
        diffs.append(_naive_metric(coco, worse, images) - _naive_metric(coco, good, images))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    point = _naive_metric(coco, worse, range(n)) - _naive_metric(coco, good, range(n))
    assert got.delta == pytest.approx(100 * point, abs=1e-9)
    assert got.ci_low == pytest.approx(100 * lo, abs=1e-9)
    assert got.ci_high == pytest.approx(100 * hi, abs=1e-9)


def test_hierarchical_bootstrap_over_seeds_matches_an_independent_one():
    coco = _gt(10, seed=11)
    model = [_good(coco, seed=s) for s in (20, 21)]
    ref = [[dict(d, score=d["score"] * 0.3) if i % 2 else d
            for i, d in enumerate(_good(coco, seed=s))] for s in (30, 31)]
    resamples, n = 40, 10
    got = paired_bootstrap([PerImageEval(coco, d) for d in model],
                           [PerImageEval(coco, d) for d in ref],
                           names=("mAP",), resamples=resamples, seed=2)["mAP"]
    rng = np.random.default_rng(2)      # seeds first, then images
    diffs = []
    for _ in range(resamples):
        seeds = rng.integers(0, 2, 2)
        images = rng.integers(0, n, n)
        diffs.append(np.mean([_naive_metric(coco, model[s], images) for s in seeds])
                     - np.mean([_naive_metric(coco, ref[s], images) for s in seeds]))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    assert got.ci_low == pytest.approx(100 * lo, abs=1e-9)
    assert got.ci_high == pytest.approx(100 * hi, abs=1e-9)


def test_unpaired_inputs_are_refused():
    coco = _gt(5)
    a = PerImageEval(coco, _good(coco))
    with pytest.raises(ValueError, match="same number of runs"):
        paired_bootstrap([a, a], [a])


def test_accumulating_only_the_100_detections_limit_changes_no_number():
    """The resamples accumulate COCOeval's maxDets=100 cells only: every metric equals (to
    the bit) what the full accumulate (maxDets 1, 10, 100) gives, on the full set and on
    resamples with repeats, with detections beyond 10 per image so the limits differ."""
    coco = _gt(16, seed=5)
    dets = _good(coco, seed=6)
    rng = np.random.default_rng(2)
    for img in coco.dataset["images"]:          # many low-score boxes per image
        for _ in range(12):
            dets.append({"image_id": img["id"], "category_id": 1,
                         "bbox": [float(v) for v in rng.uniform(0, 150, 2)] + [25.0, 25.0],
                         "score": float(rng.uniform(0.0, 0.5))})
    run = PerImageEval(coco, dets)
    for idx in (np.arange(16), rng.integers(0, 16, 16), rng.integers(0, 16, 16)):
        fast, full = run._metrics(idx), run._metrics(idx, max_dets=None)
        assert fast.keys() == full.keys()
        for name in fast:
            assert fast[name] == full[name] or (np.isnan(fast[name]) and np.isnan(full[name]))
