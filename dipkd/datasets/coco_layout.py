"""The common on-disk dataset layout that every source (synthetic, SSDD, HRSID) writes:

```
<root>/images/train/<file>   <root>/images/test/<file>
<root>/annotations/train.json   <root>/annotations/test.json   (COCO, one category "ship")
<root>/summary.json
```

COCO conventions: ``bbox = [x, y, w, h]`` in pixels, ``area = w * h`` unless the source gives
its own (HRSID: the release's mask area, see ``ImageRecord.areas``), ``iscrowd = 0``,
image and annotation ids from 1, ``file_name`` relative to ``images/<split>/``.
Datasets are written into a temporary sibling directory and renamed into place only when
complete, so an interrupted run never leaves a half dataset that training would use.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

SPLITS = ("train", "test")
CATEGORIES = [{"id": 1, "name": "ship"}]
SMALL, MEDIUM = 32 ** 2, 96 ** 2


def coco_size_bucket(area: float) -> str:
    """COCO's size ranges: small < 32^2 <= medium < 96^2 <= large."""
    return "small" if area < SMALL else "medium" if area < MEDIUM else "large"


@dataclass
class ImageRecord:
    """One image to write: pixels (an array, or the path of a file to copy as is), its size
    (height, width), boxes (``xyxy``), extra COCO image fields, optionally each box's COCO
    ``area`` as the source gives it (``None``: ``w * h``) and extra fields of each box's
    annotation (``box_extra``, one dict per box, e.g. the synthetic ship's ``rbox``)."""

    file_name: str
    image: np.ndarray | Path
    boxes: np.ndarray
    extra: dict = field(default_factory=dict)
    size: tuple | None = None
    areas: np.ndarray | None = None
    box_extra: list | None = None

    @property
    def hw(self) -> tuple:
        return self.size if self.size is not None else tuple(self.image.shape[:2])


def save_png(image, path: Path) -> None:
    """Write an array as PNG, or copy an existing image file unchanged."""
    if isinstance(image, (str, Path)):
        shutil.copyfile(image, path)
    else:
        Image.fromarray(image).save(path, format="PNG")


def _coco_dict(records: list[tuple[ImageRecord, int, int]]) -> dict:
    images, annotations = [], []
    for img_id, (rec, height, width) in enumerate(records, start=1):
        images.append({"id": img_id, "file_name": rec.file_name, "width": width,
                       "height": height, **rec.extra})
        boxes = np.asarray(rec.boxes, dtype=float).reshape(-1, 4)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) if rec.areas is None \
            else np.asarray(rec.areas, dtype=float).reshape(-1)
        extras = rec.box_extra if rec.box_extra is not None else [{}] * len(boxes)
        if len(extras) != len(boxes):
            raise ValueError(f"{rec.file_name}: {len(extras)} box_extra entries for "
                             f"{len(boxes)} boxes")
        for (x1, y1, x2, y2), area, extra in zip(boxes, areas, extras):
            w, h = x2 - x1, y2 - y1
            annotations.append({"id": len(annotations) + 1, "image_id": img_id,
                                "category_id": 1, "bbox": [x1, y1, w, h], "area": float(area),
                                "iscrowd": 0, **extra})
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}


def summarize_coco(coco) -> dict:
    """Images, ships, boxes per image and COCO size distribution of a COCO dict or file."""
    if not isinstance(coco, dict):
        coco = json.loads(Path(coco).read_text())
    sizes = {"small": 0, "medium": 0, "large": 0}
    for ann in coco["annotations"]:
        sizes[coco_size_bucket(ann["area"])] += 1
    n_img, n_ann = len(coco["images"]), len(coco["annotations"])
    return {"images": n_img, "ships": n_ann,
            "ships_per_image": round(n_ann / n_img, 3) if n_img else 0.0, **sizes}


def write_coco_dataset(out_dir, splits: dict[str, Iterable[ImageRecord]],
                       writer: Callable[[np.ndarray, Path], None] = save_png,
                       extra_summary: dict | None = None) -> dict:
    """Write ``splits`` in the common layout at ``out_dir`` atomically; return the summary."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        summary = {}
        (tmp / "annotations").mkdir()
        for split, records in splits.items():
            img_dir = tmp / "images" / split
            img_dir.mkdir(parents=True)
            written = []
            for rec in records:
                writer(rec.image, img_dir / rec.file_name)
                written.append((rec, *rec.hw))
            coco = _coco_dict(written)
            (tmp / "annotations" / f"{split}.json").write_text(json.dumps(coco))
            summary[split] = summarize_coco(coco)
        summary.update(extra_summary or {})
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
        return summary
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def validate_layout(root) -> None:
    """Check the layout before training: annotation files, listed images present and
    decodable. Raises a one-line ``FileNotFoundError``/``ValueError`` naming the file."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset not found (run its prepare stage first)")
    for split in SPLITS:
        ann = root / "annotations" / f"{split}.json"
        if not ann.is_file():
            raise FileNotFoundError(f"{ann}: annotation file missing")
        try:
            coco = json.loads(ann.read_text())
            images = coco["images"]
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{ann}: not a COCO annotation file") from None
        for info in images:
            path = root / "images" / split / info["file_name"]
            if not path.is_file():
                raise FileNotFoundError(f"{path}: image listed in {ann.name} is missing")
            try:
                with Image.open(path) as im:
                    im.verify()
            except Exception:
                raise ValueError(f"{path}: image cannot be decoded") from None
