"""The study report's "Ship sizes trained on vs SSDD" (dipkd/datasets/ship_sizes.py) on a
hand-made annotation file whose numbers are worked out by hand below."""
import json

import pytest
from mmcv.image.geometric import rescale_size

from dipkd.datasets.ship_sizes import SSDD_TEST, resize_factor, size_section, size_stats

# Three images: 500x330 and 250x165 with two ships each, 500x330 with none. At the Resize scale
# (192, 128) mmcv's keep-ratio factor is min(192/500, 128/330) = 0.384 for the 500x330 images
# and min(192/250, 128/165) = 0.768 for the 250x165 one.
SHIPS = [  # image, box w, h (area = w*h), rotated box length
    (1, 40, 40, 50.0),     # medium (1600 px²)  -> x0.384: 235.9 px², small; length 19.2
    (1, 100, 100, 120.0),  # large (10000)      -> 1474.6, medium; length 46.08
    (2, 20, 20, 18.0),     # small (400)        -> x0.768: 235.9, small; length 13.82 (< 16)
    (2, 50, 40, 60.0),     # medium (2000)      -> 1179.6, medium; length 46.08
]


def _coco(with_rbox=True) -> dict:
    images = [{"id": 1, "file_name": "a.png", "width": 500, "height": 330},
              {"id": 2, "file_name": "b.png", "width": 250, "height": 165},
              {"id": 3, "file_name": "c.png", "width": 500, "height": 330}]
    anns = []
    for i, (img, w, h, length) in enumerate(SHIPS, start=1):
        ann = {"id": i, "image_id": img, "category_id": 1, "bbox": [5, 5, w, h],
               "area": float(w * h), "iscrowd": 0}
        if with_rbox:
            ann["rbox"] = [5 + w / 2, 5 + h / 2, length, 4.0, 0.0]
        anns.append(ann)
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "ship"}]}


@pytest.mark.parametrize("size", [(500, 330), (250, 165), (330, 500), (668, 190), (800, 800)])
@pytest.mark.parametrize("scale", [(192, 128), (1000, 600), (160, 160)])
def test_resize_factor_is_mmcvs(size, scale):
    _, expected = rescale_size(size, scale, return_scale=True)
    assert resize_factor(*size, scale) == pytest.approx(expected)


def test_stats_as_generated(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(_coco()))
    stats = size_stats(path)
    assert (stats["images"], stats["ships"]) == (3, 4)
    assert stats["ships_per_image"] == pytest.approx(4 / 3)
    assert (stats["small"], stats["medium"], stats["large"]) == (25.0, 50.0, 25.0)
    # sqrt areas 20, 40, 44.7, 100; lengths 18, 50, 60, 120
    assert stats["median_sqrt_area"] == pytest.approx((40 + 2000 ** 0.5) / 2)
    assert stats["median_length"] == pytest.approx(55.0)
    assert stats["short_ships"] == 0.0


def test_stats_as_trained_shrink_ships_into_small():
    stats = size_stats(_coco(), (192, 128))
    assert stats["median_factor"] == pytest.approx(0.384)
    assert (stats["small"], stats["medium"], stats["large"]) == (50.0, 50.0, 0.0)
    # sqrt areas 15.36, 38.4, 15.36, 34.35; lengths 19.2, 46.08, 13.82, 46.08
    assert stats["median_sqrt_area"] == pytest.approx((15.36 + 2000 ** 0.5 * 0.768) / 2)
    assert stats["median_length"] == pytest.approx((19.2 + 46.08) / 2)
    assert stats["short_ships"] == 25.0 and stats["hard_ships"] == 0.0


def test_stats_without_rbox_leave_length_unknown():
    stats = size_stats(_coco(with_rbox=False))
    assert stats["median_length"] is None and stats["short_ships"] is None
    assert stats["small"] == 25.0


def _params(**data) -> dict:
    return {"profile": "study", "datasets": ["ssdd"], "detectors": ["faster_rcnn", "retinanet"],
            "data": {"ssdd": {"source": "synthetic", "preset": "ssdd-like"}},
            "profiles": {"study": {
                "data": {"ssdd": {"image_scale": 0.4, **data}},
                "schedule": {"faster_rcnn": {"ssdd": {"scale": [192, 128]}},
                             "retinanet": {"ssdd": {"scale": [192, 128]}}}}}}


def test_section_puts_the_split_beside_ssdd(tmp_path):
    ann = tmp_path / "ssdd" / "annotations" / "train.json"
    ann.parent.mkdir(parents=True)
    ann.write_text(json.dumps(_coco()))
    text = size_section(_params(ship_length_range=[30, 180]), tmp_path)
    lines = text.splitlines()
    assert lines[0] == "# Ship sizes trained on vs SSDD"
    rows = [line for line in lines if line.startswith("| ")][1:]       # past the header
    assert len(rows) == 3            # SSDD, as generated, one as-trained row (same scale twice)
    assert rows[0].endswith("| 232 | 546 | 2.35 | 53.7 | 42.3 | 4.0 | 28.4 | 41.0 | 11.4 |")
    assert "as generated (ssdd-like, image_scale 0.4, lengths 30-180 px before scaling)" in rows[1]
    assert rows[1].endswith("| 3 | 4 | 1.33 | 25.0 | 50.0 | 25.0 | 42.4 | 55.0 | 0.0 |")
    assert "Resize to 192x128: x0.38" in rows[2]
    assert rows[2].endswith("| 3 | 4 | 1.33 | 50.0 | 50.0 | 0.0 | 24.9 | 32.6 | 25.0 |")
    # image_scale 0.4 x resize 0.384 = 0.154: SSDD's median 41 px ship is 6 px long
    assert "shrink the scenes by about x0.15" in text
    assert f"median length ({SSDD_TEST['median_length']:.0f} px) is 6 px long" in text
    assert "from medium into small" in text and "0.0% of the ssdd ships" in text


def test_section_names_missing_annotations_instead_of_failing(tmp_path):
    text = size_section(_params(), tmp_path)
    assert "ssdd: train annotations not found" in text
    assert "| 232 | 546 |" in text
