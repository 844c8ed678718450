"""Build the complete mmengine/mmdet config of one run from a :class:`RunSpec`.

No config file is hand-edited per run: everything comes from params.yaml through here.
"""
from __future__ import annotations

from pathlib import Path

from mmengine.config import Config

from ..baselines import METHODS as BASELINE_LOSSES
from ..models.detectors import detector_cfg
from .params import RunSpec

CLASSES = ("ship",)


def _pipelines(scale):
    scale = tuple(int(s) for s in scale)
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


def _dataset(root: Path, split: str, pipeline, test_mode: bool) -> dict:
    return dict(type="CocoDataset", data_root=str(root), metainfo=dict(classes=CLASSES),
                ann_file=f"annotations/{split}.json", data_prefix=dict(img=f"images/{split}/"),
                filter_cfg=None if test_mode else dict(filter_empty_gt=True, min_size=0),
                test_mode=test_mode, pipeline=pipeline)


def _milestones(epochs: int) -> list[int]:
    """mmdet's 1x schedule drops the lr at 8/12 and 11/12 of training."""
    return sorted({max(1, round(epochs * 8 / 12)), max(1, round(epochs * 11 / 12))})


def build_config(spec: RunSpec, *, vis_backends: list[dict] | None = None,
                 deterministic: bool = True) -> Config:
    """The mmengine ``Config`` that trains and tests ``spec`` in ``spec.work_dir``."""
    tr, sch = spec.train, spec.schedule
    train_pipe, test_pipe = _pipelines(sch["scale"])
    root = spec.dataset.root
    workers = int(tr["workers"])
    loader_common = dict(num_workers=workers, persistent_workers=workers > 0)
    test_loader = dict(batch_size=1, drop_last=False,
                       sampler=dict(type="DefaultSampler", shuffle=False),
                       dataset=_dataset(root, "test", test_pipe, True), **loader_common)
    evaluator = dict(type="SARCocoMetric", ann_file=str(root / "annotations" / "test.json"))
    epochs = int(sch["epochs"])
    cfg = dict(
        default_scope="mmdet",
        custom_imports=dict(imports=["dipkd.mmdet_plugins"], allow_failed_imports=False),
        model=detector_cfg(spec.detector, spec.depth, bool(tr["pretrained"]), spec.model,
                           num_classes=len(CLASSES)),
        train_dataloader=dict(batch_size=int(tr["batch_size"]),
                              sampler=dict(type="DefaultSampler", shuffle=True),
                              batch_sampler=dict(type="AspectRatioBatchSampler"),
                              dataset=_dataset(root, "train", train_pipe, False),
                              **loader_common),
        val_dataloader=test_loader,
        test_dataloader=test_loader,
        val_evaluator=evaluator,
        test_evaluator=evaluator,
        train_cfg=dict(type="EpochBasedTrainLoop", max_epochs=epochs,
                       val_interval=int(tr["val_interval"])),
        val_cfg=dict(type="ValLoop"),
        test_cfg=dict(type="TestLoop"),
        optim_wrapper=dict(type="OptimWrapper",
                           optimizer=dict(type="SGD", lr=float(sch["lr"]),
                                          momentum=float(tr["momentum"]),
                                          weight_decay=float(tr["weight_decay"]))),
        param_scheduler=[
            dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0,
                 end=int(tr["warmup_iters"])),
            dict(type="MultiStepLR", begin=0, end=epochs, by_epoch=True,
                 milestones=_milestones(epochs), gamma=0.1)],
        default_hooks=dict(
            timer=dict(type="IterTimerHook"),
            logger=dict(type="LoggerHook", interval=int(tr["log_interval"])),
            param_scheduler=dict(type="ParamSchedulerHook"),
            checkpoint=dict(type="CheckpointHook", interval=1, max_keep_ckpts=2,
                            save_last=True),
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
    return Config(cfg)


# params.yaml method name -> registered KD-loss class (baselines: ``dipkd.baselines.METHODS``).
KD_LOSS_TYPES = {"dipkd": "DIPKDLoss", "fitnet": "FitNetLoss", **BASELINE_LOSSES}


def kd_loss_cfg(method: str, method_params: dict) -> dict:
    """The distiller's ``kd_loss`` config dict of a method and its params."""
    if method not in KD_LOSS_TYPES:
        raise ValueError(f"unknown KD method {method!r}; valid: {', '.join(KD_LOSS_TYPES)}")
    kd_loss = dict(type=KD_LOSS_TYPES[method], **method_params)
    if method == "dipkd":
        kd_loss["num_classes"] = len(CLASSES)
    return kd_loss


def build_distill_config(spec: RunSpec, teacher: RunSpec, teacher_ckpt, *,
                         deterministic: bool = True) -> Config:
    """Config of a distillation run: the student of ``spec`` (initialised as the student
    baseline) inside a ``FeatureDistiller`` with the frozen ``teacher`` loaded from
    ``teacher_ckpt`` and the KD loss of ``spec.method``."""
    kd_loss = kd_loss_cfg(spec.method, spec.method_params)
    cfg = build_config(spec, deterministic=deterministic)
    student = cfg.model.to_dict()
    teacher_model = detector_cfg(teacher.detector, teacher.depth, False, teacher.model,
                                 num_classes=len(CLASSES))
    cfg.model = dict(type="FeatureDistiller", student=student, teacher=teacher_model,
                     kd_loss=kd_loss, teacher_ckpt=str(teacher_ckpt),
                     data_preprocessor=student["data_preprocessor"])
    return cfg
