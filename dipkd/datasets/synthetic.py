"""Synthetic SAR ship scenes: the offline default dataset.

A scene is a reflectivity map (sea clutter, optional land/harbour, ships with optional
cross-shaped sidelobes) multiplied by fully developed speckle: the intensity of an L-look
image is ``reflectivity * Gamma(shape=L, scale=1/L)`` (mean 1, variance 1/L, so the
equivalent number of looks ENL = mean^2/var of a homogeneous region equals L).
Images are stored as 8-bit amplitude: ``clip(AMPLITUDE_SCALE * sqrt(intensity), 0, 255)``.

Every image is rendered from its own generator seeded by ``(seed, split, index)``, so the
same seed gives byte-identical files and the test split does not change with ``num_train``.

Presets shaped like the paper's datasets:

- ``ssdd-like``: calibrated to the SSDD test split (232 images, 546 ships;
  ``shared/notes/ssdd_statistics.md``, the source of every number in :data:`SSDD_CALIBRATED`):
  scenes about 500x330 (widths and heights drawn from the notes' quantiles), ships per image
  from the notes' table (58% one ship, up to 24), a log-normal ship length (median 41 px)
  with a correlated log-normal aspect (median 2.9) and the notes' orientation bins. Each COCO
  box is the rotated ship's axis-aligned envelope, as BBox-SSDD's, so the size buckets come
  out near SSDD's 54% small / 42% medium / 4% large.
- ``ssdd-like-v1``: the first, guessed preset (the ``SceneConfig`` defaults: 300-650 px wide
  scenes, log-uniform lengths 8-180 px, Poisson(2) ships), kept byte for byte so that studies
  run with it stay reproducible.
- ``hrsid-like``: 800x800 tiles, denser ships.

Size knobs (``image_scale``, ``num_train``, ``num_test``, ...) make tiny versions for smoke
runs; ``ship_length_range`` is the range of lengths drawn (log-uniform in ``ssdd-like-v1``,
the log-normal truncated to it in ``ssdd-like``). Every ship's rotated box is kept in its COCO
annotation as ``rbox = [cx, cy, length, width, angle_deg]`` (length laid along the angle,
measured from +x towards +y, i.e. down the image).

CLI: ``python -m dipkd.datasets.synthetic --out DIR --preset ssdd-like --set image_scale=0.3``
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from .coco_layout import ImageRecord, write_coco_dataset

AMPLITUDE_SCALE = 40.0
POSITION_TRIES = 10   # our choice: positions tried for one hull before it is redrawn
SPLIT_CODES = {"train": 0, "test": 1}


@dataclass(frozen=True)
class SceneConfig:
    """Knobs of the generator (lengths in pixels at ``image_scale`` 1). The defaults are the
    first, guessed ``ssdd-like`` preset (now ``ssdd-like-v1``); the fields after ``piers``
    switch on the calibrated distributions (empty: the v1 rule named beside each)."""

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
    # ((p, px), ...) quantile function of the width / height, linear between the knots;
    # (): uniform over width_range / height_range
    width_quantiles: tuple = ()
    height_quantiles: tuple = ()
    # ((lo, hi, weight), ...): a bin by weight, then a count uniform in lo..hi (capped at
    # max_ships); (): Poisson(mean_ships) clipped to 1..max_ships
    ship_count_bins: tuple = ()
    # (mu, sigma) of ln(length), truncated to ship_length_range; (): log-uniform over it
    ship_length_lognormal: tuple = ()
    # (mu, sigma, rho) of ln(length / width), rho its correlation with ln(length), clipped
    # to 1..max_aspect; (): width = length x uniform(ship_width_ratio)
    ship_aspect_lognormal: tuple = ()
    max_aspect: float = 9.0
    # weights of the 15-degree bins of the angle over [0, 90), mirrored to [90, 180) with
    # probability 1/2; (): uniform over [0, 180)
    ship_angle_bins: tuple = ()
    # a ship that lands on land or another ship: redraw it whole (v1) or only its position
    redraw_rejected: bool = True


SSDD_CALIBRATED = SceneConfig(
    # section 4, all 1160 images: width 5/25/50/75/95% = 365/499/500/503/509, min-max 214-668
    width_range=(214, 668),
    width_quantiles=((0.0, 214), (0.05, 365), (0.25, 499), (0.5, 500), (0.75, 503),
                     (0.95, 509), (1.0, 668)),
    # section 4: height 5/25/50/75/95% = 253/308/333/355/403, min-max 190-526
    height_range=(190, 526),
    height_quantiles=((0.0, 190), (0.05, 253), (0.25, 308), (0.5, 333), (0.75, 355),
                      (0.95, 403), (1.0, 526)),
    # section 2: images with 1/2/3/4-5/6-10/>10 ships = 135/40/22/18/11/6, max 24, none empty
    ship_count_bins=((1, 1, 135), (2, 2, 40), (3, 3, 22), (4, 5, 18), (6, 10, 11),
                     (11, 24, 6)),
    max_ships=24,
    empty_fraction=0.0,
    # section 3: ln L mean 3.663, sd 0.791; L min 4, max 393 px
    ship_length_lognormal=(3.663, 0.791),
    ship_length_range=(4.0, 393.0),
    # section 3: ln(L/short) mean 1.082, sd 0.459, aspect max 9.0; rho 0.77 is derived: with
    # sd(ln L) 0.791 and sd(ln A) 0.459 it gives sd(ln short) 0.527, the notes' short-side
    # 5-95% of 6-34 px ((ln 34 - ln 6) / (2 x 1.645) = 0.527)
    ship_aspect_lognormal=(1.082, 0.459, 0.77),
    max_aspect=9.0,
    # section 3: angle bins 0-15/.../75-90 deg = 121/57/31/54/100/183
    ship_angle_bins=(121, 57, 31, 54, 100, 183),
    redraw_rejected=False,
)

PRESETS = {
    "ssdd-like": SSDD_CALIBRATED,
    "ssdd-like-v1": SceneConfig(),
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
    overrides = {k: _as_tuple(v) for k, v in overrides.items()}
    cfg = dataclasses.replace(PRESETS[preset], **overrides)
    if cfg.image_scale <= 0 or cfg.num_train < 0 or cfg.num_test < 0 or cfg.looks <= 0:
        raise ValueError("image_scale and looks must be > 0, num_train/num_test >= 0")
    lo, hi = cfg.ship_length_range
    if not 0 < lo <= hi:
        raise ValueError(f"ship_length_range must be [min, max] with 0 < min <= max, "
                         f"got {list(cfg.ship_length_range)}")
    return cfg


def _as_tuple(value):
    """Lists (from YAML or the CLI), nested ones too, as tuples: the config stays hashable."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


@dataclass
class Scene:
    intensity: np.ndarray      # float32 HxW, speckled intensity before quantisation
    reflectivity: np.ndarray   # float32 HxW, the noise-free scene
    image: np.ndarray          # uint8 HxW amplitude image
    boxes: np.ndarray          # float Kx4 xyxy, inside the image, positive size
    scene_type: str            # 'offshore' | 'inshore' | 'empty'
    sea_mask: np.ndarray       # bool HxW: open sea, away from ships, sidelobes and land
    rboxes: np.ndarray = None  # float Kx5 [cx, cy, length, width, angle_deg] of each ship


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


def _from_quantiles(knots, rng) -> float:
    """A draw from the quantile function through ``knots`` ((p, value), ...), linear between
    them (inverse-CDF sampling of a piecewise-uniform density)."""
    ps, values = zip(*knots)
    return float(np.interp(rng.random(), ps, values))


def _image_size(cfg: SceneConfig, rng) -> tuple[int, int]:
    if cfg.width_quantiles:
        w = _from_quantiles(cfg.width_quantiles, rng)
        h = w if cfg.square else _from_quantiles(cfg.height_quantiles, rng)
    else:
        w = rng.uniform(*cfg.width_range)
        h = w if cfg.square else rng.uniform(*cfg.height_range)
    return max(32, int(round(h * cfg.image_scale))), max(32, int(round(w * cfg.image_scale)))


def _ship_count(cfg: SceneConfig, rng) -> int:
    """Ships in a non-empty scene: a bin of ``ship_count_bins`` then a count in it, or (v1)
    Poisson(mean_ships); always 1..max_ships."""
    if not cfg.ship_count_bins:
        return int(np.clip(rng.poisson(cfg.mean_ships), 1, cfg.max_ships))
    weights = np.array([b[2] for b in cfg.ship_count_bins], float)
    lo, hi, _ = cfg.ship_count_bins[rng.choice(len(weights), p=weights / weights.sum())]
    return int(np.clip(rng.integers(lo, hi + 1), 1, cfg.max_ships))


def _truncated_lognormal(mu: float, sigma: float, lo: float, hi: float, rng) -> tuple:
    """(x, z): x log-normal(mu, sigma) truncated to [lo, hi] by inverse-CDF sampling, and z
    the standard normal score of ln x (for a correlated draw)."""
    unit = NormalDist()
    p_lo, p_hi = unit.cdf((np.log(lo) - mu) / sigma), unit.cdf((np.log(hi) - mu) / sigma)
    p = float(np.clip(rng.uniform(p_lo, p_hi), 1e-12, 1 - 1e-12))
    z = unit.inv_cdf(p)
    return float(np.clip(np.exp(mu + sigma * z), lo, hi)), z


def _ship_angle(cfg: SceneConfig, rng) -> float:
    """Hull angle in radians: a 15-degree bin of ``ship_angle_bins`` over [0, 90), uniform
    in it, mirrored to 180 - angle with probability 1/2; or (v1) uniform over [0, pi)."""
    if not cfg.ship_angle_bins:
        return rng.uniform(0, np.pi)
    weights = np.array(cfg.ship_angle_bins, float)
    width = 90.0 / len(weights)
    deg = (rng.choice(len(weights), p=weights / weights.sum()) + rng.random()) * width
    return np.deg2rad(180.0 - deg if rng.random() < 0.5 else deg)


def _ship_shape(cfg: SceneConfig, rng) -> tuple[float, float, float]:
    """(length, width, angle) of one hull in image pixels. v1: log-uniform length over
    ``ship_length_range``, width = length x uniform(ship_width_ratio); calibrated: the
    truncated log-normal length and an aspect log-normal correlated with it."""
    lo, hi = cfg.ship_length_range
    if not cfg.ship_length_lognormal:
        length = max(np.exp(rng.uniform(np.log(lo), np.log(hi))) * cfg.image_scale, 3.0)
        width = max(1.5, length * rng.uniform(*cfg.ship_width_ratio))
        return length, width, rng.uniform(0, np.pi)
    length, z = _truncated_lognormal(*cfg.ship_length_lognormal, lo, hi, rng)
    mu_a, sd_a, rho = cfg.ship_aspect_lognormal
    ln_aspect = mu_a + sd_a * (rho * z + np.sqrt(1 - rho ** 2) * rng.standard_normal())
    aspect = float(np.clip(np.exp(ln_aspect), 1.0, cfg.max_aspect))
    length = max(length * cfg.image_scale, 3.0)
    width = min(length, max(1.5, length / aspect))
    return length, width, _ship_angle(cfg, rng)


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


def _place_ships(cfg, refl, sea_mask, land, rng) -> tuple[list, list]:
    """Draw the scene's ships into ``refl`` (and out of ``sea_mask``) off land and apart
    (2 px margin), at most 10 tries per ship; return their xyxy and rotated boxes. A rejected
    try redraws the whole ship (``redraw_rejected``, v1: this favours small ships) or only its
    position, up to :data:`POSITION_TRIES` times, so the sizes keep their distribution."""
    h, w = refl.shape
    n = _ship_count(cfg, rng)
    occupied = land.copy()
    boxes, rboxes, hull, tries = [], [], None, 0
    for _ in range(n * 10):
        if len(boxes) == n:
            break
        if hull is None or cfg.redraw_rejected or tries >= POSITION_TRIES:
            hull, tries = _ship_shape(cfg, rng), 0
        tries += 1
        window, patch, mask, box, rbox = _ship(cfg, (h, w), hull, rng)
        if box[2] - box[0] < 1 or box[3] - box[1] < 1 or occupied[window].any():
            continue
        hull = None
        region = refl[window]
        region[mask] = patch[mask]
        y0, y1, x0, x1 = (max(0, int(box[1]) - 2), min(h, int(np.ceil(box[3])) + 2),
                          max(0, int(box[0]) - 2), min(w, int(np.ceil(box[2])) + 2))
        occupied[y0:y1, x0:x1] = True
        sea_mask[y0:y1, x0:x1] = False
        cx, cy, length = rbox[:3]
        if rng.random() < cfg.sidelobe_fraction:
            _sidelobes(refl, sea_mask, int(cy), int(cx), length, patch.max(), rng)
        boxes.append(box)
        rboxes.append(rbox)
    return boxes, rboxes


def _ship(cfg, shape, hull, rng):
    """A bright oriented hull ``(length, width, angle)`` at a random position: rotated
    rectangle with a brighter core. Returns the pixel window, the reflectivity patch, its
    mask, the xyxy box (the hull's axis-aligned envelope clipped to the image) and the
    rotated box ``(cx, cy, length, width, angle_deg)``."""
    h, w = shape
    length, width, theta = hull
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
    rbox = (cx, cy, length, width, float(np.rad2deg(theta)))
    return window, patch.astype(np.float32), mask, (x1, y1, x2, y2), rbox


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
    boxes, rboxes = _place_ships(cfg, refl, sea_mask, land, rng) if not empty else ([], [])
    intensity = (refl * speckle(shape, cfg.looks, rng)).astype(np.float32)
    image = np.clip(AMPLITUDE_SCALE * np.sqrt(intensity), 0, 255).astype(np.uint8)
    scene_type = "empty" if not boxes else "inshore" if inshore else "offshore"
    if empty and inshore:
        scene_type = "inshore"
    return Scene(intensity=intensity, reflectivity=refl, image=image,
                 boxes=np.asarray(boxes, dtype=float).reshape(-1, 4), scene_type=scene_type,
                 sea_mask=sea_mask, rboxes=np.asarray(rboxes, dtype=float).reshape(-1, 5))


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
                          extra={"scene": scene.scene_type},
                          box_extra=[{"rbox": [round(float(v), 2) for v in r]}
                                     for r in scene.rboxes])


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
