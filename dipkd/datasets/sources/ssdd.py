"""SSDD (Zhang et al. 2021, "SAR Ship Detection Dataset (SSDD): Official Release and
Comprehensive Data Analysis") to the common COCO layout.

Reads the official release's PASCAL VOC boxes (``<variant>/voc_style/{JPEGImages,
Annotations}``, variant ``BBox_SSDD`` by default, an extra nested ``Official-SSDD-OPEN/`` is
fine) and applies the official split: an image whose number ends in 1 or 9 is a test image
(232 test / 928 train). Boxes: COCO ``[xmin, ymin, xmax - xmin, ymax - ymin]`` from the VOC
integers. Test images get ``scene: inshore|offshore`` from ``ImageSets/Main/test_inshore.txt``
/ ``test_offshore.txt`` when present. When the release's own ``coco_style`` annotations are
present they are compared with the VOC boxes (the COCO ones are floats derived from polygons,
so small differences are expected and reported, larger ones are warnings).
"""
from __future__ import annotations

import json
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..coco_layout import ImageRecord, write_coco_dataset
from ..real import DataSource, DatasetError, check_box, compare_with_published, image_size


def is_test(number: int) -> bool:
    """The official split rule: file numbers ending in 1 or 9 are test images."""
    return number % 10 in (1, 9)


def find_voc_root(root: Path, variant: str = "BBox_SSDD") -> Path:
    root = Path(root)
    candidates = sorted(root.rglob("voc_style"), key=lambda p: len(p.parts))
    preferred = [p for p in candidates if p.parent.name == variant]
    for p in preferred + candidates:
        if (p / "JPEGImages").is_dir() and (p / "Annotations").is_dir():
            return p
    if (root / "JPEGImages").is_dir() and (root / "Annotations").is_dir():
        return root
    raise DatasetError(f"{root}: no SSDD voc_style folder with JPEGImages/ and Annotations/ "
                       "found (expected the official release layout)")


def read_voc(xml_path: Path) -> list[list[float]]:
    """VOC ``<object><bndbox>`` boxes as ``xyxy`` floats."""
    try:
        tree = ET.parse(xml_path)
    except (ET.ParseError, OSError) as exc:
        raise DatasetError(f"{xml_path}: malformed XML ({str(exc)[:80]})") from None
    boxes = []
    for obj in tree.getroot().iter("object"):
        bb = obj.find("bndbox")
        try:
            boxes.append([float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")])
        except (AttributeError, TypeError, ValueError):
            raise DatasetError(f"{xml_path}: object without a valid bndbox") from None
    return boxes


def _scene_lists(voc: Path) -> dict[str, str]:
    scenes = {}
    for scene in ("inshore", "offshore"):
        listing = voc / "ImageSets" / "Main" / f"test_{scene}.txt"
        if listing.is_file():
            for line in listing.read_text().split():
                scenes[Path(line).stem] = scene
    return scenes


def _records(voc: Path):
    splits = {"train": [], "test": []}
    scenes = _scene_lists(voc)
    images = sorted(p for p in (voc / "JPEGImages").iterdir()
                    if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not images:
        raise DatasetError(f"{voc / 'JPEGImages'}: no images")
    for img in images:
        try:
            number = int(img.stem)
        except ValueError:
            raise DatasetError(f"{img}: SSDD image names are numbers (000001.jpg)") from None
        xml = voc / "Annotations" / f"{img.stem}.xml"
        if not xml.is_file():
            raise DatasetError(f"{xml}: missing annotation for image {img.name}")
        h, w = image_size(img)
        boxes = [check_box(b, h, w, str(xml)) for b in read_voc(xml)]
        split = "test" if is_test(number) else "train"
        extra = {"ssdd_number": number}
        if split == "test" and img.stem in scenes:
            extra["scene"] = scenes[img.stem]
        splits[split].append(ImageRecord(file_name=img.name, image=img, size=(h, w),
                                         boxes=np.asarray(boxes).reshape(-1, 4), extra=extra))
    return splits


def compare_coco_style(voc: Path, splits) -> dict:
    """Compare the VOC boxes with the release's ``coco_style`` JSON when it is present."""
    coco_dir = voc.parent / "coco_style" / "annotations"
    if not coco_dir.is_dir():
        return {"coco_style": "absent"}
    voc_boxes = {rec.extra["ssdd_number"]: rec.boxes for recs in splits.values() for rec in recs}
    compared = mismatched = 0
    for split in ("train", "test"):
        path = coco_dir / f"{split}.json"
        if not path.is_file():
            continue
        try:
            coco = json.loads(path.read_text())
            anns = coco["annotations"]
            names = {im["id"]: Path(im["file_name"]).stem for im in coco["images"]}
        except (ValueError, KeyError, TypeError):
            raise DatasetError(f"{path}: malformed COCO JSON") from None
        per_image: dict[int, list] = {}
        for a in anns:
            per_image.setdefault(int(names[a["image_id"]]), []).append(a["bbox"])
        for number, boxes in per_image.items():
            compared += 1
            ours = voc_boxes.get(number, np.zeros((0, 4)))
            theirs = np.asarray(boxes, dtype=float).reshape(-1, 4)
            theirs[:, 2:] += theirs[:, :2]
            if len(ours) != len(theirs) or not np.allclose(np.sort(ours, 0), np.sort(theirs, 0),
                                                           atol=3.0):
                mismatched += 1
    if mismatched:
        warnings.warn(f"{coco_dir}: {mismatched} of {compared} images differ between the "
                      "VOC and COCO annotations by more than 3 px or in box count")
    return {"coco_style_images_compared": compared, "coco_style_images_differing": mismatched}


def convert_ssdd(root, out_dir, variant: str = "BBox_SSDD") -> dict:
    """Convert an unpacked SSDD release at ``root`` into the common layout at ``out_dir``."""
    voc = find_voc_root(Path(root), variant)
    splits = _records(voc)
    agreement = compare_coco_style(voc, splits)
    notes = compare_with_published("ssdd", splits)
    return write_coco_dataset(out_dir, splits, extra_summary={
        "source": "ssdd", "variant": variant, **agreement, "warnings": notes})


def _convert(root: Path, out_dir: Path, options: dict) -> dict:
    return convert_ssdd(root, out_dir, options.get("variant", "BBox_SSDD"))


SOURCE = DataSource("ssdd", _convert, published={"images": 1160, "ships": 2456},
                    stand_in="ssdd-like")
