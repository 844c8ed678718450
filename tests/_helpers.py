"""Shared test helpers: mmdet data samples, a real FeatureDistiller with a saved random
teacher, the summed loss of a loss dict, the gradient checks of a distiller step, and a tiny
project workspace for training stages."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def last_capture(log_file) -> str:
    """What the last run of a stage wrote into its log file (dipkd.console.captured appends
    one section per run, each after a ``=====`` header line)."""
    text = Path(log_file).read_text()
    return text[text.rfind("\n===== "):]


def load_script(relative: str):
    """A script of the repository that is not a package module (``benchmarks/*.py``),
    imported from its file."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def det_samples(h, w, boxes_per_image):
    """One ``DetDataSample`` per image of an (h, w) batch with the given GT boxes."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    out = []
    for boxes in boxes_per_image:
        s = DetDataSample()
        s.set_metainfo(dict(img_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                            ori_shape=(h, w), scale_factor=(1.0, 1.0)))
        b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        s.gt_instances = InstanceData(bboxes=b, labels=torch.zeros(len(b), dtype=torch.long))
        out.append(s)
    return out


def build_distiller(params, method, detector, tmp_path):
    """A ``FeatureDistiller`` built from params.yaml's settings of ``method`` as the pipeline
    builds it, with a randomly initialised R50 teacher saved to and loaded from a checkpoint.
    Returns ``(model, teacher_state_dict, cfg)``."""
    from mmengine.config import ConfigDict
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from dipkd import mmdet_plugins  # noqa: F401  (registries)
    from dipkd.mmdet_config import build_distill_config
    from dipkd.config.params import distill_spec, run_spec
    from dipkd.models.detectors import detector_cfg

    register_all_modules()
    teacher_spec = run_spec(params, "teacher", "ssdd", detector)
    teacher = MODELS.build(ConfigDict(detector_cfg(detector, 50, False, teacher_spec.model)))
    teacher.init_weights()
    ckpt = tmp_path / "teacher.pth"
    torch.save({"state_dict": teacher.state_dict(), "meta": {}}, ckpt)
    cfg = build_distill_config(distill_spec(params, method, "ssdd", detector), teacher_spec,
                               ckpt)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model, teacher.state_dict(), cfg


def total_loss(losses: dict) -> torch.Tensor:
    """The sum of every ``loss*`` entry of an mmdet loss dict (tensors or lists of them)."""
    return sum(v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v)
               for k, v in losses.items() if "loss" in k)


def has_gradient(parameters) -> bool:
    """Some of ``parameters`` received a non-zero gradient."""
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in parameters)


def backward_reaches_student_only(model, losses: dict) -> None:
    """Backpropagate the summed (finite) losses of a distiller step: the frozen teacher gets
    no gradient, the student's FPN neck does."""
    total = total_loss(losses)
    assert torch.isfinite(total)
    total.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert has_gradient(model.student.neck.parameters())


def tiny_workspace(ws, params, detector="retinanet", epochs=1, **top_level):
    """A project dir with a tiny ssdd dataset and a params.yaml for one ssdd/<detector> run
    (``top_level`` entries, e.g. ``compute``, are set on params.yaml as given)."""
    from dipkd.datasets.synthetic import generate_dataset
    params["datasets"], params["detectors"] = ["ssdd"], [detector]
    params["baseline_detector"] = detector
    params["ablation"].update(dataset="ssdd", detector=detector)
    params.update(top_level)
    prof = params["profiles"]["smoke"]
    prof["data"]["ssdd"] = {"image_scale": 0.25, "num_train": 4, "num_test": 2}
    prof["schedule"][detector]["ssdd"].update(epochs=epochs, scale=[128, 96])
    # a checkpoint every epoch: the resume tests kill or truncate after the first one
    prof["train"].update(log_interval=1, val_interval=1, warmup_iters=2, checkpoint_interval=1)
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    generate_dataset(ws / "data" / "ssdd", preset="ssdd-like", seed=0, **prof["data"]["ssdd"])
    return ws
