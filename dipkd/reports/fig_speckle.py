"""Figure 3(a) of the paper: speckle metrics of the teacher's FPN features, original vs FFT
low-pass vs SNS denoised.

What is measured, per test image (then mean and std over the images):

- Features: the frozen TEACHER (``train_teacher@<dataset>-<detector>``, Faster R-CNN by
  default) on the image through its test pipeline; one FPN level (``level``, default 0 =
  P2, stride 4, the finest map, where speckle is most visible). The full (1, C, H, W)
  feature is denoised:
  * FFT: :func:`dipkd.speckle.metrics.fft_lowpass` per channel (``keep`` of the spectrum);
  * SNS: :class:`dipkd.kd.sns.SelectiveNoiseSuppression` with ``methods.dipkd``'s tau,
    wavelet, levels, threshold, threshold_scale and the teacher's OWN attention (during
    distillation the teacher's attention weights the teacher's feature exactly so).
- Feature -> intensity: FPN features are signed, ENL/SSI/SMPI are defined for
  non-negative intensities, so each variant is mapped to ``I = mean_c |F_c|`` (channel mean
  of the absolute activation, the same map the spatial attention of Eq. 3/5 is built on),
  an (H, W) non-negative map. The maps are divided by the ORIGINAL map's mean over the
  region below, which leaves ENL and SSI unchanged (both are scale-free) and makes SMPI's
  mean-preservation term ``1 + |mean(O) - mean(D)|`` a relative shift instead of one in
  the arbitrary units of the activations.
- Region: ENL is only meaningful on a homogeneous area, so all three metrics use the
  background cells: cells outside every GT box (:func:`dipkd.kd.masks.target_masks`, the
  box projection KLD uses, so a box covers every cell it touches) and fully inside the
  resized image (cells of the batch padding are excluded). On SAR ship data that is
  mostly open sea (plus land in inshore scenes). Images with fewer than ``MIN_CELLS``
  such cells are skipped and listed.
- Reported: ENL (higher = smoother), SSI^-1 and SMPI^-1 (the paper plots the inverses,
  higher = better; the original has 1 by definition). The JSON also carries two
  diagnostics that split SNS into its steps: ``sns_attention`` (A^C * A^S * F, no wavelet)
  and ``sns_wavelet`` (f_wld(F), no attention). The attention re-weights channels and cells
  by exp(mean|F| / tau), which concentrates the intensity map on fewer, brighter channels
  and cells; on features with activations that are large against tau this LOWERS the ENL
  before the wavelet step raises it again, so SNS as a whole need not beat the original.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..speckle.metrics import enl, fft_lowpass, smpi, ssi
from .fig_common import (atomic_json, figure_detector, load_model, model_spec, read_gray,
                         require_checkpoints, require_test_split, run_model, save_png,
                         split_images)

VARIANTS = ("original", "fft", "sns")                 # the figure's bars
DIAGNOSTICS = ("sns_attention", "sns_wavelet")        # SNS's two steps apart (JSON only)
LABELS = {"original": "Original", "fft": "FFT", "sns": "SNS"}
COLORS = {"original": "#8c8c8c", "fft": "#1f77b4", "sns": "#ff7f0e"}  # paper: grey/blue/orange
METRICS = ("enl", "ssi_inv", "smpi_inv")
METRIC_LABELS = {"enl": "ENL", "ssi_inv": "SSI$^{-1}$", "smpi_inv": "SMPI$^{-1}$"}
SNS_KEYS = {"tau": "tau", "wavelet": "wavelet", "wavelet_levels": "levels",
            "threshold": "threshold", "threshold_scale": "threshold_scale",
            "odd_size": "odd_size"}
MIN_CELLS = 16


def sns_from_params(params: dict):
    """The SNS module with the method's parameters (``params['methods']['dipkd']``)."""
    from ..kd.sns import SelectiveNoiseSuppression
    cfg = params.get("methods", {}).get("dipkd", {})
    return SelectiveNoiseSuppression(**{SNS_KEYS[k]: cfg[k] for k in SNS_KEYS if k in cfg})


def feature_intensity(feat) -> np.ndarray:
    """(1, C, H, W) or (C, H, W) feature -> (H, W) float64 map ``mean_c |F_c|``."""
    arr = feat.detach().cpu().numpy() if hasattr(feat, "detach") else np.asarray(feat)
    arr = arr.astype(np.float64)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise ValueError(f"one feature map at a time, got batch {arr.shape[0]}")
        arr = arr[0]
    return np.abs(arr).mean(axis=0)


def background_region(gt_boxes, img_shape, batch_input_shape, feat_shape) -> np.ndarray:
    """(H, W) bool: cells outside every GT box and fully inside the (unpadded) image.

    ``gt_boxes`` (K, 4) xyxy in resized-input pixels; ``img_shape`` the resized image
    (h, w); ``batch_input_shape`` the padded input the features cover."""
    import torch

    from ..kd.masks import target_masks
    h, w = feat_shape
    hp, wp = batch_input_shape
    boxes = torch.as_tensor(np.asarray(gt_boxes, np.float32).reshape(-1, 4))
    tar, _ = target_masks([boxes], (hp, wp), (h, w))
    region = tar[0, 0].numpy() == 0
    rows = min(h, int(math.floor(img_shape[0] * h / hp + 1e-6)))
    cols = min(w, int(math.floor(img_shape[1] * w / wp + 1e-6)))
    region[rows:, :] = False
    region[:, cols:] = False
    return region


def denoised_variants(feat, sns, fft_keep: float = 0.25, diagnostics: bool = False) -> dict:
    """The original (1, C, H, W) feature, its FFT low-pass and its SNS version (SNS with
    the feature's own attention); with ``diagnostics`` also SNS's attention step alone and
    its wavelet step alone."""
    import torch
    feat = torch.as_tensor(feat, dtype=torch.float32)
    if feat.dim() == 3:
        feat = feat.unsqueeze(0)
    with torch.no_grad():
        out = {"original": feat, "fft": torch.from_numpy(fft_lowpass(feat.numpy(), fft_keep)),
               "sns": sns(feat)}
        if diagnostics:
            a_s, a_c = sns.attention(feat)
            out["sns_attention"] = a_c * a_s * feat
            out["sns_wavelet"] = sns.denoise(feat)
    return out


def speckle_metrics(feat, region: np.ndarray, sns, fft_keep: float = 0.25,
                    return_maps: bool = False, diagnostics: bool = False):
    """ENL, SSI^-1, SMPI^-1 of the original / FFT / SNS intensity maps over ``region``
    (and of :data:`DIAGNOSTICS` with ``diagnostics``).

    Returns ``{variant: {"enl", "ssi_inv", "smpi_inv"}}`` (and the normalised intensity
    maps with ``return_maps``)."""
    region = np.asarray(region, bool)
    if not region.any():
        raise ValueError("empty region")
    maps = {k: feature_intensity(v)
            for k, v in denoised_variants(feat, sns, fft_keep, diagnostics).items()}
    scale = maps["original"][region].mean()
    if not scale > 0:
        raise ValueError("the original feature is zero over the region")
    maps = {k: v / scale for k, v in maps.items()}
    o = maps["original"]
    out = {k: {"enl": enl(d, region), "ssi_inv": 1.0 / ssi(o, d, region),
               "smpi_inv": 1.0 / smpi(o, d, region)} for k, d in maps.items()}
    return (out, maps) if return_maps else out


def _finite(metrics: dict) -> bool:
    return all(math.isfinite(v) for m in metrics.values() for v in m.values())


def compute_figure3(params: dict, dataset: str, num_images: int = 16, level: int = 0,
                    fft_keep: float = 0.25, detector: str | None = None,
                    seed: int | None = None):
    """Run the teacher on the first ``num_images`` test images; return ``(result, example)``
    with ``result`` the JSON-able numbers and ``example`` the maps of the first image."""
    detector = detector or figure_detector(params)
    spec = model_spec(params, "teacher", dataset, detector, seed)
    require_test_split(spec)
    require_checkpoints(params, [spec])
    images = split_images(spec)[:max(0, num_images)]
    if not images:
        raise ValueError(f"{spec.dataset.root}: no test images for Figure 3")
    teacher = load_model(params, "teacher", spec)
    sns = sns_from_params(params)
    per_image, skipped, example, stride = [], [], None, None
    for image in images:
        feats, sample = run_model(teacher, image, predict=False)
        if not 0 <= level < len(feats):
            raise ValueError(f"FPN level {level} out of range (the model has {len(feats)})")
        feat = feats[level]
        stride = sample.metainfo["batch_input_shape"][0] / feat.shape[-2]
        # the test pipeline loads the GT after Resize (boxes in original pixels, as the
        # evaluation wants them): scale them onto the resized input the features cover
        sx, sy = sample.metainfo["scale_factor"]
        boxes = image.gt_boxes * np.array([sx, sy, sx, sy], np.float32)
        region = background_region(boxes, sample.metainfo["img_shape"],
                                   sample.metainfo["batch_input_shape"], feat.shape[-2:])
        if region.sum() < MIN_CELLS:
            skipped.append({"file_name": image.name, "reason": "background too small"})
            continue
        metrics, maps = speckle_metrics(feat, region, sns, fft_keep, return_maps=True,
                                        diagnostics=True)
        if not _finite(metrics):
            skipped.append({"file_name": image.name, "reason": "non-finite metric"})
            continue
        per_image.append({"img_id": image.img_id, "file_name": image.name,
                          "cells": int(region.sum()), "metrics": metrics})
        if example is None:
            example = {"image": read_gray(image.path), "maps": maps, "region": region,
                       "img_shape": sample.metainfo["img_shape"],
                       "batch_input_shape": sample.metainfo["batch_input_shape"],
                       "file_name": image.name}
    if not per_image:
        raise ValueError(f"Figure 3: no test image of {dataset} has {MIN_CELLS} background "
                         f"cells at FPN level {level}")
    summary = {v: {m: {"mean": float(np.mean([r["metrics"][v][m] for r in per_image])),
                       "std": float(np.std([r["metrics"][v][m] for r in per_image]))}
                   for m in METRICS} for v in (*VARIANTS, *DIAGNOSTICS)}
    cfg = params.get("methods", {}).get("dipkd", {})
    result = {
        "figure": "3a", "dataset": dataset, "detector": detector,
        "model": str(spec.model_path), "seed": spec.seed, "profile": params["profile"],
        "fpn_level": level,
        "fpn_name": f"P{int(round(math.log2(stride)))}", "fpn_stride": stride,
        "images": len(per_image), "skipped": skipped, "fft_keep": fft_keep,
        "sns": {k: cfg[k] for k in SNS_KEYS if k in cfg}, "sns_attention": "teacher's own",
        "intensity": "mean_c |F_c| of the FPN level, divided by the original map's mean "
                     "over the region",
        "region": "background cells: outside every GT box (dipkd.kd.masks.target_masks) and "
                  "inside the unpadded image",
        "summary": summary, "per_image": per_image,
    }
    return result, example


def plot_figure3(result: dict, example: dict | None, out: Path) -> Path:
    """Top: the three metrics as bars (mean +- std over the images); bottom: the example
    image and its original / FFT / SNS intensity maps on one colour scale."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 6.6), dpi=100)
    gs = fig.add_gridspec(2, 12, height_ratios=[1.0, 1.0], hspace=0.35, wspace=0.6,
                          left=0.05, right=0.98, top=0.88, bottom=0.03)
    summ = result["summary"]
    for i, metric in enumerate(METRICS):
        ax = fig.add_subplot(gs[0, 4 * i:4 * i + 4])
        means = [summ[v][metric]["mean"] for v in VARIANTS]
        stds = [summ[v][metric]["std"] for v in VARIANTS]
        bars = ax.bar(range(3), means, yerr=stds, capsize=3,
                      color=[COLORS[v] for v in VARIANTS])
        ax.set_xticks(range(3), [LABELS[v] for v in VARIANTS])
        ax.set_title(METRIC_LABELS[metric])
        for b, m, sd in zip(bars, means, stds):
            ax.annotate(f"{m:.3g}", (b.get_x() + b.get_width() / 2, m + sd), ha="center",
                        va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    fig.suptitle(f"Figure 3(a): speckle of the teacher's FPN "
                 f"{result['fpn_name']} features ({result['dataset']}, {result['detector']}, "
                 f"{result['images']} test images, background cells)", fontsize=11)
    if example is not None:
        h, w = example["img_shape"]
        hp, wp = example["batch_input_shape"]
        fh, fw = example["maps"]["original"].shape
        rows, cols = max(1, round(h * fh / hp)), max(1, round(w * fw / wp))
        crop = {k: v[:rows, :cols] for k, v in example["maps"].items()}
        vmax = float(np.percentile(crop["original"], 99)) or 1.0
        ax = fig.add_subplot(gs[1, 0:3])
        ax.imshow(example["image"], cmap="gray")
        ax.set_title(example["file_name"], fontsize=9)
        ax.axis("off")
        for j, v in enumerate(VARIANTS):
            ax = fig.add_subplot(gs[1, 3 * (j + 1):3 * (j + 2)])
            ax.imshow(crop[v], cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_title(f"{LABELS[v]}: mean$_c$|F|", fontsize=9)
            ax.axis("off")
    return save_png(fig, out)


def figure3(params: dict, dataset: str, out_png: Path, out_json: Path | None = None,
            **kwargs) -> dict:
    """Compute, write ``out_png`` and the numbers to ``out_json`` (default: next to the PNG,
    ``.json``); return the numbers."""
    result, example = compute_figure3(params, dataset, **kwargs)
    out_png = Path(out_png)
    atomic_json(out_json or out_png.with_suffix(".json"), result)
    plot_figure3(result, example, out_png)
    return result
