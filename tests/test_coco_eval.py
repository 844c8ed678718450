"""pycocotools evaluation wrapper and the mmengine metric, on hand-made cases.

COCO AP is the mean, over 101 recall thresholds r = 0, 0.01, ..., 1, of the interpolated
precision (the best precision at any recall >= r; 0 beyond the last recall reached), then
averaged over the IoU thresholds 0.50:0.05:0.95. Size buckets use the GT ``area``:
small < 32^2 <= medium < 96^2 <= large.
"""
import json
import subprocess
import sys

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from dipkd.evaluation import METRIC_NAMES, TABLE1_METRICS, evaluate_detections, write_metrics_json
from dipkd.evaluation.metric import SARCocoMetric, register_metric


def _gt(tmp_path, boxes_per_image, categories=((1, "ship"),), name="gt.json"):
    """GT json; a box is [x, y, w, h] (category 1) or ([x, y, w, h], category_id)."""
    images, anns = [], []
    for i, boxes in enumerate(boxes_per_image, start=1):
        images.append({"id": i, "file_name": f"{i}.png", "width": 300, "height": 300})
        for b in boxes:
            b, cat = (b, 1) if isinstance(b[0], (int, float)) else b
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": b,
                         "area": b[2] * b[3], "iscrowd": 0})
    path = tmp_path / name
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": c, "name": n} for c, n in categories]}))
    return path


def _det(image_id, bbox, score, category_id=1):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def test_names():
    assert METRIC_NAMES == ("mAP", "AP50", "AP75", "APs", "APm", "APl",
                            "AR1", "AR10", "mAR", "ARs", "ARm", "ARl")
    assert TABLE1_METRICS == ("mAP", "AP50", "AP75", "APs", "APm", "APl",
                              "mAR", "ARs", "ARm", "ARl")


def test_perfect_detections(tmp_path):
    gt = _gt(tmp_path, [[[10, 10, 20, 20]], [[50, 50, 50, 50]]])  # one small, one medium
    m = evaluate_detections(gt, [_det(1, [10, 10, 20, 20], 0.9), _det(2, [50, 50, 50, 50], 0.8)])
    assert list(m) == list(METRIC_NAMES)
    assert m["mAP"] == pytest.approx(1.0) and m["mAR"] == pytest.approx(1.0)
    assert m["APs"] == pytest.approx(1.0) and m["APm"] == pytest.approx(1.0)
    assert m["APl"] is None and m["ARl"] is None  # no large ship in the ground truth


def test_gt_path_or_coco_object(tmp_path):
    gt = _gt(tmp_path, [[[10, 10, 20, 20]]])
    dets = [_det(1, [10, 10, 20, 20], 0.9)]
    assert evaluate_detections(COCO(str(gt)), dets) == evaluate_detections(str(gt), dets)


def test_one_of_two_found(tmp_path):
    # one TP, second GT missed: precision 1 at recall 0.5, nothing beyond.
    # thresholds r = 0.00..0.50 (51 of 101) get precision 1, r > 0.5 get 0 -> AP = 51/101
    gt = _gt(tmp_path, [[[10, 10, 20, 20]], [[50, 50, 20, 20]]])
    m = evaluate_detections(gt, [_det(1, [10, 10, 20, 20], 0.9)])
    assert m["AP50"] == pytest.approx(51 / 101) and m["mAP"] == pytest.approx(51 / 101)
    assert m["AR1"] == pytest.approx(0.5) and m["mAR"] == pytest.approx(0.5)


def test_false_positive_ranked_first(tmp_path):
    # ranks: FP (0.9) then TP (0.8) -> precision 0, 0.5 at recall 0, 1; the interpolated
    # precision is 0.5 at every recall threshold, so AP = 0.5
    gt = _gt(tmp_path, [[[10, 10, 20, 20]]])
    m = evaluate_detections(gt, [_det(1, [200, 200, 20, 20], 0.9), _det(1, [10, 10, 20, 20], 0.8)])
    assert m["AP50"] == pytest.approx(0.5) and m["mAP"] == pytest.approx(0.5)
    assert m["mAR"] == pytest.approx(1.0)
    assert m["AR1"] == pytest.approx(0.0)  # the single top detection is the false one


def test_false_positive_between_true_positives(tmp_path):
    # two GT on one image; ranks TP (0.9), FP (0.8), TP (0.7):
    #   precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> interpolated 1, 2/3, 2/3
    #   r = 0.00..0.50 (51 thresholds) -> 1; r = 0.51..1.00 (50) -> 2/3
    #   AP = (51 + 50 * 2/3) / 101 = 253/303
    gt = _gt(tmp_path, [[[10, 10, 20, 20], [100, 100, 20, 20]]])
    m = evaluate_detections(gt, [_det(1, [10, 10, 20, 20], 0.9), _det(1, [200, 200, 20, 20], 0.8),
                                 _det(1, [100, 100, 20, 20], 0.7)])
    assert m["AP50"] == pytest.approx(253 / 303) and m["mAP"] == pytest.approx(253 / 303)
    assert m["AR1"] == pytest.approx(0.5)  # maxDets is per image: only the top one counts
    assert m["AR10"] == pytest.approx(1.0) and m["mAR"] == pytest.approx(1.0)


def test_iou_between_thresholds(tmp_path):
    # IoU = (100*58) / (100*100) = 0.58: a hit at IoU 0.50 and 0.55 only -> mAP = 2/10
    gt = _gt(tmp_path, [[[0, 0, 100, 100]]])  # area 10000 >= 96^2: large
    m = evaluate_detections(gt, [_det(1, [0, 0, 100, 58], 0.9)])
    assert m["AP50"] == pytest.approx(1.0) and m["AP75"] == pytest.approx(0.0)
    assert m["mAP"] == pytest.approx(0.2) and m["APl"] == pytest.approx(0.2)
    assert m["mAR"] == pytest.approx(0.2)
    assert m["APs"] is None and m["APm"] is None


def test_size_buckets(tmp_path):
    # small (area 400), medium (2500), large (14400); small and large found exactly.
    # per bucket: APs = APl = 1, APm = 0 (the other detections match GT ignored there).
    # all sizes: precision 1 up to recall 2/3 -> r = 0.00..0.66 (67 thresholds) -> 67/101
    gt = _gt(tmp_path, [[[0, 0, 20, 20], [50, 50, 50, 50], [150, 150, 120, 120]]])
    m = evaluate_detections(gt, [_det(1, [0, 0, 20, 20], 0.9), _det(1, [150, 150, 120, 120], 0.8)])
    assert (m["APs"], m["APm"], m["APl"]) == pytest.approx((1.0, 0.0, 1.0))
    assert (m["ARs"], m["ARm"], m["ARl"]) == pytest.approx((1.0, 0.0, 1.0))
    assert m["mAP"] == pytest.approx(67 / 101) and m["mAR"] == pytest.approx(2 / 3)

    # no medium GT: the medium bucket is undefined (pycocotools -1) -> None
    gt = _gt(tmp_path, [[[0, 0, 20, 20], [150, 150, 120, 120]]], name="gt2.json")
    m = evaluate_detections(gt, [_det(1, [0, 0, 20, 20], 0.9), _det(1, [150, 150, 120, 120], 0.8)])
    assert m["APm"] is None and m["ARm"] is None
    assert m["APs"] == pytest.approx(1.0) and m["APl"] == pytest.approx(1.0)


def test_matches_pycocotools_directly(tmp_path):
    gt = _gt(tmp_path, [[[10, 10, 20, 20], [100, 100, 60, 40]], [[50, 50, 120, 110]]])
    dets = [_det(1, [11, 10, 20, 21], 0.9), _det(1, [100, 104, 60, 40], 0.7),
            _det(2, [40, 50, 120, 100], 0.6), _det(2, [0, 0, 10, 10], 0.95),
            _det(1, [12, 14, 18, 20], 0.3)]
    ours = evaluate_detections(gt, dets)
    coco = COCO(str(gt))
    ev = COCOeval(coco, coco.loadRes([dict(d) for d in dets]), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert [-1 if ours[k] is None else ours[k] for k in METRIC_NAMES] == \
        pytest.approx(list(ev.stats))
    # spot-check the naming against pycocotools' documented stats layout
    assert ours["mAP"] == pytest.approx(ev.stats[0]) and ours["AP75"] == pytest.approx(ev.stats[2])
    assert ours["mAR"] == pytest.approx(ev.stats[8]) and ours["ARs"] == pytest.approx(ev.stats[9])


def test_empty_detections(tmp_path):
    gt = _gt(tmp_path, [[[10, 10, 20, 20]], []])
    m = evaluate_detections(gt, [])
    assert {k: v for k, v in m.items() if v is not None} == {
        k: 0.0 for k in ("mAP", "AP50", "AP75", "APs", "AR1", "AR10", "mAR", "ARs")}
    # no ground truth at all: nothing is defined
    empty = _gt(tmp_path, [[]], name="empty.json")
    assert evaluate_detections(empty, []) == dict.fromkeys(METRIC_NAMES)


def test_bad_input(tmp_path):
    gt = _gt(tmp_path, [[[10, 10, 20, 20]]])
    with pytest.raises(ValueError, match="image_id 7 is not in the ground truth"):
        evaluate_detections(gt, [_det(7, [0, 0, 1, 1], 0.5)])
    with pytest.raises(ValueError, match="negative width or height"):
        evaluate_detections(gt, [_det(1, [0, 0, -1, 1], 0.5)])
    with pytest.raises(ValueError, match="category_id 2 is not in the ground truth"):
        evaluate_detections(gt, [_det(1, [0, 0, 1, 1], 0.5, category_id=2)])
    with pytest.raises(ValueError, match=r"missing key\(s\) \['score'\]"):
        evaluate_detections(gt, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}])
    with pytest.raises(ValueError, match="not 4 finite numbers"):
        evaluate_detections(gt, [_det(1, [0, 0, 1], 0.5)])
    with pytest.raises(FileNotFoundError, match="ground-truth annotation file not found"):
        evaluate_detections(tmp_path / "none.json", [])


def test_quiet_by_default(tmp_path, capsys):
    gt = _gt(tmp_path, [[[10, 10, 20, 20]]])
    evaluate_detections(gt, [_det(1, [10, 10, 20, 20], 0.9)])
    assert capsys.readouterr().out == ""
    evaluate_detections(gt, [_det(1, [10, 10, 20, 20], 0.9)], verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_write_metrics_json_is_atomic(tmp_path):
    out = tmp_path / "m" / "x.json"
    write_metrics_json(out, {"mAP": 0.5, "APl": None}, extra={"role": "teacher"})
    payload = {"metrics": {"mAP": 0.5, "APl": None}, "role": "teacher"}
    assert json.loads(out.read_text()) == payload
    assert out.read_text() == json.dumps(payload, indent=2, sort_keys=True) + "\n"
    assert [p.name for p in out.parent.iterdir()] == ["x.json"]  # no temp file left
    # a failed write leaves the previous file untouched and no temp file behind
    with pytest.raises(TypeError):
        write_metrics_json(out, {"mAP": object()})
    assert json.loads(out.read_text()) == payload
    assert [p.name for p in out.parent.iterdir()] == ["x.json"]


def _sample(img_id, boxes, scores, labels):
    return {"img_id": img_id,
            "pred_instances": {"bboxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                               "scores": torch.tensor(scores, dtype=torch.float32),
                               "labels": torch.tensor(labels, dtype=torch.long)}}


def test_metric_converts_mmdet_predictions(tmp_path):
    # category ids 7 and 3: labels index the sorted ids [3, 7] -> label 0 = 3, label 1 = 7
    gt = _gt(tmp_path, [[([10, 10, 20, 20], 7)], [([50, 50, 20, 30], 3)]],
             categories=((7, "tanker"), (3, "cargo")))
    metric = SARCocoMetric(ann_file=str(gt))
    metric.process({}, [_sample(1, [[10, 10, 30, 30]], [0.9], [1]),
                        _sample(2, [[50, 50, 70, 80]], [0.8], [0])])
    assert metric.results == [
        [{"image_id": 1, "category_id": 7, "bbox": [10.0, 10.0, 20.0, 20.0],
          "score": pytest.approx(0.9)}],
        [{"image_id": 2, "category_id": 3, "bbox": [50.0, 50.0, 20.0, 30.0],
          "score": pytest.approx(0.8)}]]
    out = metric.evaluate(size=2)
    assert out["coco/mAP"] == pytest.approx(1.0) and out["coco/mAR"] == pytest.approx(1.0)
    assert "coco/APl" not in out  # undefined values are left out for mmengine's logger
    assert all(isinstance(v, float) for v in out.values())


def test_metric_keeps_all_detections_of_all_images(tmp_path):
    # more detections than images: mmengine truncates results to `size` entries, so the
    # metric must store one entry per image (else the 2nd TP below would be dropped)
    gt = _gt(tmp_path, [[[10, 10, 20, 20], [100, 100, 20, 20]], [[50, 50, 20, 20]]])
    metric = SARCocoMetric(ann_file=str(gt))
    metric.process({}, [_sample(1, [[200, 200, 220, 220], [10, 10, 30, 30], [100, 100, 120, 120]],
                                [0.9, 0.8, 0.7], [0, 0, 0])])
    metric.process({}, [_sample(2, [], [], [])])  # an image without predictions
    out = metric.evaluate(size=2)
    # ranks FP, TP, TP over 3 GT: precision 0, 1/2, 2/3 at recall 0, 1/3, 2/3 ->
    # interpolated 2/3 for r = 0.00..0.66 (67 thresholds), 0 beyond -> AP = (2/3)*67/101
    assert out["coco/AP50"] == pytest.approx(2 / 3 * 67 / 101)
    assert out["coco/mAR"] == pytest.approx(2 / 3)
    assert metric.results == []  # evaluate() resets the state


def test_metric_rejects_label_outside_categories(tmp_path):
    gt = _gt(tmp_path, [[[10, 10, 20, 20]]])
    metric = SARCocoMetric(ann_file=str(gt))
    with pytest.raises(ValueError, match="label 1 outside the 1 categories"):
        metric.process({}, [_sample(1, [[10, 10, 30, 30]], [0.9], [1])])


def test_metric_module_does_not_import_mmdet():
    code = ("import sys, dipkd.evaluation.metric as m; "
            "assert m.SARCocoMetric.default_prefix == 'coco'; "
            "assert 'mmdet' not in sys.modules, 'mmdet imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_register_metric_in_mmdet(tmp_path):
    registry = pytest.importorskip("mmdet.registry")
    register_metric()
    register_metric()  # idempotent
    cls = registry.METRICS.get("SARCocoMetric")
    assert cls is not None and cls.__name__ == "SARCocoMetric"
    gt = _gt(tmp_path, [[[10, 10, 20, 20]]])
    metric = registry.METRICS.build(dict(type="SARCocoMetric", ann_file=str(gt)))
    assert metric.prefix == "coco"
