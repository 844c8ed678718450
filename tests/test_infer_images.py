"""Reading the inputs of `dipkd infer` (dipkd.inference.images): 8-bit grayscale, 16-bit
(percentile stretch), RGB and RGBA files all become the 3-channel 8-bit BGR array the models
were trained on; a corrupt, empty, missing or non-image file raises one clear error naming it."""
import cv2
import numpy as np
import pytest
from PIL import Image

from dipkd.inference.images import (ImageReadError, expand_inputs, read_image,
                                    stretch_to_uint8)


def _gray(h=40, w=60):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w), dtype=np.uint8)


def test_8bit_grayscale_is_the_gray_value_in_three_channels(tmp_path):
    gray = _gray()
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    img = read_image(tmp_path / "g.png")
    assert img.shape == (40, 60, 3) and img.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(img[:, :, c], gray)
    # exactly what mmcv gives the model in training (imread of the 8-bit PNG, BGR)
    import mmcv
    np.testing.assert_array_equal(img, mmcv.imread(str(tmp_path / "g.png")))


def _sar16(h=100, w=120):
    """16-bit 'SAR amplitude': clutter 1000..2000 and a few very bright scatterers."""
    rng = np.random.default_rng(1)
    img = rng.integers(1000, 2001, (h, w)).astype(np.uint16)
    img.flat[rng.choice(img.size, 10, replace=False)] = 60000
    return img


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_is_stretched_by_percentiles(tmp_path, suffix):
    raw = _sar16()
    path = tmp_path / f"s{suffix}"
    assert cv2.imwrite(str(path), raw)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    img = read_image(path)
    assert img.shape == (100, 120, 3) and img.dtype == np.uint8
    assert (img[:, :, 0] == img[:, :, 2]).all()
    out = img[:, :, 0].astype(int)
    # the clutter fills the 8-bit range (a min-max or >>8 scaling would put it near 0-8)
    assert 100 <= np.median(out) <= 155
    assert out.min() == 0 and out.max() == 255
    lo, hi = np.percentile(raw, [0.5, 99.5])
    assert (out[raw <= lo] == 0).all() and (out[raw >= hi] == 255).all()
    # monotonic: a brighter input pixel is never darker
    order = np.argsort(raw.ravel(), kind="stable")
    assert (np.diff(out.ravel()[order]) >= 0).all()


def test_stretch_of_constant_and_float_rasters():
    assert (stretch_to_uint8(np.full((5, 5), 700, np.uint16)) == 0).all()
    f = np.linspace(0.0, 1.0, 400, dtype=np.float32).reshape(20, 20)
    f[0, 0] = np.nan
    out = stretch_to_uint8(f)
    assert out.dtype == np.uint8 and out[0, 0] == 0 and out[-1, -1] == 255
    assert abs(int(out[10, 0]) - 127) <= 3


def test_rgb_stays_bgr_and_rgba_drops_alpha(tmp_path):
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50          # R, G, B
    Image.fromarray(rgb, "RGB").save(tmp_path / "c.png")
    img = read_image(tmp_path / "c.png")
    assert img.shape == (30, 40, 3)
    assert tuple(img[0, 0]) == (50, 100, 200)                     # BGR, as mmcv loads it

    rgba = np.dstack([rgb, np.full((30, 40), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img.shape == (30, 40, 3) and tuple(img[5, 5]) == (50, 100, 200)

    la = np.dstack([_gray(), np.full((40, 60), 9, np.uint8)])      # gray + alpha
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    img = read_image(tmp_path / "la.png")
    assert img.shape == (40, 60, 3)
    np.testing.assert_array_equal(img[:, :, 1], _gray())


def test_unreadable_files_raise_one_line_naming_them(tmp_path, capfd):
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), _gray())
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:60])
    (tmp_path / "notes.png").write_text("not an image at all\n")
    (tmp_path / "empty.tif").write_bytes(b"")
    cases = {"trunc.png": "not a readable image", "notes.png": "not a readable image",
             "empty.tif": "empty file", "missing.png": "file not found"}
    for name, reason in cases.items():
        with pytest.raises(ImageReadError) as info:
            read_image(tmp_path / name)
        message = str(info.value)
        assert str(tmp_path / name) in message and reason in message
        assert "\n" not in message
    assert capfd.readouterr().err == ""      # no OpenCV warnings besides our one line


def test_directories_expand_to_their_images_sorted(tmp_path):
    d = tmp_path / "scenes"
    (d / "sub").mkdir(parents=True)
    for name in ("b.TIF", "a.png", "c.jpeg", "notes.txt", "sub/z.png"):
        (d / name).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    items = expand_inputs([d, tmp_path / "one.bmp", tmp_path / "empty"])
    assert [(p.name, err) for p, err in items[:3]] == [("a.png", None), ("b.TIF", None),
                                                      ("c.jpeg", None)]
    assert items[3] == (tmp_path / "one.bmp", "file not found")
    assert items[4][0] == tmp_path / "empty" and "no image files" in items[4][1]
    assert len(items) == 5
