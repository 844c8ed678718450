"""Figure 5 of the paper: detections of the student and the KD-trained students against the
ground truth.

Each panel is the original test image; ground-truth boxes in green, the model's
detections with score >= ``score_thr`` in red with their score. The first column shows
the ground truth alone (the paper's "Ground truth" column); every model column repeats
the GT boxes (thin, dashed) so misses and false alarms are visible in place. Detections
come from the model's mmdet ``test_step`` (its own test_cfg: score 0.05, NMS, at most 100
per image), rescaled to the original image.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..kd.methods import display_name
from .fig_common import grid_figure, panel_aspect, save_png

GT_COLOR = "#00d000"
PRED_COLOR = "#ff2020"


def predictions(sample, score_thr: float) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (K, 4) xyxy in original pixels, scores (K,)) of a predicted DetDataSample
    with score >= ``score_thr``."""
    pred = sample.pred_instances
    scores = pred.scores.detach().cpu().numpy()
    keep = scores >= score_thr
    return pred.bboxes.detach().cpu().numpy()[keep].reshape(-1, 4), scores[keep]


def _boxes(ax, boxes, color, lw, style="-", scores=None):
    from matplotlib.patches import Rectangle
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes).reshape(-1, 4)):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color,
                               linewidth=lw, linestyle=style))
        if scores is not None:
            ax.text(x1, y1, f"{scores[i]:.2f}", color=color, fontsize=5, va="bottom",
                    clip_on=True)


def plot_figure5(images: list, gray: list[np.ndarray], models: list[str],
                 preds: dict[str, list[tuple]], out: Path, score_thr: float,
                 title: str = "") -> Path:
    """Grid rows = images, columns = ground truth + models; ``preds[model][row]`` is
    ``(boxes, scores)`` already filtered by ``score_thr``."""
    fig, axes = grid_figure(len(images), 1 + len(models), panel_aspect(gray))
    for r, (image, g) in enumerate(zip(images, gray)):
        h, w = g.shape[:2]
        for c in range(1 + len(models)):
            ax = axes[r, c]
            ax.imshow(g, cmap="gray")
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
        axes[r, 0].set_ylabel(image.name, fontsize=7)
        _boxes(axes[r, 0], image.gt_boxes, GT_COLOR, 1.2)
        for c, name in enumerate(models, start=1):
            _boxes(axes[r, c], image.gt_boxes, GT_COLOR, 0.7, "--")
            boxes, scores = preds[name][r]
            _boxes(axes[r, c], boxes, PRED_COLOR, 1.0, scores=scores)
    for c, name in enumerate(["Ground truth", *[display_name(m) for m in models]]):
        axes[0, c].set_title(name, fontsize=10)
    note = f"green: ground truth; red: detections with score >= {score_thr:g}"
    fig.text(0.995, 0.995, note, fontsize=6, va="top", ha="right", color="0.4")
    if title:
        fig.text(0.005, 0.995, title, fontsize=6, va="top", ha="left", color="0.4")
    return save_png(fig, out)
