"""Shared pieces of the paper figures: which checkpoint a model name means, loading it with
mmdet, running it on test images, the figure grid and the atomic PNG write.

Models are the pipeline's plain mmdet checkpoints at ``spec.model_path``; their configs come
from :func:`dipkd.mmdet_config.build_config`, so inference uses exactly the test
pipeline of the evaluation (same resize, same normalisation, same test_cfg).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config.params import RunSpec, distill_spec, run_spec

DPI = 100
PANEL_W = 2.4                    # inches per grid panel (height: PANEL_W x image aspect)
TITLE_H = 0.45                   # inches above the grid for the column titles
LEFT = 0.25                      # inches left of the grid for the row labels
GAP = 0.06                       # inches between panels


def figure_detector(params: dict) -> str:
    """The detector of the figures: the paper's Figures 3-5 use Faster R-CNN, which is also
    the detector the baseline KD methods run on (``baseline_detector``)."""
    return params.get("baseline_detector", params["detectors"][0])


def default_methods(params: dict) -> list[str]:
    """The columns of Figures 4-5: params.yaml's ``figures.methods`` (the paper's: student,
    MGD, FGD, IFKD, DIPKD), keeping those the matrix trains: ``student``/``teacher``, the
    KD methods listed in ``baselines``, ``dipkd`` when configured under ``methods``. The
    ones left out are printed."""
    trained = {"student", "teacher", *params.get("baselines", [])} | (
        {"dipkd"} if "dipkd" in params.get("methods", {}) else set())
    wanted = list(params.get("figures", {}).get("methods", ["student", "dipkd"]))
    left_out = [m for m in wanted if m not in trained]
    if left_out:
        print(f"[dipkd] figures: {', '.join(left_out)} not trained by this matrix (not in "
              "baselines): column left out", flush=True)
    return [m for m in wanted if m in trained]


def model_spec(params: dict, name: str, dataset: str, detector: str,
               seed: int | None = None) -> RunSpec:
    """``teacher``/``student`` or a KD method name -> the run that produced the model
    (``seed``: one of params' seeds, default the first)."""
    if name == "teacher":   # the one teacher (teacher_seed), whatever the run's seed
        return run_spec(params, name, dataset, detector)
    if name == "student":
        return run_spec(params, name, dataset, detector, seed)
    return distill_spec(params, name, dataset, detector, seed)


def producing_stage(params: dict, spec: RunSpec) -> str:
    """The DVC stage that writes ``spec.model_path`` (named as DVC names the matrix
    stages of dvc.yaml: ``<stage>@<values joined by ->``)."""
    if spec.role == "teacher":
        return f"train_teacher@{spec.key}"
    if spec.role == "student":
        return f"train_student@{spec.key}-{spec.seed}"
    if spec.method == "dipkd":
        return f"distill@{spec.key}-{spec.seed}"
    return f"baseline@{spec.method}-{spec.dataset.name}-{spec.seed}"


def require_checkpoints(params: dict, specs: list[RunSpec]) -> None:
    """Fail before any work with one line naming the first missing file and its stage."""
    for spec in specs:
        if not spec.model_path.is_file():
            raise FileNotFoundError(f"{spec.model_path}: checkpoint missing; run "
                                    f"{producing_stage(params, spec)} first")


def require_test_split(spec: RunSpec) -> Path:
    ann = spec.dataset.root / "annotations" / "test.json"
    if not ann.is_file():
        raise FileNotFoundError(f"{ann}: test annotations missing; run "
                                f"prepare@{spec.dataset.name} first")
    return ann


# --------------------------------------------------------------------------- test images

@dataclass
class SplitImage:
    img_id: int
    path: Path
    gt_boxes: np.ndarray          # (K, 4) xyxy in original image pixels

    @property
    def name(self) -> str:
        return self.path.name


def split_images(spec: RunSpec) -> list[SplitImage]:
    """The test split in the annotation file's order."""
    ann = require_test_split(spec)
    coco = json.loads(ann.read_text())
    boxes: dict[int, list] = {img["id"]: [] for img in coco["images"]}
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        boxes.setdefault(a["image_id"], []).append([x, y, x + w, y + h])
    img_dir = spec.dataset.root / "images" / "test"
    return [SplitImage(img["id"], img_dir / img["file_name"],
                      np.asarray(boxes[img["id"]], np.float32).reshape(-1, 4))
            for img in coco["images"]]


def pick_images(images: list[SplitImage], k: int) -> list[SplitImage]:
    """``k`` images spread evenly over the test split (deterministic), preferring images
    with at least one ship; fewer when the split is smaller."""
    with_ships = [im for im in images if len(im.gt_boxes)] or images
    if k <= 0 or not with_ships:
        return []
    if k >= len(with_ships):
        return list(with_ships)
    idx = np.linspace(0, len(with_ships) - 1, k).round().astype(int)
    return [with_ships[i] for i in idx]


def read_gray(path: Path) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


# --------------------------------------------------------------------------- models

@dataclass
class LoadedModel:
    name: str
    spec: RunSpec
    model: object
    dataset: object               # the mmdet test dataset (pipeline of the config)
    index: dict                   # COCO image id -> index in ``dataset``
    _feats: list = field(default_factory=list)


def load_model(params: dict, name: str, spec: RunSpec) -> LoadedModel:
    """Build the detector of ``spec`` with mmdet, load its checkpoint strictly through the
    safe loader (mmengine's ``load_checkpoint``, which :mod:`dipkd.mmdet_plugins` routes
    through :func:`dipkd.checkpoint.safe_load`), in eval mode, and the mmdet test dataset
    of its config."""
    from mmengine.registry import init_default_scope
    from mmengine.runner.checkpoint import load_checkpoint
    from mmdet.registry import DATASETS, MODELS

    from .. import mmdet_plugins  # noqa: F401  (registries, safe checkpoint loader)
    from ..mmdet_config import CLASSES, build_config

    require_checkpoints(params, [spec])
    cfg = build_config(spec, deterministic=False)
    cfg.model.backbone.pop("init_cfg", None)          # never fetch ImageNet weights here
    init_default_scope(cfg.get("default_scope", "mmdet"))
    model = MODELS.build(cfg.model)
    try:
        ckpt = load_checkpoint(model, str(spec.model_path), map_location="cpu", strict=True)
    except RuntimeError as exc:        # also UnsafeCheckpointError / unreadable file
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        if lines and lines[0].startswith(str(spec.model_path)):
            raise ValueError(lines[0]) from None          # the safe loader's one line
        detail = "; ".join(lines[1:3] or lines[:1])[:240]
        raise ValueError(f"{spec.model_path}: does not fit the {spec.role} "
                         f"{spec.detector} R{spec.depth} model ({detail})") from None
    model.cfg = cfg
    model.dataset_meta = ckpt.get("meta", {}).get("dataset_meta") or {"classes": CLASSES}
    model.eval()
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    index = {dataset.get_data_info(i)["img_id"]: i for i in range(len(dataset))}
    loaded = LoadedModel(name, spec, model, dataset, index)
    model.neck.register_forward_hook(lambda _m, _i, out: loaded._feats.append(out))
    return loaded


def run_model(loaded: LoadedModel, image: SplitImage, predict: bool = True):
    """One test image through the model's test pipeline. Returns ``(feats, sample)``: the
    FPN outputs (tuple of (1, C, H, W) tensors, captured from the neck) and the
    ``DetDataSample`` (metainfo ``img_shape``/``batch_input_shape``/``ori_shape``/
    ``scale_factor``; the test pipeline loads GT boxes after Resize, so they are in original
    pixels; with ``predict`` also ``pred_instances`` in original pixels, via the model's
    ``test_step``)."""
    import torch
    from mmengine.dataset import pseudo_collate

    data = pseudo_collate([loaded.dataset[loaded.index[image.img_id]]])
    loaded._feats.clear()
    with torch.no_grad():
        if predict:
            sample = loaded.model.test_step(data)[0]
        else:
            batch = loaded.model.data_preprocessor(data, False)
            loaded.model.extract_feat(batch["inputs"])
            sample = batch["data_samples"][0]
    feats = loaded._feats[-1]
    loaded._feats.clear()
    return tuple(f.detach() for f in feats), sample


# --------------------------------------------------------------------------- plotting

def panel_aspect(images: list[np.ndarray]) -> float:
    """Height/width of the grid panels: the median of the images', clipped to [0.4, 1.5]."""
    if not images:
        return 1.0
    return float(np.clip(np.median([g.shape[0] / g.shape[1] for g in images]), 0.4, 1.5))


def _grid_inches(rows: int, cols: int, aspect: float):
    """(width, height, panel height) in inches; width and height are whole pixels plus
    half a pixel, so Agg's truncation of the canvas size gives exactly :func:`grid_pixels`."""
    ph = PANEL_W * aspect
    px_h, px_w = grid_pixels(rows, cols, aspect)
    return (px_w + 0.5) / DPI, (px_h + 0.5) / DPI, ph


def grid_figure(rows: int, cols: int, aspect: float = 1.0):
    """A figure of ``rows`` x ``cols`` panels of ``PANEL_W`` x ``aspect * PANEL_W`` inches,
    with room for column titles and row labels; its PNG is :func:`grid_pixels` in size
    (no tight bbox, so tests can check the grid)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    w, h, ph = _grid_inches(rows, cols, aspect)
    fig, axes = plt.subplots(rows, cols, figsize=(w, h), dpi=DPI, squeeze=False)
    fig.subplots_adjust(left=LEFT / w, right=1 - GAP / w, bottom=GAP / h, top=1 - TITLE_H / h,
                        wspace=GAP / PANEL_W, hspace=GAP / ph)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def grid_pixels(rows: int, cols: int, aspect: float = 1.0) -> tuple[int, int]:
    """(height, width) in pixels of :func:`grid_figure`'s PNG."""
    ph = PANEL_W * aspect
    width = LEFT + cols * PANEL_W + (cols - 1) * GAP + GAP
    height = TITLE_H + rows * ph + (rows - 1) * GAP + GAP
    return int(round(height * DPI)), int(round(width * DPI))


def save_png(fig, path: Path) -> Path:
    """Write ``fig`` as PNG atomically (temp file in the same folder, then os.replace)."""
    import matplotlib.pyplot as plt
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fig.savefig(tmp, format="png", dpi=DPI)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def atomic_json(path: Path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path
