"""The ship sizes a run trains on, beside SSDD's: COCO size buckets, median box size and
ship length of a training split, in the generated images and as the network sees them after
mmdet's keep-ratio ``Resize``.

The study report (``pipeline/study.py``) writes :func:`size_section` into its README: a study
that shrinks the images (``image_scale``, the schedule's resize ``scale``) shrinks the ships,
which moves them from the large and medium COCO buckets into small.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .coco_layout import coco_size_bucket

BUCKETS = ("small", "medium", "large")
SHORT_SHIP = 16.0       # px: the notes' smallest length bin (<16 px)
HARD_SHIP = 8.0         # px: two cells of the stride-4 P2 map, one of the stride-8 P3 map

# The SSDD test split, from shared/notes/ssdd_statistics.md: 232 images, 546 ships and 2.35
# ships per image (section 2); buckets of the horizontal (axis-aligned) envelope of each
# rotated box, median sqrt(envelope area) 28.4 px, median rotated long side 41 px and 11.4% of
# ships under 16 px long (section 3).
SSDD_TEST = {"images": 232, "ships": 546, "ships_per_image": 2.35, "small": 53.7,
             "medium": 42.3, "large": 4.0, "median_sqrt_area": 28.4, "median_length": 41.0,
             "short_ships": 11.4}

COLUMNS = (("images", "images", "{:d}"), ("ships", "ships", "{:d}"),
           ("ships_per_image", "ships/image", "{:.2f}"), ("small", "small %", "{:.1f}"),
           ("medium", "medium %", "{:.1f}"), ("large", "large %", "{:.1f}"),
           ("median_sqrt_area", "median √(box area) px", "{:.1f}"),
           ("median_length", "median ship length px", "{:.1f}"),
           ("short_ships", f"ships < {SHORT_SHIP:.0f} px long %", "{:.1f}"))


def resize_factor(width: float, height: float, scale) -> float:
    """mmcv's keep-ratio rescale factor for an image of ``width`` x ``height`` and a
    ``Resize`` scale ``(w, h)``: min(long edge limit / long side, short limit / short side)
    (``mmcv.image.geometric.rescale_size``); 1.0 without a scale."""
    if scale is None:
        return 1.0
    return min(max(scale) / max(width, height), min(scale) / min(width, height))


def size_stats(coco, resize_scale=None) -> dict:
    """Size distribution of a COCO dict or file, each box scaled by its image's
    :func:`resize_factor`: counts, bucket shares (%) by the annotation's ``area``, median
    sqrt(area) and, where annotations carry the synthetic ``rbox``, the median ship length and
    the share of ships shorter than :data:`SHORT_SHIP` (else ``None``)."""
    if not isinstance(coco, dict):
        coco = json.loads(Path(coco).read_text())
    factors = {im["id"]: resize_factor(im["width"], im["height"], resize_scale)
               for im in coco["images"]}
    anns = coco["annotations"]
    f = np.array([factors[a["image_id"]] for a in anns], float)
    areas = np.array([a["area"] for a in anns], float) * f ** 2
    n_img, n_ann = len(coco["images"]), len(anns)
    stats = {"images": n_img, "ships": n_ann, "ships_per_image": n_ann / n_img if n_img else 0.0,
             "median_factor": float(np.median(list(factors.values()))) if factors else 1.0}
    buckets = [coco_size_bucket(a) for a in areas]
    stats.update({b: 100.0 * buckets.count(b) / n_ann if n_ann else 0.0 for b in BUCKETS})
    stats["median_sqrt_area"] = float(np.median(np.sqrt(areas))) if n_ann else None
    lengths = _lengths(anns) * f if n_ann and all("rbox" in a for a in anns) else None
    stats["median_length"] = float(np.median(lengths)) if lengths is not None else None
    stats["short_ships"] = (100.0 * float(np.mean(lengths < SHORT_SHIP))
                            if lengths is not None else None)
    stats["hard_ships"] = (100.0 * float(np.mean(lengths < HARD_SHIP))
                           if lengths is not None else None)
    return stats


def _lengths(anns) -> np.ndarray:
    """Each ship's length: the long side of its rotated box ``[cx, cy, w, h, angle]``."""
    return np.array([max(a["rbox"][2], a["rbox"][3]) for a in anns], float)


def _cell(stats: dict, key: str, fmt: str) -> str:
    value = stats.get(key)
    return "-" if value is None else fmt.format(value)


def markdown_table(rows: list[tuple[str, dict]]) -> str:
    """``(label, stats)`` rows as a pipe table with :data:`COLUMNS`."""
    head = "| data | " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "|:--|" + "--:|" * len(COLUMNS)
    body = ["| " + label + " | " + " | ".join(_cell(s, k, fmt) for k, _, fmt in COLUMNS) + " |"
            for label, s in rows]
    return "\n".join([head, rule, *body])


def _scales(params: dict, dataset: str) -> list:
    """The distinct resize scales ``(w, h)`` of the study's detectors on ``dataset``."""
    schedule = params["profiles"][params["profile"]]["schedule"]
    scales = [tuple(schedule[det][dataset]["scale"]) for det in params["detectors"]
              if dataset in schedule.get(det, {})]
    return list(dict.fromkeys(scales))


def _data_label(params: dict, dataset: str) -> str:
    """``ssdd-like, image_scale 0.4, lengths 30-180 px`` or the real source's name."""
    data = params["data"][dataset]
    if data.get("source", "synthetic") != "synthetic":
        return f"{data['source']} release"
    profile_data = params["profiles"][params["profile"]].get("data", {}).get(dataset, {})
    parts = [str(data.get("preset", "synthetic")),
             f"image_scale {profile_data.get('image_scale', 1.0)}"]
    if "ship_length_range" in profile_data:
        lo, hi = profile_data["ship_length_range"]
        parts.append(f"lengths {lo}-{hi} px before scaling")
    return ", ".join(parts)


def dataset_rows(params: dict, data_root, dataset: str) -> list[tuple[str, dict]]:
    """The train split of ``data_root/<dataset>`` as generated, then as each resize scale of
    the study's detectors feeds it to the network."""
    ann = Path(data_root) / dataset / "annotations" / "train.json"
    coco = json.loads(ann.read_text())
    rows = [(f"{dataset} train split as generated ({_data_label(params, dataset)})",
             size_stats(coco))]
    for scale in _scales(params, dataset):
        stats = size_stats(coco, scale)
        rows.append((f"{dataset} train split as trained (Resize to {scale[0]}x{scale[1]}: "
                     f"x{stats['median_factor']:.2f})", stats))
    return rows


def _image_scale(params: dict, dataset: str) -> float:
    """The profile's ``image_scale`` of a synthetic dataset (1.0 for a real release)."""
    if params["data"][dataset].get("source", "synthetic") != "synthetic":
        return 1.0
    profile_data = params["profiles"][params["profile"]].get("data", {}).get(dataset, {})
    return float(profile_data.get("image_scale", 1.0))


def shrink_sentence(dataset: str, image_scale: float, trained: dict) -> str:
    """What the overall scaling (``image_scale`` x the as-trained row's median resize
    factor) does to the ships' size buckets and to a ship of SSDD's median length."""
    scale = image_scale * trained["median_factor"]
    verb = "shrink" if scale < 1 else "enlarge"
    hard = trained.get("hard_ships")
    hard_text = "" if hard is None else \
        f"; {hard:.1f}% of the {dataset} ships trained on here are that short"
    median = SSDD_TEST["median_length"]
    return (f"Scaling by s multiplies each box's area by s², while COCO's thresholds (32² and "
            f"96² px) stay put: shrinking moves ships from large into medium and from medium "
            f"into small, enlarging the other way. For {dataset}, image_scale and the Resize "
            f"together {verb} the scenes by about x{scale:.2f}, so a ship of SSDD's median "
            f"length ({median:.0f} px) is {median * scale:.0f} px long as trained. Ships under "
            f"~{HARD_SHIP:.0f} px span two cells of the stride-4 P2 map (one of P3) and are "
            f"hard to detect at all{hard_text}. COCO's APs/APm/APl bucket the test boxes in the "
            f"generated images' pixels (predictions are scaled back before scoring): the "
            f"\"as generated\" row's buckets, not the \"as trained\" ones.")


def size_section(params: dict, data_root) -> str:
    """The README section "Ship sizes trained on vs SSDD": SSDD's test split beside the
    train split of each of the study's datasets, with a paragraph on what the scaling does."""
    rows = [("SSDD test split (shared/notes/ssdd_statistics.md; horizontal envelopes of the "
             "rotated boxes)", SSDD_TEST)]
    notes = []
    for dataset in params["datasets"]:
        try:
            ds_rows = dataset_rows(params, data_root, dataset)
        except FileNotFoundError as exc:
            notes.append(f"{dataset}: train annotations not found ({exc.filename}).")
            continue
        rows += ds_rows
        if len(ds_rows) > 1:
            notes.append(shrink_sentence(dataset, _image_scale(params, dataset), ds_rows[-1][1]))
    legend = ("Shares by each box's COCO `area`; ship length = the long side of the rotated "
              "box (synthetic data keeps it as `rbox`; `-` where the annotations have none).")
    return "\n\n".join(["# Ship sizes trained on vs SSDD", markdown_table(rows), legend,
                         *notes]) + "\n\n"
