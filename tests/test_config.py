"""Configs built from params.yaml: the right model, data, schedule; mmdet builds them."""
import pytest
import torch

from dipkd.mmdet_config import _milestones, build_config
from dipkd.config.params import run_spec
from dipkd.models.detectors import detector_cfg


@pytest.mark.parametrize("detector", ["faster_rcnn", "retinanet"])
@pytest.mark.parametrize("role,depth,in_channels", [("teacher", 50, [256, 512, 1024, 2048]),
                                                    ("student", 18, [64, 128, 256, 512])])
def test_model_matches_role_and_detector(params, detector, role, depth, in_channels):
    cfg = build_config(run_spec(params, role, "ssdd", detector))
    assert cfg.model.backbone.depth == depth
    assert cfg.model.neck.in_channels == in_channels
    head = cfg.model.roi_head.bbox_head if detector == "faster_rcnn" else cfg.model.bbox_head
    assert head.num_classes == 1
    assert "init_cfg" not in cfg.model.backbone  # smoke profile: random init, no download
    assert cfg.model.backbone.frozen_stages == -1 and cfg.model.backbone.norm_eval is False


def test_paper_profile_uses_the_authors_settings(params):
    params["profile"] = "paper"
    cfg = build_config(run_spec(params, "teacher", "ssdd", "retinanet"))
    assert cfg.train_cfg.max_epochs == 36
    assert cfg.optim_wrapper.optimizer.lr == 0.0018
    assert cfg.train_dataloader.batch_size == 8
    assert cfg.train_dataloader.dataset.pipeline[2]["scale"] == (512, 512)
    assert cfg.model.backbone.init_cfg.checkpoint == "torchvision://resnet50"
    assert cfg.model.backbone.frozen_stages == 1 and cfg.model.backbone.norm_eval is True
    frcnn = build_config(run_spec(params, "student", "hrsid", "faster_rcnn"))
    assert frcnn.train_dataloader.dataset.pipeline[2]["scale"] == (1200, 800)
    assert frcnn.model.train_cfg.rpn_proposal.max_per_img == 1000
    assert frcnn.param_scheduler[1]["milestones"] == [16, 20]  # Mok-kn/Dip lr_config.step
    assert cfg.param_scheduler[1]["milestones"] == [16, 20, 24]
    assert cfg.param_scheduler[0]["start_factor"] == 0.001 and cfg.param_scheduler[0]["end"] == 500


def test_data_and_evaluation_point_at_the_common_layout(params):
    cfg = build_config(run_spec(params, "student", "hrsid", "faster_rcnn"))
    ds = cfg.train_dataloader.dataset
    assert (ds.data_root, ds.ann_file, ds.data_prefix["img"]) == (
        "data/hrsid", "annotations/train.json", "images/train/")
    assert cfg.test_dataloader.dataset.ann_file == "annotations/test.json"
    assert cfg.test_evaluator == dict(type="SARCocoMetric",
                                      ann_file="data/hrsid/annotations/test.json")
    assert cfg.randomness == dict(seed=0, deterministic=True)
    assert cfg.work_dir == "runs/student/hrsid-faster_rcnn-seed0"


def test_milestones_follow_the_1x_shape():
    assert _milestones(12) == [8, 11]
    assert _milestones(36) == [24, 33]
    assert _milestones(1) == [1]


@pytest.mark.parametrize("milestones", [None, [3], [1, 2, 5]])
def test_multisteplr_uses_the_params_milestones_else_the_rule(params, milestones):
    entry = params["profiles"]["smoke"]["schedule"]["retinanet"]["hrsid"]
    entry["epochs"] = 6
    if milestones is not None:
        entry["milestones"] = milestones
    cfg = build_config(run_spec(params, "student", "hrsid", "retinanet"))
    step = cfg.param_scheduler[1]
    assert step["type"] == "MultiStepLR" and step["gamma"] == 0.1 and step["end"] == 6
    assert step["milestones"] == (milestones if milestones is not None else [4, 6])
    assert _milestones(6) == [4, 6]


def test_clip_grad_reaches_the_optim_wrapper_only_when_set(params):
    cfg = build_config(run_spec(params, "student", "ssdd", "faster_rcnn"))
    assert "clip_grad" not in cfg.optim_wrapper   # the authors' grad_clip=None
    params["profiles"]["smoke"]["train"]["clip_grad"] = 10
    cfg = build_config(run_spec(params, "student", "ssdd", "faster_rcnn"))
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=10.0, norm_type=2)


def test_unknown_detector_is_refused():
    with pytest.raises(ValueError, match="unknown detector 'yolo'; valid: faster_rcnn, retinanet"):
        detector_cfg("yolo", 18, False, None)


@pytest.mark.parametrize("detector", ["faster_rcnn", "retinanet"])
def test_mmdet_builds_and_runs_the_student(params, detector):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = build_config(run_spec(params, "student", "ssdd", detector))
    model = MODELS.build(cfg.model)
    model.init_weights()
    feats = model.extract_feat(torch.randn(1, 3, 64, 96))
    assert len(feats) == 5 and all(f.shape[1] == 256 for f in feats)
    assert feats[0].shape[-2:] == ((16, 24) if detector == "faster_rcnn" else (8, 12))
