"""HRSID (Wei et al. 2020, IEEE Access) to the common COCO layout.

Reads ``annotations/train2017.json`` and ``test2017.json`` of the release (images in
``JPEGImages/``), validates them (image files exist and decode with the listed size, boxes
inside the image and of no negative size, the single category is ``ship``) and writes the
common layout with image and annotation ids renumbered from 1 (the release's annotation id 0 is
pycocotools' "unmatched" marker). A zero-size box (width or height 0, or none left after
clipping to the image) is skipped, as COCO tools skip it; the summary counts those
(``skipped_boxes`` per split) and a warning names the file.

Each ship keeps the release's own ``area`` (it decides COCO's small/medium/large buckets, so
APs/APm/APl match mmdet run on the official files). HRSID is an instance-segmentation release:
its ``area`` is the ship's mask area, not the box's (in the one public copy of its COCO files
we could read, Ycc1999/modified-HRSID ``inshore_test.json``: integer pixel counts, median 0.57
of w*h, 12% of the ships in another bucket than w*h would put them). Only an annotation without
a valid ``area`` (missing, not a number, or <= 0) falls back to w*h; the summary counts those
(``area_fallbacks`` per split).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from ..coco_layout import ImageRecord, write_coco_dataset
from ..real import DataSource, DatasetError, check_box, compare_with_published, image_size

SPLIT_FILES = {"train": "train2017.json", "test": "test2017.json"}


def find_root(root: Path) -> tuple[Path, Path]:
    """(annotations dir, images dir) of an unpacked HRSID release."""
    root = Path(root)
    for ann in sorted(root.rglob("train2017.json"), key=lambda p: len(p.parts)):
        images = ann.parent.parent / "JPEGImages"
        if images.is_dir():
            return ann.parent, images
        raise DatasetError(f"{images}: image folder missing next to {ann.parent}")
    raise DatasetError(f"{root}: no HRSID annotations/train2017.json found")


def _load(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file missing")
    try:
        coco = json.loads(path.read_text())
        coco["images"], coco["annotations"], coco["categories"]
    except (ValueError, KeyError, TypeError):
        raise DatasetError(f"{path}: malformed COCO JSON") from None
    return coco


def _area(ann: dict):
    """The release's ``area`` of an annotation, or ``None`` when missing or not positive."""
    area = ann.get("area")
    if isinstance(area, bool) or not isinstance(area, (int, float)):
        return None
    return float(area) if np.isfinite(area) and area > 0 else None


def _box(ann: dict, height: int, width: int, where: str):
    """The annotation's ``xyxy`` box checked against its image, or ``None`` for a zero-size
    box (width or height 0, or degenerate once clipped to the image)."""
    x, y, bw, bh = (float(v) for v in ann["bbox"])
    if bw == 0 or bh == 0:
        return None
    box = check_box([x, y, x + bw, y + bh], height, width, where)
    return box if box[2] > box[0] and box[3] > box[1] else None


def _records(path: Path, images_dir: Path) -> tuple[list[ImageRecord], dict]:
    """The images of one split file and its counts: ``area_fallbacks`` (annotations whose
    area fell back to w*h) and ``skipped_boxes`` (zero-size boxes left out)."""
    coco = _load(path)
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    if set(cats.values()) != {"ship"}:
        raise DatasetError(f"{path}: expected the single category 'ship', found "
                           f"{sorted(set(cats.values()))}")
    boxes: dict = {}
    for a in coco["annotations"]:
        if a.get("category_id") not in cats:
            raise DatasetError(f"{path}: annotation {a.get('id')} has unknown category "
                               f"{a.get('category_id')}")
        boxes.setdefault(a["image_id"], []).append(a)
    records, counts = [], {"area_fallbacks": 0, "skipped_boxes": 0}
    for im in coco["images"]:
        img = images_dir / im["file_name"]
        h, w = image_size(img)
        if (h, w) != (im["height"], im["width"]):
            raise DatasetError(f"{img}: image is {w}x{h}, {path.name} says "
                               f"{im['width']}x{im['height']}")
        xyxy, areas = [], []
        for a in boxes.get(im["id"], []):
            box = _box(a, h, w, f"{path} (annotation {a['id']}, {im['file_name']})")
            if box is None:
                counts["skipped_boxes"] += 1
                continue
            area = _area(a)
            if area is None:
                counts["area_fallbacks"] += 1
                area = (box[2] - box[0]) * (box[3] - box[1])
            xyxy.append(box)
            areas.append(area)
        records.append(ImageRecord(file_name=Path(im["file_name"]).name, image=img, size=(h, w),
                                   boxes=np.asarray(xyxy).reshape(-1, 4),
                                   areas=np.asarray(areas, dtype=float)))
    if counts["skipped_boxes"]:
        warnings.warn(f"{path}: {counts['skipped_boxes']} zero-size box(es) skipped",
                      stacklevel=2)
    return records, counts


def convert_hrsid(root, out_dir) -> dict:
    """Convert an unpacked HRSID release at ``root`` into the common layout at ``out_dir``."""
    ann_dir, images_dir = find_root(Path(root))
    read = {split: _records(ann_dir / name, images_dir) for split, name in SPLIT_FILES.items()}
    splits = {split: records for split, (records, _) in read.items()}
    notes = compare_with_published("hrsid", splits)
    return write_coco_dataset(out_dir, splits, extra_summary={
        "source": "hrsid", "warnings": notes,
        **{key: {split: counts[key] for split, (_, counts) in read.items()}
           for key in ("area_fallbacks", "skipped_boxes")}})


SOURCE = DataSource("hrsid", lambda root, out_dir, options: convert_hrsid(root, out_dir),
                    published={"images": 5604, "ships": 16951}, stand_in="hrsid-like")
