"""Synthetic SAR ship scenes: the offline default dataset.

A scene is a reflectivity map (sea clutter, optional land/harbour, ships with optional
cross-shaped sidelobes) multiplied by fully developed speckle: the intensity of an L-look
image is ``reflectivity * Gamma(shape=L, scale=1/L)`` (mean 1, variance 1/L, so the
equivalent number of looks ENL = mean^2/var of a homogeneous region equals L).
Images are stored as 8-bit amplitude: ``clip(AMPLITUDE_SCALE * sqrt(intensity), 0, 255)``.

Every image is rendered from its own generator seeded by ``(seed, split, index)``, so the
same seed gives byte-identical files and the test split does not change with ``num_train``.

Presets shaped like the paper's datasets: ``ssdd-like`` (images around 500x350, many small
ships, inshore and offshore scenes) and ``hrsid-like`` (800x800 tiles, denser ships). Size
knobs (``image_scale``, ``num_train``, ``num_test``, ...) make tiny versions for smoke runs.

CLI: ``python -m dipkd.datasets.synthetic --out DIR --preset ssdd-like --set image_scale=0.3``
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass

import numpy as np

from .coco_layout import ImageRecord, write_coco_dataset

AMPLITUDE_SCALE = 40.0
SPLIT_CODES = {"train": 0, "test": 1}


@dataclass(frozen=True)
class SceneConfig:
    """Knobs of the generator (lengths in pixels at ``image_scale`` 1)."""

    width_range: tuple = (300, 650)
    height_range: tuple = (250, 450)
    square: bool = False
    image_scale: float = 1.0
    num_train: int = 928
    num_test: int = 232
    looks: float = 3.0
    mean_ships: float = 2.0
    max_ships: int = 12
    ship_length_range: tuple = (8.0, 180.0)
    ship_width_ratio: tuple = (0.15, 0.35)
    inshore_fraction: float = 0.3
    empty_fraction: float = 0.05
    sidelobe_fraction: float = 0.3
    sea_level: float = 1.0
    sea_texture: float = 0.3
    ship_level: float = 30.0
    land_level: float = 5.0
    piers: int = 3


PRESETS = {
    "ssdd-like": SceneConfig(),
    "hrsid-like": SceneConfig(width_range=(800, 800), height_range=(800, 800), square=True,
                              num_train=3642, num_test=1962, mean_ships=3.0, max_ships=20,
                              ship_length_range=(8.0, 160.0), inshore_fraction=0.25,
                              empty_fraction=0.05, looks=2.0),
}


def make_config(preset: str, **overrides) -> SceneConfig:
    """The preset's config with ``overrides``; unknown names raise a one-line ValueError."""
    if preset not in PRESETS:
        raise ValueError(f"unknown synthetic preset {preset!r}; valid: {', '.join(PRESETS)}")
    valid = [f.name for f in dataclasses.fields(SceneConfig)]
    bad = [k for k in overrides if k not in valid]
    if bad:
        raise ValueError(f"unknown synthetic data setting {bad[0]!r}; valid: {', '.join(valid)}")
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    cfg = dataclasses.replace(PRESETS[preset], **overrides)
    if cfg.image_scale <= 0 or cfg.num_train < 0 or cfg.num_test < 0 or cfg.looks <= 0:
        raise ValueError("image_scale and looks must be > 0, num_train/num_test >= 0")
    return cfg


@dataclass
class Scene:
    intensity: np.ndarray      # float32 HxW, speckled intensity before quantisation
    reflectivity: np.ndarray   # float32 HxW, the noise-free scene
    image: np.ndarray          # uint8 HxW amplitude image
    boxes: np.ndarray          # float Kx4 xyxy, inside the image, positive size
    scene_type: str            # 'offshore' | 'inshore' | 'empty'
    sea_mask: np.ndarray       # bool HxW: open sea, away from ships, sidelobes and land


def speckle(shape, looks: float, rng: np.random.Generator) -> np.ndarray:
    """Fully developed L-look intensity speckle: Gamma(L, 1/L), mean 1, variance 1/L."""
    return rng.gamma(shape=looks, scale=1.0 / looks, size=shape).astype(np.float32)


def _smooth_noise(shape, cells: int, rng) -> np.ndarray:
    """Zero-mean, unit-ish smooth random field: coarse Gaussian grid, bilinear upsampling."""
    h, w = shape
    gh, gw = max(2, h // cells + 2), max(2, w // cells + 2)
    grid = rng.standard_normal((gh, gw))
    ys = np.linspace(0, gh - 1.001, h)
    xs = np.linspace(0, gw - 1.001, w)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    g = grid
    return ((1 - fy) * (1 - fx) * g[y0][:, x0] + (1 - fy) * fx * g[y0][:, x0 + 1]
            + fy * (1 - fx) * g[y0 + 1][:, x0] + fy * fx * g[y0 + 1][:, x0 + 1])


def _image_size(cfg: SceneConfig, rng) -> tuple[int, int]:
    w = rng.uniform(*cfg.width_range)
    h = w if cfg.square else rng.uniform(*cfg.height_range)
    return max(32, int(round(h * cfg.image_scale))), max(32, int(round(w * cfg.image_scale)))


def _land(cfg, shape, rng):
    """Coast along one image side with a wavy shoreline, textured land and bright piers
    (harbour structures that look like ships but are not annotated)."""
    h, w = shape
    side = rng.integers(4)
    along, across = (h, w) if side in (0, 1) else (w, h)
    depth = across * rng.uniform(0.2, 0.45)
    shore = depth + across * 0.08 * _smooth_noise((along, 1), max(8, along // 5), rng)[:, 0]
    dist = np.arange(across)[None, :] - shore[:, None]          # < 0 on land
    if side == 1 or side == 3:
        dist = dist[:, ::-1]
    land = dist < 0
    refl = cfg.land_level * np.exp(0.6 * _smooth_noise((along, across), 6, rng))
    for _ in range(cfg.piers):                                    # piers into the sea
        pos = rng.integers(0, along)
        length = int(across * rng.uniform(0.05, 0.15))
        width = max(1, int(rng.uniform(1, 4) * cfg.image_scale * 2))
        s = int(np.clip(shore[pos], 0, across - 1))
        rows = slice(max(0, pos - width), min(along, pos + width))
        cols = slice(s, min(across, s + length))
        if side in (1, 3):
            cols = slice(across - min(across, s + length), across - s)
        land[rows, cols] = True
        refl[rows, cols] = cfg.ship_level * rng.uniform(0.4, 1.0)
    if side in (2, 3):
        land, refl = land.T, refl.T
    return land, refl.astype(np.float32)


def _ship(cfg, shape, rng):
    """A bright oriented hull: rotated rectangle with a brighter core. Returns the pixel
    window, the reflectivity patch, its mask, the xyxy box and the brightest point."""
    h, w = shape
    lo, hi = cfg.ship_length_range
    length = np.exp(rng.uniform(np.log(lo), np.log(hi))) * cfg.image_scale
    length = max(length, 3.0)
    width = max(1.5, length * rng.uniform(*cfg.ship_width_ratio))
    theta = rng.uniform(0, np.pi)
    c, s = np.cos(theta), np.sin(theta)
    half_x = 0.5 * (abs(c) * length + abs(s) * width)
    half_y = 0.5 * (abs(s) * length + abs(c) * width)
    cx = rng.uniform(half_x, max(half_x + 1, w - half_x))
    cy = rng.uniform(half_y, max(half_y + 1, h - half_y))
    x1, x2 = max(0.0, cx - half_x), min(float(w), cx + half_x)
    y1, y2 = max(0.0, cy - half_y), min(float(h), cy + half_y)
    ys, xs = np.mgrid[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))] + 0.5
    u = (xs - cx) * c + (ys - cy) * s
    v = -(xs - cx) * s + (ys - cy) * c
    mask = (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)
    core = np.exp(-((u / (0.3 * length)) ** 2 + (v / (0.5 * width)) ** 2))
    patch = cfg.ship_level * rng.uniform(0.5, 1.5) * (0.5 + core)
    window = (slice(int(y1), int(np.ceil(y2))), slice(int(x1), int(np.ceil(x2))))
    return window, patch.astype(np.float32), mask, (x1, y1, x2, y2), (cy, cx, length)


def render_scene(cfg: SceneConfig, rng: np.random.Generator) -> Scene:
    """Render one scene (see the module docstring for the model)."""
    shape = _image_size(cfg, rng)
    h, w = shape
    sea = cfg.sea_level * np.exp(cfg.sea_texture * _smooth_noise(shape, 40, rng))
    refl = sea.astype(np.float32)
    sea_mask = np.ones(shape, bool)
    empty = rng.random() < cfg.empty_fraction
    inshore = rng.random() < cfg.inshore_fraction
    land = np.zeros(shape, bool)
    if inshore:
        land, land_refl = _land(cfg, shape, rng)
        refl = np.where(land, land_refl, refl)
        sea_mask &= ~land
    boxes = []
    if not empty:
        n = int(np.clip(rng.poisson(cfg.mean_ships), 1, cfg.max_ships))
        occupied = land.copy()
        for _ in range(n * 10):
            if len(boxes) == n:
                break
            window, patch, mask, box, (cy, cx, length) = _ship(cfg, shape, rng)
            if box[2] - box[0] < 1 or box[3] - box[1] < 1 or occupied[window].any():
                continue
            region = refl[window]
            region[mask] = patch[mask]
            y0, y1, x0, x1 = (max(0, int(box[1]) - 2), min(h, int(np.ceil(box[3])) + 2),
                              max(0, int(box[0]) - 2), min(w, int(np.ceil(box[2])) + 2))
            occupied[y0:y1, x0:x1] = True
            sea_mask[y0:y1, x0:x1] = False
            if rng.random() < cfg.sidelobe_fraction:
                _sidelobes(refl, sea_mask, int(cy), int(cx), length, patch.max(), rng)
            boxes.append(box)
    intensity = (refl * speckle(shape, cfg.looks, rng)).astype(np.float32)
    image = np.clip(AMPLITUDE_SCALE * np.sqrt(intensity), 0, 255).astype(np.uint8)
    scene_type = "empty" if not boxes else "inshore" if inshore else "offshore"
    if empty and inshore:
        scene_type = "inshore"
    return Scene(intensity=intensity, reflectivity=refl, image=image,
                 boxes=np.asarray(boxes, dtype=float).reshape(-1, 4), scene_type=scene_type,
                 sea_mask=sea_mask)


def _sidelobes(refl, sea_mask, cy, cx, length, peak, rng):
    """Cross-shaped sidelobe artefact through the brightest point, along range and azimuth,
    decaying with distance (not part of the ship's box)."""
    h, w = refl.shape
    reach = int(length * rng.uniform(1.5, 3.0)) + 2
    decay = max(1.0, reach / 3)
    d = np.arange(-reach, reach + 1)
    amp = (0.25 * peak * np.exp(-np.abs(d) / decay)).astype(np.float32)
    rows, cols = cy + d, cx + d
    ok_r, ok_c = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
    if 0 <= cy < h:
        refl[cy, cols[ok_c]] = np.maximum(refl[cy, cols[ok_c]], amp[ok_c])
        sea_mask[max(0, cy - 1):cy + 2, :][:, cols[ok_c]] = False
    if 0 <= cx < w:
        refl[rows[ok_r], cx] = np.maximum(refl[rows[ok_r], cx], amp[ok_r])
        sea_mask[rows[ok_r], max(0, cx - 1):cx + 2] = False


def _records(cfg: SceneConfig, seed: int, split: str, count: int):
    for index in range(count):
        rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
        scene = render_scene(cfg, rng)
        yield ImageRecord(file_name=f"{index:06d}.png", image=scene.image, boxes=scene.boxes,
                          extra={"scene": scene.scene_type})


def generate_dataset(out_dir, preset: str = "ssdd-like", seed: int = 0, **overrides) -> dict:
    """Render ``num_train`` + ``num_test`` scenes into the common COCO layout at
    ``out_dir`` (atomically); return the summary (images, ships, sizes per split)."""
    cfg = make_config(preset, **overrides)
    splits = {"train": _records(cfg, seed, "train", cfg.num_train),
              "test": _records(cfg, seed, "test", cfg.num_test)}
    return write_coco_dataset(out_dir, splits, extra_summary={
        "source": "synthetic", "preset": preset, "seed": seed,
        "config": json.loads(json.dumps(dataclasses.asdict(cfg)))})


def _parse_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--preset", default="ssdd-like", choices=list(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        value = _parse_value(value)
        overrides[key] = tuple(value) if isinstance(value, list) else value
    try:
        summary = generate_dataset(args.out, args.preset, args.seed, **overrides)
    except ValueError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
