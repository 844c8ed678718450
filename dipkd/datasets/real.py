"""What a real data source is (:class:`DataSource`), and the checks its converter shares
(box validation, image decoding, the comparison with the published counts); the sources
themselves are the modules of :mod:`dipkd.datasets.sources`."""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image


@dataclass(frozen=True)
class DataSource:
    """A real SAR release by name: its converter into the common layout, the release's
    published counts (a converted dataset that differs gets a warning), and the synthetic
    preset shaped like it (the stand-in a dataset of that name gets offline)."""
    name: str
    convert: Callable[[Path, Path, dict], dict]   # (release folder, out_dir, options) -> summary
    published: dict                                # {"images": n, "ships": n} of the release
    stand_in: str                                  # synthetic preset shaped like it


class DatasetError(ValueError):
    """Bad input in a real dataset; the message names the file."""


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of a decodable image; DatasetError otherwise."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.height, im.width
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file missing") from None
    except Exception:
        raise DatasetError(f"{path}: image cannot be decoded") from None


def check_box(box, height: int, width: int, where: str):
    """Validate an ``xyxy`` box against its image: positive size; a box that leaves the
    image by at most one pixel is clipped with a warning, a larger excursion is an error."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if x2 <= x1 or y2 <= y1:
        raise DatasetError(f"{where}: box {[x1, y1, x2, y2]} has no positive area")
    over = max(-x1, -y1, x2 - width, y2 - height, 0.0)
    if over > 1.0:
        raise DatasetError(f"{where}: box {[x1, y1, x2, y2]} lies outside its "
                           f"{width}x{height} image")
    if over > 0:
        warnings.warn(f"{where}: box {[x1, y1, x2, y2]} clipped to the {width}x{height} image",
                      stacklevel=2)
        x1, y1 = max(x1, 0.0), max(y1, 0.0)
        x2, y2 = min(x2, float(width)), min(y2, float(height))
    return [x1, y1, x2, y2]


def compare_with_published(name: str, splits: dict) -> list[str]:
    """Warnings where the converted counts (``splits``: split -> ImageRecords) differ from the
    dataset's paper."""
    images = sum(len(recs) for recs in splits.values())
    ships = sum(len(r.boxes) for recs in splits.values() for r in recs)
    from .sources import REAL_SOURCES   # (the sources' modules import this one)
    ref = REAL_SOURCES[name].published
    notes = []
    if images != ref["images"] or ships != ref["ships"]:
        notes.append(f"{name}: {images} images / {ships} ships, the published release has "
                     f"{ref['images']} / {ref['ships']}")
        warnings.warn(notes[-1], stacklevel=2)
    return notes
