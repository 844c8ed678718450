"""Figure 4 of the paper: feature heat maps of the student and the KD-trained students.

A heat map is the channel mean of |F| of one FPN level (default level 0: P2 for Faster
R-CNN), bilinearly upsampled to the padded network input, cropped to the resized image
(the padding carries no image) and resized to the original image, then min-max
normalised per panel (the figure compares WHERE each model responds, not the magnitude of
its activations, which differs between models). Drawn with the ``jet`` colour map over the
grey image. One row per test image, the image first, then one column per model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..kd.methods import display_name
from .fig_common import grid_figure, panel_aspect, save_png

ALPHA = 0.55


def heatmap(feat, img_shape, batch_input_shape, ori_shape) -> np.ndarray:
    """(1, C, H, W) FPN feature -> (h0, w0) map in [0, 1] over the original image."""
    import torch
    import torch.nn.functional as F
    feat = torch.as_tensor(feat, dtype=torch.float32)
    if feat.dim() == 3:
        feat = feat.unsqueeze(0)
    m = feat.abs().mean(dim=1, keepdim=True)
    hp, wp = (int(v) for v in batch_input_shape)
    h, w = (int(v) for v in img_shape)
    m = F.interpolate(m, size=(hp, wp), mode="bilinear", align_corners=False)[..., :h, :w]
    m = F.interpolate(m, size=tuple(int(v) for v in ori_shape[:2]), mode="bilinear",
                      align_corners=False)[0, 0].numpy().astype(np.float64)
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def plot_figure4(images: list, gray: list[np.ndarray], models: list[str],
                 maps: dict[str, list[np.ndarray]], out: Path, title: str = "") -> Path:
    """``images`` (SplitImage), their grey arrays, model names in column order and
    ``maps[model][row]``; grid rows = images, columns = image + models."""
    fig, axes = grid_figure(len(images), 1 + len(models), panel_aspect(gray))
    for r, (image, g) in enumerate(zip(images, gray)):
        axes[r, 0].imshow(g, cmap="gray")
        axes[r, 0].set_ylabel(image.name, fontsize=7)
        for c, name in enumerate(models, start=1):
            axes[r, c].imshow(g, cmap="gray")
            axes[r, c].imshow(maps[name][r], cmap="jet", alpha=ALPHA, vmin=0, vmax=1)
    for c, name in enumerate(["Image", *[display_name(m) for m in models]]):
        axes[0, c].set_title(name, fontsize=10)
    if title:
        fig.text(0.005, 0.995, title, fontsize=6, va="top", ha="left", color="0.4")
    return save_png(fig, out)
