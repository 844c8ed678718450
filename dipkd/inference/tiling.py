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
- **Merge**: boxes are shifted from tile to scene coordinates and merged by class-wise NMS
  (``torchvision.ops.batched_nms``, IoU threshold ``--nms-iou``): an object inside the overlap
  of two tiles is found in both, and its lower-scoring copy is removed. Limitation: an object
  longer than the overlap is cut by every tile that sees it; its partial boxes overlap the
  other tile's by less than the IoU threshold and may both remain (raise ``--overlap``).
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


def merge_detections(per_tile, iou_threshold: float = 0.5):
    """Merge the detections of the tiles of one scene.

    ``per_tile``: iterable of ``(tile, boxes, scores, labels)``, boxes ``(n, 4)`` xyxy in
    the tile's coordinates. Returns ``(boxes, scores, labels)`` in scene coordinates after
    class-wise NMS, by descending score (numpy arrays: float32 (n, 4), float32 (n,),
    int64 (n,)). A single tile (an image run whole) is not merged again: its detections
    stay exactly the model's own (already NMS-ed) output, only sorted."""
    import torch
    from torchvision.ops import batched_nms

    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"NMS IoU threshold must be in (0, 1], got {iou_threshold}")
    per_tile = list(per_tile)
    boxes, scores, labels = [], [], []
    for tile, b, s, lab in per_tile:
        b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
        boxes.append(b + np.array([tile.x0, tile.y0, tile.x0, tile.y0], dtype=np.float32))
        scores.append(np.asarray(s, dtype=np.float32).reshape(-1))
        labels.append(np.asarray(lab, dtype=np.int64).reshape(-1))
    if sum(len(s) for s in scores) == 0:
        return (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    boxes, scores, labels = np.concatenate(boxes), np.concatenate(scores), np.concatenate(labels)
    if len(per_tile) == 1:
        keep = np.argsort(-scores, kind="stable")
    else:
        keep = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                           torch.from_numpy(labels), iou_threshold).numpy()
    return boxes[keep], scores[keep], labels[keep]
