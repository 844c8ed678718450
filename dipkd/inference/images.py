"""Read the images given to ``dipkd infer`` as the array the detector was trained on.

The models were trained on 8-bit grayscale PNGs that mmcv loads as 3-channel BGR ``uint8``
(the three channels equal); :func:`read_image` returns that array for any input
(mmdet's ``LoadImageFromNDArray`` then takes it as it is):

- 8-bit grayscale -> the gray value in the three channels;
- 16-bit (uint16 PNG/TIFF, also other integer and float rasters such as SAR amplitude
  GeoTIFFs) -> 8-bit by a robust percentile stretch, :func:`stretch_to_uint8`;
- RGB / BGR colour -> kept (cv2 reads BGR); RGBA -> alpha dropped; gray + alpha -> gray.

Decoding is cv2's (``cv2.imdecode`` of the file's bytes with ``IMREAD_UNCHANGED``, so that the
bit depth and the channels are the file's own): PNG, JPEG, TIFF, BMP. A file that is missing,
cannot be read or is not a decodable image raises :class:`ImageReadError` with a one-line
message naming it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# Percentiles of the 16-bit -> 8-bit stretch (see stretch_to_uint8).
STRETCH_PERCENTILES = (0.5, 99.5)
# At most this many pixels enter the percentiles of a non-uint16 raster (a regular subsample).
_PERCENTILE_SAMPLE = 4_000_000


class ImageReadError(ValueError):
    """An input image cannot be read (missing, unreadable, not an image, unsupported)."""


def expand_inputs(paths) -> list[tuple[Path, str | None]]:
    """The images of the command line, in order: a file as given; a directory -> its image
    files (:data:`IMAGE_SUFFIXES`, any case, not recursive), sorted by name. Returns
    ``(path, error)`` pairs: ``error`` is a reason when the input is unusable (missing path,
    a directory without images), else None."""
    out: list[tuple[Path, str | None]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                out.append((path, "directory contains no image files ("
                            + ", ".join(s[1:] for s in IMAGE_SUFFIXES) + ")"))
            out.extend((p, None) for p in files)
        elif not path.exists():
            out.append((path, "file not found"))
        else:
            out.append((path, None))
    return out


def stretch_to_uint8(img: np.ndarray, percentiles=STRETCH_PERCENTILES) -> np.ndarray:
    """Linear stretch of a high-dynamic-range raster to ``uint8``: the ``percentiles``
    (default 0.5 and 99.5, over all channels together) map to 0 and 255, values outside are
    clipped; NaN -> 0, +inf -> 255.

    Why percentiles: SAR amplitude is heavy-tailed. A few very bright scatterers (ships,
    corner reflectors, harbour structures) sit orders of magnitude above the sea clutter,
    so a min-max scaling maps almost the whole scene to the first few grey levels, and a
    fixed shift (``>> 8``) depends on how many of the 16 bits the product actually uses
    (often 10-12). Clipping the 0.5 % extremes on each side puts the clutter in the middle
    of the 8-bit range and saturates the brightest targets, which is how the 8-bit training
    chips (SSDD/HRSID-style PNGs) look. A constant image maps to 0.
    """
    lo, hi = _percentiles(img, percentiles)
    data = np.nan_to_num(img.astype(np.float32), nan=lo, posinf=hi, neginf=lo)
    if not hi > lo:
        return np.zeros(img.shape, np.uint8)
    out = (data - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _percentiles(img: np.ndarray, percentiles) -> tuple[float, float]:
    if img.dtype == np.uint16:   # exact and linear-time for any scene size: a histogram
        counts = np.bincount(img.ravel(), minlength=65536)
        cdf = np.cumsum(counts) / max(1, img.size)
        lo, hi = (int(np.searchsorted(cdf, p / 100.0, side="left")) for p in percentiles)
        return float(lo), float(hi)
    flat = img.ravel()
    if flat.size > _PERCENTILE_SAMPLE:
        flat = flat[:: flat.size // _PERCENTILE_SAMPLE + 1]
    flat = flat.astype(np.float64)
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return 0.0, 0.0
    lo, hi = np.percentile(flat, percentiles)
    return float(lo), float(hi)


def to_bgr_uint8(img: np.ndarray, name: str = "image") -> np.ndarray:
    """A decoded raster (cv2 channel order) -> ``(h, w, 3)`` BGR ``uint8`` (module doc)."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        channels = 1
    elif img.ndim == 3 and img.shape[2] in (2, 3, 4):
        channels = img.shape[2]
    else:
        raise ImageReadError(f"{name}: unsupported image shape {img.shape} "
                             "(expected grayscale, RGB or RGBA)")
    if channels == 2:            # gray + alpha
        img = img[:, :, 0]
    elif channels == 4:          # BGRA: drop alpha
        img = img[:, :, :3]
    if img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    elif img.dtype != np.uint8:
        img = stretch_to_uint8(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img)


def _quiet_imdecode(cv2, data: np.ndarray):
    """``cv2.imdecode`` without OpenCV's own warnings on stderr (a corrupt file is reported
    once, by :func:`read_image`)."""
    try:
        from cv2.utils import logging as cv_logging
        level = cv_logging.getLogLevel()
        cv_logging.setLogLevel(cv_logging.LOG_LEVEL_SILENT)
    except (ImportError, AttributeError):   # an OpenCV build without the logging utils
        return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    try:
        return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    finally:
        cv_logging.setLogLevel(level)


def read_image(path) -> np.ndarray:
    """The image file ``path`` as ``(h, w, 3)`` BGR ``uint8`` (module doc); raises
    :class:`ImageReadError` naming the file."""
    import cv2

    path = Path(path)
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if data.size == 0:
        raise ImageReadError(f"{path}: empty file")
    img = _quiet_imdecode(cv2, data)
    if img is None or img.size == 0:
        raise ImageReadError(f"{path}: not a readable image (corrupt, truncated or not an "
                             f"image file; readable: png, jpg, tif, bmp)")
    return to_bgr_uint8(img, str(path))
