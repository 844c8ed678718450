"""Real SAR data sources by name: the one place that says what a source is.

``params.yaml``'s ``data.<name>.source`` is ``synthetic`` (the offline generator,
:mod:`dipkd.datasets.synthetic`) or one of :data:`REAL_SOURCES`. Each entry holds the
converter of the unpacked release into the common layout, the release's published counts
(a converted dataset that differs gets a warning), and the synthetic preset shaped like it
(the stand-in a dataset of that name gets offline when params names no ``preset``). A new
real dataset is its converter module and one entry here (plus its ``data`` entry in
params.yaml).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .hrsid import convert_hrsid
from .ssdd import convert_ssdd

SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class DataSource:
    name: str
    convert: Callable[[Path, Path, dict], dict]   # (release folder, out_dir, options) -> summary
    published: dict                                # {"images": n, "ships": n} of the release
    stand_in: str                                  # synthetic preset shaped like it


REAL_SOURCES: dict[str, DataSource] = {s.name: s for s in (
    DataSource("ssdd", lambda root, out, options: convert_ssdd(
        root, out, options.get("variant", "BBox_SSDD")),
        {"images": 1160, "ships": 2456}, "ssdd-like"),
    DataSource("hrsid", lambda root, out, options: convert_hrsid(root, out),
               {"images": 5604, "ships": 16951}, "hrsid-like"),
)}
SOURCES = (SYNTHETIC, *REAL_SOURCES)
