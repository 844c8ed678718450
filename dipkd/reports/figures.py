"""The paper's figures from the pipeline's checkpoints (DVC stage ``figures``).

- ``fig3_speckle.png`` / ``.json``: Figure 3(a), speckle metrics (ENL, SSI^-1, SMPI^-1) of
  the teacher's FPN features, original vs FFT low-pass vs SNS (:mod:`.fig_speckle`);
- ``fig4_heatmaps.png``: Figure 4, FPN heat maps of the student and the KD-trained
  students on the same test images (:mod:`.fig_heatmaps`);
- ``fig5_detections.png``: Figure 5, their detections against the ground truth
  (:mod:`.fig_detections`).

All on the test split of one dataset with the figure detector (``baseline_detector``,
Faster R-CNN as in the paper). Every checkpoint is checked before any work starts; a
missing one is a one-line ``FileNotFoundError`` naming the file and the stage that makes it.
"""
from __future__ import annotations

from pathlib import Path

from .fig_common import (default_methods, figure_detector, load_model, model_spec,
                         pick_images, read_gray, require_checkpoints, require_test_split,
                         run_model, split_images)
from .fig_detections import plot_figure5, predictions
from .fig_heatmaps import heatmap, plot_figure4
from .fig_speckle import figure3

FILES = {"fig3": "fig3_speckle.png", "fig4": "fig4_heatmaps.png", "fig5": "fig5_detections.png"}


def model_outputs(params: dict, dataset: str, detector: str, methods: list[str], images,
                  level: int, score_thr: float, seed: int | None = None):
    """One forward pass per (model, image): heat maps (Figure 4) and detections (Figure 5)."""
    maps, preds = {}, {}
    for name in methods:
        loaded = load_model(params, name, model_spec(params, name, dataset, detector, seed))
        maps[name], preds[name] = [], []
        for image in images:
            feats, sample = run_model(loaded, image, predict=True)
            if not 0 <= level < len(feats):
                raise ValueError(f"FPN level {level} out of range (the model has {len(feats)})")
            meta = sample.metainfo
            maps[name].append(heatmap(feats[level], meta["img_shape"],
                                      meta["batch_input_shape"], meta["ori_shape"]))
            preds[name].append(predictions(sample, score_thr))
        del loaded
    return maps, preds


def make_figures(params: dict, dataset: str | None = None, methods: list[str] | None = None,
                 num_images: int = 4, speckle_images: int = 16, level: int = 0,
                 score_thr: float = 0.3, fft_keep: float = 0.25,
                 out_dir: Path = Path("reports/figures"), detector: str | None = None,
                 seed: int | None = None) -> dict:
    """Write the three figures (and ``fig3_speckle.json``) into ``out_dir``; return
    ``{"fig3": path, "fig4": path, "fig5": path, "fig3_numbers": dict}``."""
    dataset = dataset or params["datasets"][0]
    detector = detector or figure_detector(params)
    methods = list(methods) if methods else default_methods(params)
    if num_images < 1 or speckle_images < 1:
        raise ValueError("num_images and speckle_images must be >= 1")
    specs = [model_spec(params, "teacher", dataset, detector, seed)]
    specs += [model_spec(params, m, dataset, detector, seed) for m in methods]
    require_test_split(specs[0])
    require_checkpoints(params, specs)            # everything present before any work

    out_dir = Path(out_dir)
    numbers = figure3(params, dataset, out_dir / FILES["fig3"], num_images=speckle_images,
                      level=level, fft_keep=fft_keep, detector=detector, seed=seed)

    images = pick_images(split_images(specs[0]), num_images)
    gray = [read_gray(im.path) for im in images]
    maps, preds = model_outputs(params, dataset, detector, methods, images, level, score_thr,
                                seed)
    title = (f"profile {params['profile']}; {dataset}; {detector}; seed {specs[0].seed}; "
             f"FPN level {level} ({numbers['fpn_name']})")
    plot_figure4(images, gray, methods, maps, out_dir / FILES["fig4"], title=title)
    plot_figure5(images, gray, methods, preds, out_dir / FILES["fig5"], score_thr,
                 title=f"profile {params['profile']}; {dataset}; {detector}; "
                       f"seed {specs[0].seed}")
    return {**{k: out_dir / v for k, v in FILES.items()}, "fig3_numbers": numbers}
