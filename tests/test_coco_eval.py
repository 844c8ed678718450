"""pycocotools evaluation wrapper and the mmengine metric, on hand-made cases."""
import json

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from dipkd.evaluation.coco_eval import METRIC_NAMES, evaluate_detections, write_metrics_json
from dipkd.evaluation.metric import SARCocoMetric


def _gt(tmp_path, boxes_per_image, sizes=None):
    images, anns = [], []
    for i, boxes in enumerate(boxes_per_image, start=1):
        images.append({"id": i, "file_name": f"{i}.png", "width": 300, "height": 300})
        for b in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "bbox": b,
                         "area": b[2] * b[3], "iscrowd": 0})
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "ship"}]}))
    return path


def _det(image_id, bbox, score):
    return {"image_id": image_id, "category_id": 1, "bbox": bbox, "score": score}


def test_perfect_detections(tmp_path):
    gt = _gt(tmp_path, [[[10, 10, 20, 20]], [[50, 50, 50, 50]]])
    m = evaluate_detections(gt, [_det(1, [10, 10, 20, 20], 0.9), _det(2, [50, 50, 50, 50], 0.8)])
    assert m["mAP"] == pytest.approx(1.0) and m["mAR"] == pytest.approx(1.0)
    assert m["APs"] == pytest.approx(1.0) and m["APm"] == pytest.approx(1.0)
    assert m["APl"] is None and m["ARl"] is None  # no large ship in the ground truth


def test_one_of_two_found(tmp_path):
    # precision 1 up to recall 0.5, nothing beyond: the 101-point interpolation gives 51/101
    gt = _gt(tmp_path, [[[10, 10, 20, 20]], [[50, 50, 20, 20]]])
    m = evaluate_detections(gt, [_det(1, [10, 10, 20, 20], 0.9)])
    assert m["AP50"] == pytest.approx(51 / 101) and m["mAP"] == pytest.approx(51 / 101)
    assert m["mAR"] == pytest.approx(0.5)


def test_false_positive_ranked_first(tmp_path):
    # ranks: FP (0.9) then TP (0.8) -> precision 0.5 at recall 1; the interpolated
    # precision is 0.5 at every recall threshold, so AP = 0.5
    gt = _gt(tmp_path, [[[10, 10, 20, 20]]])
    m = evaluate_detections(gt, [_det(1, [200, 200, 20, 20], 0.9), _det(1, [10, 10, 20, 20], 0.8)])
    assert m["AP50"] == pytest.approx(0.5) and m["mAR"] == pytest.approx(1.0)
    assert m["AR1"] == pytest.approx(0.0)  # the single top detection is the false one


def test_iou_between_thresholds(tmp_path):
    # IoU = 5800/10000 = 0.58: a hit at IoU 0.50 and 0.55 only -> mAP = 2/10
    gt = _gt(tmp_path, [[[0, 0, 100, 100]]])
    m = evaluate_detections(gt, [_det(1, [0, 0, 100, 58], 0.9)])
    assert m["AP50"] == pytest.approx(1.0) and m["AP75"] == pytest.approx(0.0)
    assert m["mAP"] == pytest.approx(0.2) and m["APl"] == pytest.approx(0.2)
    assert m["APs"] is None and m["APm"] is None


def test_matches_pycocotools_order(tmp_path):
    gt = _gt(tmp_path, [[[10, 10, 20, 20], [100, 100, 60, 40]], [[50, 50, 120, 110]]])
    dets = [_det(1, [11, 10, 20, 21], 0.9), _det(1, [100, 104, 60, 40], 0.7),
            _det(2, [40, 50, 120, 100], 0.6), _det(2, [0, 0, 10, 10], 0.95)]
    ours = evaluate_detections(gt, dets)
    coco = COCO(str(gt))
    ev = COCOeval(coco, coco.loadRes(dets), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert [ours[k] if ours[k] is not None else -1 for k in METRIC_NAMES] == \
        pytest.approx(list(ev.stats))


def test_empty_detections_and_bad_input(tmp_path):
    gt = _gt(tmp_path, [[[10, 10, 20, 20]]])
    m = evaluate_detections(gt, [])
    assert m["mAP"] == 0.0 and m["mAR"] == 0.0 and m["APl"] is None
    with pytest.raises(ValueError, match="image_id 7 is not in the ground truth"):
        evaluate_detections(gt, [_det(7, [0, 0, 1, 1], 0.5)])
    with pytest.raises(ValueError, match="negative width or height"):
        evaluate_detections(gt, [_det(1, [0, 0, -1, 1], 0.5)])
    with pytest.raises(FileNotFoundError, match="ground-truth annotation file not found"):
        evaluate_detections(tmp_path / "none.json", [])


def test_write_metrics_json_is_atomic(tmp_path):
    out = tmp_path / "m" / "x.json"
    write_metrics_json(out, {"mAP": 0.5, "APl": None}, extra={"role": "teacher"})
    assert json.loads(out.read_text()) == {"metrics": {"mAP": 0.5, "APl": None},
                                           "role": "teacher"}
    assert [p.name for p in out.parent.iterdir()] == ["x.json"]


def test_metric_converts_mmdet_predictions(tmp_path):
    gt = _gt(tmp_path, [[[10, 10, 20, 20]], [[50, 50, 20, 20]]])
    metric = SARCocoMetric(ann_file=str(gt))
    samples = [{"img_id": 1, "pred_instances": {"bboxes": torch.tensor([[10., 10., 30., 30.]]),
                                                "scores": torch.tensor([0.9]),
                                                "labels": torch.tensor([0])}},
               {"img_id": 2, "pred_instances": {"bboxes": torch.zeros((0, 4)),
                                                "scores": torch.zeros(0),
                                                "labels": torch.zeros(0, dtype=torch.long)}}]
    metric.process({}, samples)
    assert metric.results == [{"image_id": 1, "category_id": 1, "bbox": [10.0, 10.0, 20.0, 20.0],
                               "score": pytest.approx(0.9)}]
    out = metric.evaluate(size=2)
    assert out["coco/AP50"] == pytest.approx(51 / 101)
    assert "coco/APl" not in out  # undefined values are left out for mmengine's logger
