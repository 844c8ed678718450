"""``dipkd infer``: run an exported detector on images and large SAR scenes.

For each image (files, or the image files of directories): read it as the 3-channel 8-bit
BGR array the model was trained on (:mod:`dipkd.inference.images`), cut it into overlapping
tiles at the model's training scale when it is larger than that scale and merge the tiles'
detections (``--merge``: greedy non-maximum merging by default, or class-wise NMS;
:mod:`dipkd.inference.tiling`), then write

- ``<out>/detections.json``: the COCO *results* list (``pycocotools``' ``COCO.loadRes`` and
  our :func:`dipkd.evaluation.coco_eval` read it as it is): one
  ``{"image_id", "file_name", "bbox": [x, y, w, h], "score", "category_id"}`` per detection
  with ``score >= --score-thr``, in scene pixels, ``category_id`` = class index + 1 (the
  ids of our COCO annotation files: ``ship`` = 1);
- ``<out>/images.json``: ``{"images": [{"id", "file_name", "path", "width", "height",
  "tiles", "detections", "visualization"}], "categories": [...], "failed": [{"path",
  "error"}], "model", "model_scale", "tile_size", "overlap", "merge", "merge_threshold",
  "nms_iou", "score_thr"}`` --
  the images the ids refer to (a COCO ``images`` list) and the settings of the run. The
  results list and the images are two files so that ``detections.json`` stays in the
  standard results format;
- ``<out>/<image stem>.png``: the image (as the model saw it, 8-bit) with the boxes of
  ``score >= --score-thr`` drawn (``<stem>-2.png``, ... when two inputs share a stem or the
  name is an input file's own).

Image ids are the 1-based positions of the inputs on the command line (directories expanded),
so they do not move when an image fails. The model is an exported checkpoint
(:mod:`dipkd.export`): its mmdet config comes from ``meta["cfg"]`` (else the ``.py`` beside
it), the file is read once, by our safe checkpoint loader (:mod:`dipkd.checkpoint`), and
the model is built by ``mmdet.apis.init_detector`` and given the weights and classes of that
same dict (:func:`build_model`), and every tile goes through the model's own test
pipeline (``LoadImageFromNDArray`` + its ``Resize``) and ``model.test_step``, i.e. what
``inference_detector`` does, with the pipeline built once.

Tiling is our own small tiler, not SAHI: SAHI 0.12.8 would run here (its mmdet 3 wrapper
worked on an exported model, with ``fire`` its only dependency we lack), but it would add
packages to our pinned stack for ~50 lines of geometry; its mmdet wrapper subclasses
``DetInferencer`` and overrides private methods, and upstream runs its mmdet tests only in
a manually triggered CI job pinned to torch 2.1 (ours is 2.14); and we would still need our
own reading of 16-bit SAR rasters, outputs and progress, and to override some of its
defaults (an extra full-image pass, RGB input). Our grid is the same as SAHI's
``get_slice_bboxes``, and ``--merge nmm`` its greedy non-maximum merging by
intersection-over-smaller (threshold 0.5).

Tile size: the model's training scale by default (as the tiler's doc says, a full tile is
then seen at the scene's native resolution). When the training images were much smaller than
that scale (the ``Resize`` enlarged them, e.g. SSDD chips of ~500x350 at the paper's Faster
R-CNN scale 1000x600), objects in native-resolution tiles look smaller than in training:
``--tile-size W H`` (e.g. the training images' size) then makes the pipeline enlarge each
tile as it enlarged the training images.

Errors: a missing or unreadable model, or bad options -> :class:`InferError` (one line,
exit code 2). An image that cannot be read -> one line on stderr naming it, the others
are processed, exit code 1 at the end.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .images import ImageReadError, expand_inputs, read_image
from .tiling import (DEFAULT_MERGE, DEFAULT_MERGE_THRESHOLD, MERGE_METHODS, Tile,
                     merge_detections, tile_grid)

BOX_COLOR = (0, 255, 0)    # BGR green: visible on grayscale SAR


class InferError(ValueError):
    """Bad input to ``dipkd infer`` (model, device, options): one line, exit code 2."""


@dataclass
class Detector:
    """A loaded detector, its test pipeline (for ndarray input) and its training scale."""
    model: object
    pipeline: object
    scale: tuple[int, int]          # (w, h): the tile size
    classes: tuple[str, ...]
    path: Path


@dataclass
class Detections:
    """The merged detections of one image, in its pixel coordinates (xyxy)."""
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    tiles: list[Tile] = field(default_factory=list)


def check_device(device: str) -> str:
    """``cpu`` or ``cuda[:N]`` with CUDA present; else :class:`InferError`."""
    import torch
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise InferError(f"--device {device!r}: not a torch device (use cpu or cuda:0)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InferError(f"--device {device}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InferError(f"--device {device}: only {torch.cuda.device_count()} CUDA "
                             "device(s) present")
    elif dev.type != "cpu":
        raise InferError(f"--device {device}: only cpu and cuda devices are supported")
    return device


def model_config(path: Path, checkpoint: dict):
    """The mmdet config of an exported model: ``meta["cfg"]``, else ``<model>.py``."""
    from mmengine.config import Config

    from ..export import config_path

    text = checkpoint.get("meta", {}).get("cfg") if isinstance(checkpoint, dict) else None
    try:
        if isinstance(text, str) and text.strip():
            return Config.fromstring(text, ".py")
        beside = config_path(path)
        if beside.is_file():
            return Config.fromfile(str(beside))
    except Exception as exc:     # a config that does not parse: the model is unusable
        raise InferError(f"{path}: its mmdet config does not parse "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    raise InferError(f"{path}: no mmdet config in the checkpoint (meta['cfg']) and no "
                     f"{config_path(path).name} beside it; export the model with dipkd")


def test_scale(cfg) -> tuple[int, int]:
    """The ``(w, h)`` scale of the ``Resize`` in the config's test pipeline."""
    from mmdet.utils import get_test_pipeline_cfg
    try:
        pipeline = get_test_pipeline_cfg(cfg)
    except (RuntimeError, AttributeError, KeyError):
        raise InferError("the model's config has no test pipeline") from None
    for step in pipeline:
        if str(step.get("type", "")).split(".")[-1] == "Resize" and "scale" in step:
            scale = step["scale"]
            if isinstance(scale, int):
                return scale, scale
            w, h = (int(v) for v in scale)
            return w, h
    raise InferError("the model's test pipeline has no Resize with a scale (the tile size)")


def _ndarray_pipeline(cfg):
    """The config's test pipeline for an in-memory image (as ``inference_detector`` and
    ``DetInferencer`` build it): ``LoadImageFromNDArray`` first, no annotation loading."""
    from mmcv.transforms import Compose
    from mmdet.utils import get_test_pipeline_cfg

    steps = [dict(s) for s in get_test_pipeline_cfg(cfg.copy())]
    steps[0]["type"] = "mmdet.LoadImageFromNDArray"
    steps = [s for s in steps if not str(s.get("type", "")).endswith("LoadAnnotations")]
    return Compose(steps)


def load_detector(path, device: str = "cpu") -> Detector:
    """Load an exported model (module doc); :class:`InferError` with one line when the file
    is missing, unreadable or not a detector checkpoint."""
    import contextlib
    import io
    import warnings

    from ..checkpoint import UnsafeCheckpointError, safe_load

    path = Path(path)
    if path.is_dir():
        raise InferError(f"{path}: is a directory, expected a model .pth file")
    if not path.is_file():
        raise InferError(f"{path}: model not found")
    check_device(device)
    try:
        checkpoint = safe_load(path)
    except (UnsafeCheckpointError, RuntimeError, OSError) as exc:   # already one line
        msg = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
        raise InferError(msg) from None
    except Exception as exc:   # garbage bytes can fail inside the unpickler (KeyError, ...)
        raise InferError(f"{path}: not a readable torch checkpoint ({type(exc).__name__})") \
            from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise InferError(f"{path}: not a detector checkpoint (no state_dict)")
    cfg = model_config(path, checkpoint)
    scale = test_scale(cfg)

    # mmdet only now (a missing model fails fast)
    from mmengine.logging import MMLogger

    from .. import mmdet_plugins  # noqa: F401  (registries)

    # mmengine logs (and prints) key mismatches; keep the output to the progress lines
    if not MMLogger.check_instance_created("dipkd-infer"):
        MMLogger.get_instance("dipkd-infer", log_level="WARNING")
    try:
        # record=True: init_detector resets the filters (simplefilter('once')) before it warns
        with warnings.catch_warnings(record=True), contextlib.redirect_stdout(io.StringIO()):
            model = build_model(cfg, checkpoint, device)
        del checkpoint
        pipeline = _ndarray_pipeline(model.cfg)
    except Exception as exc:   # a config/weights pair mmdet cannot build: bad input
        raise InferError(f"{path}: cannot build the detector ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    classes = tuple(model.dataset_meta.get("classes", ()))
    return Detector(model=model, pipeline=pipeline, scale=scale, classes=classes, path=path)


def build_model(cfg, checkpoint: dict, device: str):
    """The detector of ``cfg`` with the weights and classes of ``checkpoint``, the dict
    already read: ``init_detector`` without a checkpoint (given a path it would read the
    file again), then what it does with a loaded one: mmengine's non-strict
    ``load_state_dict`` and ``meta["dataset_meta"]`` (keys lower-cased) as the classes
    (without it, init_detector's default: COCO's)."""
    from mmdet.apis import init_detector
    from mmengine.runner import load_state_dict

    model = init_detector(cfg, None, device=device)
    load_state_dict(model, checkpoint["state_dict"], strict=False)
    dataset_meta = checkpoint.get("meta", {}).get("dataset_meta")
    if isinstance(dataset_meta, dict):
        model.dataset_meta = {k.lower(): v for k, v in dataset_meta.items()}
    return model


def _predict(detector: Detector, crops: list[np.ndarray]):
    """``model.test_step`` on a batch of crops -> per crop (boxes, scores, labels) numpy."""
    import torch

    data = [detector.pipeline(dict(img=np.ascontiguousarray(c), img_id=0)) for c in crops]
    batch = dict(inputs=[d["inputs"] for d in data],
                 data_samples=[d["data_samples"] for d in data])
    with torch.no_grad():
        results = detector.model.test_step(batch)
    out = []
    for r in results:
        pred = r.pred_instances
        out.append((pred.bboxes.detach().cpu().numpy(), pred.scores.detach().cpu().numpy(),
                    pred.labels.detach().cpu().numpy()))
    return out


def detect(detector: Detector, image: np.ndarray, overlap: float = 0.2,
           nms_iou: float = 0.5, score_thr: float = 0.3, batch_size: int = 1,
           tile_size: tuple[int, int] | None = None, merge: str = DEFAULT_MERGE,
           merge_threshold: float = DEFAULT_MERGE_THRESHOLD) -> Detections:
    """Detections of ``score >= score_thr`` in ``image`` (BGR uint8), tiled when the image is
    larger than ``tile_size`` (default: the model's scale;
    :func:`dipkd.inference.tiling.tile_grid`), the tiles' detections merged by ``merge``
    (:func:`dipkd.inference.tiling.merge_detections`)."""
    h, w = image.shape[:2]
    tiles = tile_grid(w, h, tile_size or detector.scale, overlap)
    per_tile = []
    for i in range(0, len(tiles), max(1, batch_size)):
        chunk = tiles[i:i + max(1, batch_size)]
        preds = _predict(detector, [image[t.y0:t.y1, t.x0:t.x1] for t in chunk])
        for tile, (boxes, scores, labels) in zip(chunk, preds):
            keep = scores >= score_thr
            per_tile.append((tile, boxes[keep], scores[keep], labels[keep]))
    boxes, scores, labels = merge_detections(per_tile, nms_iou, merge, merge_threshold)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    return Detections(boxes, scores, labels, tiles)


def draw_detections(image: np.ndarray, dets: Detections, classes=()) -> np.ndarray:
    """A copy of ``image`` with the boxes and ``class score`` labels drawn."""
    import cv2

    canvas = image.copy()
    h, w = canvas.shape[:2]
    thick = max(1, round(min(h, w) / 400))
    font = 0.35 * thick
    for (x1, y1, x2, y2), score, label in zip(dets.boxes, dets.scores, dets.labels):
        p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
        cv2.rectangle(canvas, p1, p2, BOX_COLOR, thick)
        name = classes[label] if 0 <= label < len(classes) else str(label)
        cv2.putText(canvas, f"{name} {score:.2f}", (p1[0], max(p1[1] - 2, 8 * thick)),
                    cv2.FONT_HERSHEY_SIMPLEX, font, BOX_COLOR, 1, cv2.LINE_AA)
    return canvas


def coco_results(image_id: int, file_name: str, dets: Detections) -> list[dict]:
    """COCO results entries (xywh, category_id = label + 1) of one image's detections."""
    out = []
    for (x1, y1, x2, y2), score, label in zip(dets.boxes.tolist(), dets.scores.tolist(),
                                              dets.labels.tolist()):
        out.append({"image_id": image_id, "file_name": file_name,
                    "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                    "score": round(score, 5), "category_id": int(label) + 1})
    return out


def _visualization_path(out_dir: Path, stem: str, taken: set) -> Path:
    """``out/<stem>.png``, or ``<stem>-2.png``, ... when already used or an input file."""
    n, path = 1, out_dir / f"{stem}.png"
    while path.resolve() in taken:
        n += 1
        path = out_dir / f"{stem}-{n}.png"
    taken.add(path.resolve())
    return path


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def run(model: str, inputs, out: str, score_thr: float = 0.3, overlap: float = 0.2,
        nms_iou: float = 0.5, device: str = "cpu", batch_size: int = 1,
        tile_size: tuple[int, int] | None = None, merge: str = DEFAULT_MERGE,
        merge_threshold: float = DEFAULT_MERGE_THRESHOLD, stdout=None, stderr=None) -> int:
    """The ``dipkd infer`` command (module doc). Returns the exit code: 0, or 1 when an
    image failed; raises :class:`InferError` for bad input (exit code 2)."""
    import cv2

    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    if not 0.0 <= score_thr <= 1.0:
        raise InferError(f"--score-thr must be in [0, 1], got {score_thr}")
    if not 0.0 <= overlap < 1.0:
        raise InferError(f"--overlap must be in [0, 1), got {overlap}")
    if not 0.0 < nms_iou <= 1.0:
        raise InferError(f"--nms-iou must be in (0, 1], got {nms_iou}")
    if merge not in MERGE_METHODS:
        raise InferError(f"--merge must be one of {', '.join(MERGE_METHODS)}, got {merge!r}")
    if not 0.0 < merge_threshold <= 1.0:
        raise InferError(f"--merge-threshold must be in (0, 1], got {merge_threshold}")
    if batch_size < 1:
        raise InferError(f"--batch-size must be >= 1, got {batch_size}")
    if tile_size is not None and (len(tile_size) != 2 or min(tile_size) < 1):
        raise InferError(f"--tile-size must be two positive integers W H, got {tile_size}")
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise InferError(f"--out {out_dir}: exists and is not a directory")
    detector = load_detector(model, device)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InferError(f"--out {out_dir}: cannot create it ({exc.strerror or exc})") from None

    items = expand_inputs(inputs)
    taken = {p.resolve() for p, _ in items}
    results, images, failed = [], [], []
    tw, th = tuple(tile_size) if tile_size is not None else detector.scale
    for image_id, (path, error) in enumerate(items, start=1):
        prefix = f"[{image_id}/{len(items)}] {path}"
        try:
            if error is not None:
                raise ImageReadError(f"{path}: {error}")
            image = read_image(path)
            dets = detect(detector, image, overlap, nms_iou, score_thr, batch_size, (tw, th),
                          merge, merge_threshold)
            vis = _visualization_path(out_dir, path.stem, taken)
            if not cv2.imwrite(str(vis), draw_detections(image, dets, detector.classes)):
                raise ImageReadError(f"{path}: could not write {vis}")
        except ImageReadError as exc:
            print(f"error: {exc}", file=stderr, flush=True)
            failed.append({"path": str(path), "error": str(exc)})
            continue
        except (RuntimeError, MemoryError, cv2.error) as exc:   # e.g. out of memory
            msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            print(f"error: {path}: inference failed ({type(exc).__name__}: {msg})",
                  file=stderr, flush=True)
            failed.append({"path": str(path), "error": f"{type(exc).__name__}: {msg}"})
            continue
        h, w = image.shape[:2]
        n_tiles = len(dets.tiles)
        tiling = (f"{n_tiles} tiles of {tw}x{th}" if n_tiles > 1 else "1 tile (whole image)")
        print(f"{prefix}: {w}x{h}, {tiling}, {len(dets.scores)} detections "
              f"(score >= {score_thr:g})", file=stdout, flush=True)
        results.extend(coco_results(image_id, path.name, dets))
        images.append({"id": image_id, "file_name": path.name, "path": str(path),
                       "width": w, "height": h, "tiles": n_tiles,
                       "detections": int(len(dets.scores)), "visualization": vis.name})

    _write_json(out_dir / "detections.json", results)
    _write_json(out_dir / "images.json", {
        "images": images,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(detector.classes)],
        "failed": failed, "model": str(detector.path),
        "model_scale": list(detector.scale), "tile_size": [tw, th],
        "overlap": overlap, "merge": merge, "merge_threshold": merge_threshold,
        "nms_iou": nms_iou, "score_thr": score_thr})
    print(f"{len(images)} image(s), {len(results)} detections -> {out_dir}"
          + (f"; {len(failed)} failed" if failed else ""), file=stdout, flush=True)
    return 1 if failed else 0
