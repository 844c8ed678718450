"""Detectors by name (dipkd/models/detectors.py::DETECTORS): builder, display name, mmdet
type and dense head in one entry, read by params validation, the tables and the distiller."""
from mmdet.registry import MODELS
from mmengine.config import ConfigDict
from mmdet.utils import register_all_modules

from dipkd.config.params import DETECTORS as VALID_NAMES
from dipkd.config.params import run_spec
from dipkd.distill.distiller import dense_head
from dipkd.models.detectors import DETECTORS, detector_cfg, display_name


def test_each_entry_builds_its_type_and_names_its_dense_head(params):
    register_all_modules()
    assert set(VALID_NAMES) == set(DETECTORS) == set(params["detectors"])
    for name, entry in DETECTORS.items():
        spec = run_spec(params, "student", "ssdd", name)
        cfg = detector_cfg(name, 18, False, spec.model)
        assert cfg["type"] == entry.mmdet_type
        model = MODELS.build(ConfigDict(cfg))
        assert dense_head(model) is getattr(model, entry.dense_head)
    assert display_name("faster_rcnn") == "Faster R-CNN" and display_name("yolo") == "yolo"


def test_faster_rcnn_tests_with_mmdets_proposal_count_in_the_paper_profile(params):
    """mmdet's faster-rcnn_r50_fpn.py: 2000 RPN boxes before NMS in training, 1000 at test;
    the CPU profiles use their one count for both."""
    paper = dict(params, profile="paper")
    cfg = detector_cfg("faster_rcnn", 18, False,
                       run_spec(paper, "student", "ssdd", "faster_rcnn").model)
    assert cfg["train_cfg"]["rpn_proposal"]["nms_pre"] == 2000
    assert cfg["test_cfg"]["rpn"]["nms_pre"] == 1000
    smoke = run_spec(dict(params, profile="smoke"), "student", "ssdd", "faster_rcnn").model
    cfg = detector_cfg("faster_rcnn", 18, False, smoke)
    assert cfg["test_cfg"]["rpn"]["nms_pre"] == cfg["train_cfg"]["rpn_proposal"]["nms_pre"] == 200
