"""Cut a large scene into overlapping tiles at the model's scale and merge the detections.

Pure geometry and box merging, without mmdet, so that it is tested on hand-computed grids.

- **Tile size** = the model's training scale ``(w, h)`` (the ``Resize`` of its test pipeline,
  ``keep_ratio=True``): a full tile is then fed to the network at the scene's native pixel
  size (the keep-ratio resize of a ``w x h`` tile to the scale ``(w, h)`` is the identity).
- **Whole images**: an image that the model's keep-ratio ``Resize`` would not shrink (long
  side <= the scale's long side and short side <= its short side, in either orientation, as
  mmcv's ``rescale_size`` treats a scale) is run whole, exactly as the evaluation runs it.
  (``dipkd infer --tile-size W H`` replaces the scale by another tile size in both rules.)
- **Grid**: per axis the tile starts are ``0, step, 2 step, ...`` with
  ``step = tile - floor(overlap * tile)`` while a tile ends inside the image, and one last
  tile aligned to the border (``size - tile``), so that every pixel is covered and every
  tile has the full size; along an axis shorter than the tile there is one tile of the
  image's length. This is SAHI's ``get_slice_bboxes`` grid (same overlap rounding).
- **Merge** (``--merge``): boxes are shifted from tile to scene coordinates, then merged
  class by class (boxes of different classes are never merged; each image is merged on its
  own). An object inside the overlap of two tiles is found in both; an object longer than
  the overlap is cut by every tile that sees it, and each of those tiles gives a partial box.

  - ``nmm`` (default): greedy non-maximum *merging*, as SAHI's ``GreedyNMMPostprocess`` with
    its ``IOS`` match metric: by descending score, a kept box absorbs every remaining box of
    its class whose intersection over the smaller box's area (IoS) is ``>= --merge-threshold``
    (0.5, SAHI's default), and becomes the enclosing box of itself and the absorbed boxes,
    with its own (the highest) score. The partial boxes of a cut ship overlap in the tiles'
    overlap strip, which is most of the smaller part: they become one box covering the ship;
    so do the fragment boxes a tile's detector may add inside a long ship (merging only
    boxes of different tiles left them: measured with the CPU study's DIPKD student on 30
    hrsid-like 400x400 scenes, 92 ships, 12 tiles each: NMS 177 boxes, cross-tile NMM 138,
    NMM 106). Limitation: a ship cut so that both parts are more than about twice the
    overlap stays in two boxes.
  - ``nms``: class-wise NMS (``torchvision.ops.batched_nms``, IoU threshold ``--nms-iou``):
    removes the duplicates of the overlap, keeps the partial boxes of a cut ship (their IoU
    is low).

  A single tile (an image run whole) is merged by neither: its detections stay the model's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tile:
    """A window ``[x0, x1) x [y0, y1)`` of the scene, in pixels."""
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


def fits_model_scale(width: int, height: int, scale: tuple[int, int]) -> bool:
    """True if the model's keep-ratio ``Resize`` to ``scale`` (w, h) would not shrink a
    ``width x height`` image (it is run whole, not tiled)."""
    return (max(width, height) <= max(scale)) and (min(width, height) <= min(scale))


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of the tiles along one axis of ``size`` pixels (see the module doc)."""
    if size <= 0 or tile <= 0:
        raise ValueError(f"size and tile must be > 0, got size={size}, tile={tile}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if size <= tile:
        return [0]
    step = max(1, tile - int(overlap * tile))
    return [*range(0, size - tile, step), size - tile]


def tile_grid(width: int, height: int, tile_size: tuple[int, int],
              overlap: float = 0.2) -> list[Tile]:
    """Tiles of ``tile_size`` (w, h) covering a ``width x height`` image, row by row; the
    whole image as one tile when it fits :func:`fits_model_scale`."""
    tw, th = tile_size
    if fits_model_scale(width, height, tile_size):
        return [Tile(0, 0, width, height)]
    xs = tile_starts(width, tw, overlap)
    ys = tile_starts(height, th, overlap)
    return [Tile(x, y, min(x + tw, width), min(y + th, height)) for y in ys for x in xs]


MERGE_METHODS = ("nmm", "nms")
DEFAULT_MERGE = "nmm"
DEFAULT_MERGE_THRESHOLD = 0.5   # IoS of nmm: SAHI's default match_threshold


def merge_detections(per_tile, iou_threshold: float = 0.5, method: str = DEFAULT_MERGE,
                     merge_threshold: float = DEFAULT_MERGE_THRESHOLD):
    """Merge the detections of the tiles of one scene (module doc).

    ``per_tile``: iterable of ``(tile, boxes, scores, labels)``, boxes ``(n, 4)`` xyxy in
    the tile's coordinates. ``method``: ``"nmm"`` (IoS threshold ``merge_threshold``) or
    ``"nms"`` (IoU threshold ``iou_threshold``). Returns ``(boxes, scores, labels)`` in scene
    coordinates, by descending score (numpy arrays: float32 (n, 4), float32 (n,), int64
    (n,)). A single tile (an image run whole) is not merged again: its detections stay
    exactly the model's own (already NMS-ed) output, only sorted."""
    if method not in MERGE_METHODS:
        raise ValueError(f"merge method must be one of {', '.join(MERGE_METHODS)}, "
                         f"got {method!r}")
    for name, value in (("NMS IoU", iou_threshold), ("NMM IoS", merge_threshold)):
        if not 0.0 < value <= 1.0:
            raise ValueError(f"{name} threshold must be in (0, 1], got {value}")
    per_tile = list(per_tile)
    boxes, scores, labels = scene_detections(per_tile)
    if len(per_tile) == 1:
        keep = np.argsort(-scores, kind="stable")
        return boxes[keep], scores[keep], labels[keep]
    if method == "nms":
        keep = class_wise_nms(boxes, scores, labels, iou_threshold)
        return boxes[keep], scores[keep], labels[keep]
    merged, keep = greedy_nmm(boxes, scores, labels, merge_threshold)
    return merged, scores[keep], labels[keep]


def scene_detections(per_tile):
    """The tiles' detections in scene coordinates, concatenated: ``(boxes, scores, labels)``
    (float32 (n, 4), float32 (n,), int64 (n,))."""
    boxes = [np.zeros((0, 4), np.float32)]
    scores, labels = [np.zeros(0, np.float32)], [np.zeros(0, np.int64)]
    for tile, b, s, lab in per_tile:
        b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
        boxes.append(b + np.array([tile.x0, tile.y0, tile.x0, tile.y0], dtype=np.float32))
        scores.append(np.asarray(s, dtype=np.float32).reshape(-1))
        labels.append(np.asarray(lab, dtype=np.int64).reshape(-1))
    return np.concatenate(boxes), np.concatenate(scores), np.concatenate(labels)


def class_wise_nms(boxes, scores, labels, iou_threshold: float) -> np.ndarray:
    """Indices kept by ``torchvision.ops.batched_nms``, by descending score."""
    import torch
    from torchvision.ops import batched_nms

    if len(scores) == 0:
        return np.zeros(0, np.int64)
    return batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                       torch.from_numpy(labels), iou_threshold).numpy()


def intersection_over_smaller(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Intersection area of ``box`` (xyxy) with each of ``others`` ((n, 4) xyxy) over the
    smaller of the two areas (0 where that area is 0)."""
    wh = (np.minimum(box[2:], others[:, 2:]) - np.maximum(box[:2], others[:, :2])).clip(0)
    inter = wh[:, 0] * wh[:, 1]
    area = np.prod((box[2:] - box[:2]).clip(0))
    areas = np.prod((others[:, 2:] - others[:, :2]).clip(0), axis=1)
    smaller = np.minimum(area, areas)
    return np.divide(inter, smaller, out=np.zeros_like(inter), where=smaller > 0)


def greedy_nmm(boxes, scores, labels, threshold: float):
    """Greedy non-maximum merging (module doc): by descending score, each kept box absorbs
    the remaining boxes of its label with IoS >= ``threshold`` (against the kept box as
    detected) and is replaced by their enclosing box. Returns ``(merged boxes (k, 4)
    float32, kept indices (k,))``, by descending score."""
    alive = np.ones(len(scores), bool)
    merged, keep = [], []
    for i in np.argsort(-scores, kind="stable"):
        if not alive[i]:
            continue
        alive[i] = False
        candidates = np.flatnonzero(alive & (labels == labels[i]))
        absorbed = candidates[intersection_over_smaller(boxes[i], boxes[candidates])
                              >= threshold]
        alive[absorbed] = False
        members = boxes[np.append(absorbed, i)]
        merged.append(np.concatenate([members[:, :2].min(0), members[:, 2:].max(0)]))
        keep.append(i)
    return (np.asarray(merged, np.float32).reshape(-1, 4), np.asarray(keep, np.int64))
