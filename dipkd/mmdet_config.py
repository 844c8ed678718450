"""Build the complete mmengine/mmdet config of one run from a :class:`RunSpec`.

No config file is hand-edited per run: everything comes from params.yaml through here.
"""
from __future__ import annotations

import inspect
import itertools
from pathlib import Path

from mmengine.config import Config

from .config.params import RunSpec, Schedule, TrainSettings
from .models.cpu_bf16 import HOOK_TYPE as CPU_BF16_HOOK_TYPE
from .models.detectors import detector_cfg
from .rng_state import VALIDATION_HOOK_TYPE

CLASSES = ("ship",)


def _pipelines(scale: tuple[int, int]):
    train = [dict(type="LoadImageFromFile"),
             dict(type="LoadAnnotations", with_bbox=True),
             dict(type="Resize", scale=scale, keep_ratio=True),
             dict(type="RandomFlip", prob=0.5),
             dict(type="PackDetInputs")]
    test = [dict(type="LoadImageFromFile"),
            dict(type="Resize", scale=scale, keep_ratio=True),
            dict(type="LoadAnnotations", with_bbox=True),
            dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape",
                                                  "img_shape", "scale_factor"))]
    return train, test


def _dataset(root: Path, split: str, pipeline, test_mode: bool, workers: int) -> dict:
    """mmdet's ``CocoDataset`` of one split. ``serialize_data`` only with dataloader
    workers: mmengine packs the annotations into one numpy buffer so that worker processes
    share it without copy-on-read, and calls ``gc.collect()`` to do it, which costs most of a
    second per dataset in a process that has imported torch, mmdet and MLflow; with
    ``workers: 0`` (the CPU profiles) there is nothing to share. The samples and their order
    are the same either way."""
    return dict(type="CocoDataset", data_root=str(root), metainfo=dict(classes=CLASSES),
                ann_file=f"annotations/{split}.json", data_prefix=dict(img=f"images/{split}/"),
                filter_cfg=None if test_mode else dict(filter_empty_gt=True, min_size=0),
                test_mode=test_mode, pipeline=pipeline, serialize_data=workers > 0)


def _milestones(epochs: int) -> list[int]:
    """The default lr steps when a schedule entry of params.yaml gives no ``milestones``:
    mmdet's 1x shape, x0.1 at 8/12 and 11/12 of training ([16, 22] of 24 epochs). The
    ``paper`` profile gives the authors' ``lr_config.step`` explicitly instead."""
    return sorted({max(1, round(epochs * 8 / 12)), max(1, round(epochs * 11 / 12))})


def _optim_wrapper(sch: Schedule, tr: TrainSettings) -> dict:
    """SGD as in the authors' configs (``grad_clip=None`` there). ``train.clip_grad`` (a
    CPU-profile option, absent in the paper profile) clips the gradient's L2 norm: a from-
    scratch R50 at batch 4 and lr 0.02 diverged to NaN here within 3 epochs without it."""
    wrapper = dict(type="OptimWrapper",
                   optimizer=dict(type="SGD", lr=sch.lr, momentum=tr.momentum,
                                  weight_decay=tr.weight_decay))
    if tr.clip_grad is not None:
        wrapper["clip_grad"] = dict(max_norm=tr.clip_grad, norm_type=2)
    return wrapper


def build_config(spec: RunSpec, *, vis_backends: list[dict] | None = None,
                 deterministic: bool = True) -> Config:
    """The mmengine ``Config`` that trains and tests ``spec`` in ``spec.work_dir``."""
    tr, sch = spec.train, spec.schedule
    train_pipe, test_pipe = _pipelines(sch.scale)
    root = spec.dataset.root
    workers = tr.workers
    loader_common = dict(num_workers=workers, persistent_workers=workers > 0)
    test_loader = dict(batch_size=1, drop_last=False,
                       sampler=dict(type="DefaultSampler", shuffle=False),
                       dataset=_dataset(root, "test", test_pipe, True, workers), **loader_common)
    evaluator = dict(type="SARCocoMetric", ann_file=str(root / "annotations" / "test.json"))
    epochs = sch.epochs
    cfg = dict(
        default_scope="mmdet",
        custom_imports=dict(imports=["dipkd.mmdet_plugins"], allow_failed_imports=False),
        model=detector_cfg(spec.detector, spec.depth, tr.pretrained, spec.model,
                           num_classes=len(CLASSES)),
        train_dataloader=dict(batch_size=tr.batch_size,
                              sampler=dict(type="DefaultSampler", shuffle=True),
                              batch_sampler=dict(type="AspectRatioBatchSampler"),
                              dataset=_dataset(root, "train", train_pipe, False, workers),
                              **loader_common),
        val_dataloader=test_loader,
        test_dataloader=test_loader,
        val_evaluator=evaluator,
        test_evaluator=evaluator,
        train_cfg=dict(type="EpochBasedTrainLoop", max_epochs=epochs,
                       val_interval=tr.val_interval),
        val_cfg=dict(type="ValLoop"),
        test_cfg=dict(type="TestLoop"),
        optim_wrapper=_optim_wrapper(sch, tr),
        param_scheduler=[
            # linear warm-up from 0.001 x lr: warmup_ratio=0.001 in all four of the authors'
            # configs (Mok-kn/Dip configs/*_distill_r18_fpn_{SSDD,HRSID}.py lr_config)
            dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0,
                 end=tr.warmup_iters),
            dict(type="MultiStepLR", begin=0, end=epochs, by_epoch=True,
                 milestones=list(sch.milestones) if sch.milestones is not None
                 else _milestones(epochs),
                 gamma=0.1)],
        default_hooks=dict(
            timer=dict(type="IterTimerHook"),
            logger=dict(type="LoggerHook", interval=tr.log_interval),
            param_scheduler=dict(type="ParamSchedulerHook"),
            # every checkpoint_interval epochs and after the last (save_last): the stage
            # resumes from it after a kill; the smoke profile writes only the last one
            checkpoint=dict(type="CheckpointHook", interval=tr.checkpoint_interval,
                            max_keep_ckpts=2, save_last=True),
            sampler_seed=dict(type="DistSamplerSeedHook"),
            visualization=dict(type="DetVisualizationHook")),
        env_cfg=dict(cudnn_benchmark=False,
                     mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
                     dist_cfg=dict(backend="nccl")),
        vis_backends=vis_backends or [dict(type="LocalVisBackend")],
        visualizer=dict(type="DetLocalVisualizer",
                        vis_backends=vis_backends or [dict(type="LocalVisBackend")],
                        name="visualizer"),
        log_processor=dict(type="LogProcessor", window_size=50, by_epoch=True),
        log_level="INFO",
        load_from=None,
        resume=False,
        randomness=dict(seed=spec.seed, deterministic=deterministic),
        work_dir=str(spec.work_dir),
        auto_scale_lr=dict(enable=False, base_batch_size=16),
    )
    hooks = []
    if tr.isolate_validation_rng:     # validation leaves the generators as it found them
        hooks.append(dict(type=VALIDATION_HOOK_TYPE))
    if tr.cpu_bf16:                   # bfloat16 convolutions and products in training steps
        hooks.append(dict(type=CPU_BF16_HOOK_TYPE))
    if hooks:
        cfg["custom_hooks"] = hooks
    return Config(cfg)


# Method params that configure the distiller, not the loss: which FPN outputs are distilled
# and whether the student inherits the teacher's neck/head weights (FGD's init_student).
DISTILLER_KEYS = ("fpn_levels", "inherit")


def kd_loss_cfg(method: str, method_params: dict) -> dict:
    """The distiller's ``kd_loss`` config dict of a method and its params: ``type`` is the
    registered KD loss the params name (``methods.<name>.type``,
    :mod:`dipkd.kd.methods`), the other params its arguments, except the distiller's own
    keys (:data:`DISTILLER_KEYS`). A loss with per-level blocks (a ``num_levels``
    argument) gets them for FPN levels 0 up to the last distilled one (they are indexed by
    FPN level, :class:`dipkd.kd.feature_kd.FeatureKDLoss`), one with a ``num_classes``
    argument the dataset's classes."""
    from .kd.methods import method_class
    loss_type = method_class(method, {"methods": {method: method_params}}).__name__
    kd_loss = dict(type=loss_type, **{k: v for k, v in method_params.items()
                                      if k not in DISTILLER_KEYS and k != "type"})
    args = _init_args(loss_type)
    if "num_classes" in args:
        kd_loss["num_classes"] = len(CLASSES)
    levels = method_params.get("fpn_levels")
    if levels is not None and "num_levels" in args:
        kd_loss["num_levels"] = max(levels) + 1
    return kd_loss


def _init_args(loss_type: str):
    from . import mmdet_plugins  # noqa: F401  (registers the KD losses)
    from mmdet.registry import MODELS
    cls = MODELS.get(loss_type)
    return inspect.signature(cls.__init__).parameters if cls is not None else {}


def dense_score_channels(model: dict) -> int:
    """Score channels per location of the dense head (RPN / RetinaNet head): anchors x
    classes (sigmoid scores: one per class)."""
    head = model.get("rpn_head") or model["bbox_head"]
    ag = head["anchor_generator"]
    anchors = len(ag["ratios"]) * (len(ag["scales"]) if "scales" in ag
                                   else int(ag["scales_per_octave"]))
    return anchors * int(head.get("num_classes", 1))


def distiller_cfg(student: dict, teacher: dict, method: str, method_params: dict,
                  teacher_ckpt=None) -> dict:
    """The ``FeatureDistiller`` model dict of a method: its KD loss (sized to the student's
    dense head where it has per-anchor blocks), the distilled levels and the inheritance."""
    kd_loss = kd_loss_cfg(method, method_params)
    if "score_channels" in _init_args(kd_loss["type"]):
        kd_loss["score_channels"] = dense_score_channels(student)
    levels = method_params.get("fpn_levels")
    return dict(type="FeatureDistiller", student=student, teacher=teacher, kd_loss=kd_loss,
                teacher_ckpt=None if teacher_ckpt is None else str(teacher_ckpt),
                data_preprocessor=student["data_preprocessor"],
                fpn_levels=None if levels is None else list(levels),
                inherit=bool(method_params.get("inherit", False)))


def build_distill_config(spec: RunSpec, teacher: RunSpec, teacher_ckpt, *,
                         deterministic: bool = True) -> Config:
    """Config of a distillation run: the student of ``spec`` (initialised as the student
    baseline) inside a ``FeatureDistiller`` with the frozen ``teacher`` loaded from
    ``teacher_ckpt`` and the KD loss of ``spec.method``."""
    cfg = build_config(spec, deterministic=deterministic)
    teacher_model = detector_cfg(teacher.detector, teacher.depth, False, teacher.model,
                                 num_classes=len(CLASSES))
    cfg.model = distiller_cfg(cfg.model.to_dict(), teacher_model, spec.method,
                              spec.method_params, teacher_ckpt)
    # every kd_probe_interval (default: log interval) iterations: the gradient norm of each
    # loss term on the student's distilled features, as MLflow metrics kd_grad/<term>
    # (dipkd.kd_terms). Each probe costs about one training step's backward (a partial
    # backward per term) and changes nothing the step computes; `kd_probe: false` (the smoke
    # profile) leaves it out.
    if spec.train.kd_probe:
        probe = spec.train.kd_probe_interval or spec.train.log_interval
        cfg.custom_hooks = [*cfg.get("custom_hooks", []), dict(type="KDTermGradHook",
                                                                interval=probe)]
    return cfg


_runners = itertools.count()


def own_visualizer(cfg) -> None:
    """Give the visualizer of the Runner about to be built from ``cfg`` a name of its own.
    mmengine keeps one Visualizer per name in a process (``ManagerMixin.get_instance``), so a
    second Runner under mmdet's fixed name ``visualizer`` (the test after training, in the
    same process) would get the first one back, with the training's backends (its MLflow
    run). Set after the config fingerprint is taken; exported configs keep ``visualizer``."""
    cfg.visualizer["name"] = f"visualizer-{next(_runners)}"
