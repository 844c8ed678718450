"""mmdet 3.x model dicts for the paper's detectors: Faster R-CNN and RetinaNet on a
ResNet-FPN (ResNet50 teacher, ResNet18 student), one class (``ship``).

The dicts follow mmdet's own ``faster-rcnn_r50_fpn`` and ``retinanet_r50_fpn`` base configs;
only the class count, the backbone depth and (for CPU profiles) the proposal counts change.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:      # config.params imports this module (DETECTORS)
    from ..config.params import ModelSettings

RESNET_OUT_CHANNELS = {18: [64, 128, 256, 512], 34: [64, 128, 256, 512],
                       50: [256, 512, 1024, 2048], 101: [256, 512, 1024, 2048]}
FPN_CHANNELS = 256
# SAR amplitude images are grey; they are loaded as 3 identical channels and normalised
# with the ImageNet statistics the pretrained backbones expect.
DATA_PREPROCESSOR = dict(type="DetDataPreprocessor", mean=[123.675, 116.28, 103.53],
                         std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32)


def backbone_cfg(depth: int, pretrained: bool) -> dict:
    """ResNet backbone. With ImageNet weights: mmdet's defaults (stem and first stage frozen,
    BN statistics frozen). From random initialisation (offline profiles) nothing is frozen
    and BN statistics are learnt, since frozen random layers would stay random."""
    cfg = dict(type="ResNet", depth=depth, num_stages=4, out_indices=(0, 1, 2, 3),
               frozen_stages=1 if pretrained else -1,
               norm_cfg=dict(type="BN", requires_grad=True), norm_eval=pretrained,
               style="pytorch")
    if pretrained:
        cfg["init_cfg"] = dict(type="Pretrained", checkpoint=f"torchvision://resnet{depth}")
    return cfg


def _coder(stds):
    return dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=stds)


def faster_rcnn_cfg(depth: int, pretrained: bool, model: ModelSettings,
                    num_classes: int = 1) -> dict:
    """Faster R-CNN R-FPN (mmdet ``faster-rcnn_r50_fpn``) with ``model`` proposal counts."""
    nms07 = dict(type="nms", iou_threshold=0.7)
    return dict(
        type="FasterRCNN",
        data_preprocessor=dict(DATA_PREPROCESSOR),
        backbone=backbone_cfg(depth, pretrained),
        neck=dict(type="FPN", in_channels=RESNET_OUT_CHANNELS[depth],
                  out_channels=FPN_CHANNELS, num_outs=5),
        rpn_head=dict(
            type="RPNHead", in_channels=FPN_CHANNELS, feat_channels=FPN_CHANNELS,
            anchor_generator=dict(type="AnchorGenerator", scales=[8], ratios=[0.5, 1.0, 2.0],
                                  strides=[4, 8, 16, 32, 64]),
            bbox_coder=_coder([1.0] * 4),
            loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
            loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
        roi_head=dict(
            type="StandardRoIHead",
            bbox_roi_extractor=dict(type="SingleRoIExtractor",
                                    roi_layer=dict(type="RoIAlign", output_size=7,
                                                   sampling_ratio=0),
                                    out_channels=FPN_CHANNELS, featmap_strides=[4, 8, 16, 32]),
            bbox_head=dict(type="Shared2FCBBoxHead", in_channels=FPN_CHANNELS,
                           fc_out_channels=1024, roi_feat_size=7, num_classes=num_classes,
                           bbox_coder=_coder([0.1, 0.1, 0.2, 0.2]), reg_class_agnostic=False,
                           loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False,
                                         loss_weight=1.0),
                           loss_bbox=dict(type="L1Loss", loss_weight=1.0))),
        train_cfg=dict(
            rpn=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.7, neg_iou_thr=0.3,
                                   min_pos_iou=0.3, match_low_quality=True, ignore_iof_thr=-1),
                     sampler=dict(type="RandomSampler", num=256, pos_fraction=0.5,
                                  neg_pos_ub=-1, add_gt_as_proposals=False),
                     allowed_border=-1, pos_weight=-1, debug=False),
            rpn_proposal=dict(nms_pre=model.rpn_nms_pre, max_per_img=model.rpn_proposals,
                              nms=nms07, min_bbox_size=0),
            rcnn=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.5,
                                    min_pos_iou=0.5, match_low_quality=False, ignore_iof_thr=-1),
                      sampler=dict(type="RandomSampler", num=model.rcnn_samples,
                                   pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True),
                      pos_weight=-1, debug=False)),
        test_cfg=dict(
            rpn=dict(nms_pre=model.test_nms_pre, max_per_img=model.rpn_proposals,
                     nms=nms07, min_bbox_size=0),
            rcnn=dict(score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5),
                      max_per_img=100)))


def retinanet_cfg(depth: int, pretrained: bool, model: ModelSettings,
                  num_classes: int = 1) -> dict:
    """RetinaNet R-FPN (mmdet ``retinanet_r50_fpn``)."""
    return dict(
        type="RetinaNet",
        data_preprocessor=dict(DATA_PREPROCESSOR),
        backbone=backbone_cfg(depth, pretrained),
        neck=dict(type="FPN", in_channels=RESNET_OUT_CHANNELS[depth],
                  out_channels=FPN_CHANNELS, start_level=1, add_extra_convs="on_input",
                  num_outs=5),
        bbox_head=dict(
            type="RetinaHead", num_classes=num_classes, in_channels=FPN_CHANNELS,
            stacked_convs=4, feat_channels=FPN_CHANNELS,
            anchor_generator=dict(type="AnchorGenerator", octave_base_scale=4,
                                  scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                  strides=[8, 16, 32, 64, 128]),
            bbox_coder=_coder([1.0] * 4),
            loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25,
                          loss_weight=1.0),
            loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
        train_cfg=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4,
                                     min_pos_iou=0, ignore_iof_thr=-1),
                       sampler=dict(type="PseudoSampler"), allowed_border=-1, pos_weight=-1,
                       debug=False),
        test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                      nms=dict(type="nms", iou_threshold=0.5), max_per_img=100))


@dataclass(frozen=True)
class Detector:
    """A detector of the pipeline, found by its params.yaml name."""

    name: str               # params.yaml `detectors` entry, stage names, paths
    display_name: str       # in the tables
    build: Callable[..., dict]   # (depth, pretrained, model params, num_classes) -> model dict
    mmdet_type: str         # the model dict's ``type``
    dense_head: str         # the built model's head that runs densely on the FPN levels
                            # (the distiller hooks it for RIT, FRS, ARSD, IFKD)


# The one place a detector is described: a new one is its builder above and an entry here
# (and its schedule entries in params.yaml).
DETECTORS: dict[str, Detector] = {d.name: d for d in (
    Detector("faster_rcnn", "Faster R-CNN", faster_rcnn_cfg, "FasterRCNN", "rpn_head"),
    Detector("retinanet", "RetinaNet", retinanet_cfg, "RetinaNet", "bbox_head"),
)}


def detector_cfg(detector: str, depth: int, pretrained: bool, model: ModelSettings,
                 num_classes: int = 1) -> dict:
    """The mmdet model dict of ``detector`` (one of :data:`DETECTORS`)."""
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; valid: {', '.join(DETECTORS)}")
    return DETECTORS[detector].build(depth, pretrained, model, num_classes)


def dense_head_name(model) -> str:
    """The attribute of a built detector (an ``nn.Module``) holding its dense head."""
    for entry in DETECTORS.values():
        if type(model).__name__ == entry.mmdet_type:
            return entry.dense_head
    raise ValueError(f"no dense head known for a {type(model).__name__}; detectors: "
                     f"{', '.join(d.mmdet_type for d in DETECTORS.values())}")


def display_name(detector: str) -> str:
    """The tables' name of ``detector`` (the name itself if unknown)."""
    return DETECTORS[detector].display_name if detector in DETECTORS else detector
