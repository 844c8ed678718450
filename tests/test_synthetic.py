"""The synthetic SAR generator: determinism, boxes, sizes, speckle, presets, atomic writes."""
import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from dipkd.datasets import coco_layout
from dipkd.datasets.coco_layout import validate_layout
from dipkd.datasets.synthetic import PRESETS, generate_dataset, make_config, render_scene, speckle

TINY = dict(image_scale=0.2, num_train=6, num_test=3)


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    generate_dataset(tmp_path / "a", seed=3, **TINY)
    generate_dataset(tmp_path / "b", seed=3, **TINY)
    generate_dataset(tmp_path / "c", seed=4, **TINY)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert _files(tmp_path / "a") != _files(tmp_path / "c")


def test_test_split_does_not_depend_on_train_size(tmp_path):
    generate_dataset(tmp_path / "a", **TINY)
    generate_dataset(tmp_path / "b", **dict(TINY, num_train=2))
    assert (tmp_path / "a/annotations/test.json").read_bytes() == \
        (tmp_path / "b/annotations/test.json").read_bytes()


def test_boxes_are_valid_coco(tmp_path):
    generate_dataset(tmp_path / "d", **dict(TINY, num_train=20))
    coco = COCO(str(tmp_path / "d/annotations/train.json"))
    assert coco.loadCats(coco.getCatIds()) == [{"id": 1, "name": "ship"}]
    assert len(coco.getAnnIds()) > 0
    for ann in coco.loadAnns(coco.getAnnIds()):
        img = coco.loadImgs(ann["image_id"])[0]
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0
        assert x + w <= img["width"] + 1e-6 and y + h <= img["height"] + 1e-6
        assert ann["area"] == pytest.approx(w * h) and ann["iscrowd"] == 0
    validate_layout(tmp_path / "d")


def test_sizes_span_small_medium_large_at_full_scale():
    cfg = make_config("ssdd-like")
    buckets = {"small": 0, "medium": 0, "large": 0}
    for i in range(80):
        scene = render_scene(cfg, np.random.default_rng([0, 0, i]))
        for x1, y1, x2, y2 in scene.boxes:
            buckets[coco_layout.coco_size_bucket((x2 - x1) * (y2 - y1))] += 1
    assert all(n > 0 for n in buckets.values()), buckets
    assert buckets["small"] > buckets["large"]  # many small ships, as in SSDD


@pytest.mark.parametrize("looks", [1, 4])
def test_speckle_enl_matches_looks(looks):
    s = speckle((400, 400), looks, np.random.default_rng(0))
    assert s.mean() == pytest.approx(1.0, rel=0.02)
    assert s.mean() ** 2 / s.var() == pytest.approx(looks, rel=0.05)


@pytest.mark.parametrize("looks", [1.0, 3.0])
def test_sea_region_of_a_scene_has_the_configured_looks(looks):
    cfg = make_config("ssdd-like", looks=looks)
    scene = render_scene(cfg, np.random.default_rng(7))
    ratio = scene.intensity[scene.sea_mask] / scene.reflectivity[scene.sea_mask]
    assert scene.sea_mask.sum() > 10000
    assert ratio.mean() ** 2 / ratio.var() == pytest.approx(looks, rel=0.15)


def test_presets_differ_as_the_datasets_do():
    rng = np.random.default_rng
    hrsid = [render_scene(make_config("hrsid-like", image_scale=0.25), rng(i)) for i in range(40)]
    ssdd = [render_scene(make_config("ssdd-like", image_scale=0.25), rng(i)) for i in range(40)]
    assert all(s.image.shape[0] == s.image.shape[1] for s in hrsid)
    assert len({s.image.shape for s in ssdd}) > 5
    assert np.mean([len(s.boxes) for s in hrsid]) > np.mean([len(s.boxes) for s in ssdd])


def test_scene_types_follow_the_fractions():
    cfg = make_config("ssdd-like", image_scale=0.2, empty_fraction=0.2, inshore_fraction=0.4)
    types = [render_scene(cfg, np.random.default_rng(i)).scene_type for i in range(300)]
    empty = types.count("empty") / 300
    inshore = types.count("inshore") / 300
    assert 0.1 < empty < 0.3 and 0.25 < inshore < 0.5


def test_bad_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown synthetic preset 'dota'; valid: ssdd-like, hrsid-like"):
        make_config("dota")
    with pytest.raises(ValueError, match="unknown synthetic data setting 'size'; valid: width_range"):
        make_config("ssdd-like", size=3)
    assert set(PRESETS) == {"ssdd-like", "hrsid-like"}


def test_failed_write_leaves_previous_dataset_and_no_temp(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    generate_dataset(out, **TINY)
    before = _files(out)
    calls = {"n": 0}
    real = coco_layout.save_png

    def flaky(array, path):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError("disk full")
        real(array, path)

    monkeypatch.setattr(coco_layout, "save_png", flaky)
    monkeypatch.setattr(coco_layout.write_coco_dataset, "__defaults__", (flaky, None))
    with pytest.raises(OSError, match="disk full"):
        generate_dataset(out, seed=9, **TINY)
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    with pytest.raises(OSError):
        generate_dataset(tmp_path / "new", seed=9, **TINY)
    assert not (tmp_path / "new").exists()


def test_validate_layout_names_the_bad_file(tmp_path):
    root = tmp_path / "ds"
    generate_dataset(root, **TINY)
    with pytest.raises(FileNotFoundError, match="nope: dataset not found"):
        validate_layout(tmp_path / "nope")
    img = root / "images/test/000001.png"
    img.write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match="000001.png: image cannot be decoded"):
        validate_layout(root)
    img.unlink()
    with pytest.raises(FileNotFoundError, match="000001.png: image listed in test.json"):
        validate_layout(root)
    (root / "annotations/train.json").write_text("{")
    with pytest.raises(ValueError, match="train.json: not a COCO annotation file"):
        validate_layout(root)


def test_summary_written(tmp_path):
    summary = generate_dataset(tmp_path / "s", **TINY)
    on_disk = json.loads((tmp_path / "s/summary.json").read_text())
    assert on_disk["train"] == summary["train"] and summary["train"]["images"] == 6
