"""Paper figures (Figures 3-5): tiny random-init checkpoints on a tiny synthetic dataset,
plus the speckle measurement on fields where the answer is known."""
import argparse
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from dipkd.config.params import distill_spec, run_spec
from dipkd.datasets.synthetic import generate_dataset, speckle
from dipkd.reports.fig_common import (default_methods, grid_pixels, model_spec,
                                      panel_aspect, pick_images, producing_stage, read_gray,
                                      split_images)
from dipkd.reports.fig_heatmaps import heatmap
from dipkd.reports.fig_speckle import background_region, sns_from_params, speckle_metrics

MODELS = ("teacher", "student", "mgd", "fgd", "ifkd", "dipkd")


def _small(params):
    params["datasets"] = ["ssdd"]
    params["detectors"] = ["faster_rcnn"]
    params["baseline_detector"] = "faster_rcnn"
    params["roles"]["teacher"]["depth"] = 18      # a fast stand-in teacher
    return params


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """data/ssdd (2 test images) and random-init checkpoints of every figure model at the
    paths the pipeline uses, in a fresh directory."""
    import copy

    import yaml
    from mmengine.config import ConfigDict
    from mmdet.registry import MODELS as REGISTRY
    from mmdet.utils import register_all_modules

    from dipkd.models.detectors import detector_cfg

    root = tmp_path_factory.mktemp("figures")
    params = _small(yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml")
                                   .read_text()))
    generate_dataset(root / "data" / "ssdd", preset="ssdd-like", seed=0, image_scale=0.25,
                     num_train=2, num_test=2)
    register_all_modules()
    for seed, name in enumerate(MODELS):
        spec = model_spec(params, name, "ssdd", "faster_rcnn")
        torch.manual_seed(seed)
        model = REGISTRY.build(ConfigDict(detector_cfg("faster_rcnn", spec.depth, False,
                                                       spec.model)))
        model.init_weights()
        path = root / spec.model_path
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": model.state_dict(), "meta": {}}, path)
    return root, copy.deepcopy(params)


@pytest.fixture
def fig_env(workdir, monkeypatch):
    import copy
    root, params = workdir
    monkeypatch.chdir(root)
    return root, copy.deepcopy(params)


def _png(path):
    from PIL import Image
    with Image.open(path) as im:
        im.load()
        return im.size[::-1]          # (height, width)


def test_stage_writes_the_three_figures(fig_env):
    from pipeline.make_figures import main
    root, params = fig_env
    args = argparse.Namespace(dataset=None, seed=None, methods=None, num_images=2,
                              speckle_images=2,
                              level=0, score_thr=0.0, fft_keep=0.25, out_dir="reports/figures")
    main(params, args)
    out = root / "reports" / "figures"
    cols = 1 + len(default_methods(params))   # image / GT + student, mgd, fgd, ifkd, dipkd
    assert cols == 6
    images = pick_images(split_images(run_spec(params, "student", "ssdd", "faster_rcnn")), 2)
    assert len(images) == 2
    aspect = panel_aspect([read_gray(im.path) for im in images])
    assert _png(out / "fig4_heatmaps.png") == grid_pixels(2, cols, aspect)
    assert _png(out / "fig5_detections.png") == grid_pixels(2, cols, aspect)
    assert grid_pixels(2, cols, aspect)[1] > grid_pixels(2, cols - 1, aspect)[1]
    h, w = _png(out / "fig3_speckle.png")
    assert h > 100 and w > 100
    assert not [p for p in out.iterdir() if ".tmp" in p.name]      # atomic writes
    numbers = json.loads((out / "fig3_speckle.json").read_text())
    assert numbers["images"] >= 1 and numbers["fpn_name"] == "P2"
    assert numbers["sns"]["tau"] == params["methods"]["dipkd"]["tau"]
    summ = numbers["summary"]
    assert set(summ) == {"original", "fft", "sns", "sns_attention", "sns_wavelet"}
    for variant in summ.values():
        for m in ("enl", "ssi_inv", "smpi_inv"):
            assert math.isfinite(variant[m]["mean"]) and variant[m]["mean"] > 0
    assert summ["original"]["ssi_inv"]["mean"] == pytest.approx(1.0)
    assert summ["original"]["smpi_inv"]["mean"] == pytest.approx(1.0)
    for variant in ("fft", "sns"):                  # the denoisers changed the features
        assert summ[variant]["enl"]["mean"] != pytest.approx(summ["original"]["enl"]["mean"])


def test_missing_checkpoint_names_file_and_stage(fig_env):
    from dipkd.reports.figures import make_figures
    root, params = fig_env
    out = Path("reports/missing")
    defeat = distill_spec(params, "defeat", "ssdd", "faster_rcnn").model_path
    assert not defeat.exists()
    with pytest.raises(FileNotFoundError) as err:
        make_figures(params, methods=["student", "defeat"], out_dir=out)
    assert str(err.value) == (f"{defeat}: checkpoint missing; run baseline@defeat-ssdd-0 "
                              "first")
    teacher = run_spec(params, "teacher", "ssdd", "faster_rcnn").model_path
    os.replace(teacher, teacher.with_suffix(".bak"))
    try:
        with pytest.raises(FileNotFoundError) as err:
            make_figures(params, out_dir=out)
        assert str(err.value) == (f"{teacher}: checkpoint missing; run "
                                  "train_teacher@ssdd-faster_rcnn first")
    finally:
        os.replace(teacher.with_suffix(".bak"), teacher)
    assert not out.exists()                         # failed before writing anything


def test_checkpoint_of_another_model_is_refused(fig_env):
    from dipkd.reports.fig_common import load_model
    root, params = fig_env
    state = torch.load(run_spec(params, "student", "ssdd", "faster_rcnn").model_path,
                       weights_only=True)["state_dict"]
    state.pop(next(iter(state)))
    spec = distill_spec(params, "fitnet", "ssdd", "faster_rcnn")
    spec.model_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "meta": {}}, spec.model_path)
    try:
        with pytest.raises(ValueError) as err:
            load_model(params, "fitnet", spec)
        assert str(err.value).startswith(f"{spec.model_path}: does not fit the distilled "
                                         "faster_rcnn R18 model (missing keys")
    finally:
        spec.model_path.unlink()


def test_stage_names_and_default_columns(params, capsys):
    params = _small(params)
    spec = distill_spec(params, "dipkd", "ssdd", "faster_rcnn")
    assert producing_stage(params, spec) == "distill@ssdd-faster_rcnn-0"
    assert producing_stage(params, run_spec(params, "student", "ssdd", "faster_rcnn")) \
        == "train_student@ssdd-faster_rcnn-0"
    params["seeds"] = [0, 3]
    assert producing_stage(params, distill_spec(params, "mgd", "ssdd", "faster_rcnn", 3)) \
        == "baseline@mgd-ssdd-3"
    assert default_methods(params) == ["student", "mgd", "fgd", "ifkd", "dipkd"]
    params["baselines"] = ["fitnet", "fgd"]
    assert default_methods(params) == ["student", "fgd", "dipkd"]      # params' figures.methods
    assert "mgd, ifkd not trained by this matrix" in capsys.readouterr().out
    params["figures"]["methods"] = ["teacher", "fitnet", "dipkd"]
    assert default_methods(params) == ["teacher", "fitnet", "dipkd"]


def test_denoising_raises_enl_of_a_speckled_constant_field(params):
    """A constant field under independent 1-look speckle in every channel: both denoisers
    must smooth it (ENL up, SSI^-1 > 1) and keep its mean (SMPI^-1 > 1)."""
    rng = np.random.default_rng(0)
    # activations small against tau, so the attention is ~uniform and only the wavelet
    # step acts (SNS's attention exp(mean|F|/tau) sharpens bright cells of larger ones)
    feat = torch.from_numpy(0.05 * speckle((1, 8, 64, 64), 1.0, rng))
    region = np.ones((64, 64), bool)
    m = speckle_metrics(feat, region, sns_from_params(params), fft_keep=0.25,
                        diagnostics=True)
    assert m["original"]["ssi_inv"] == pytest.approx(1.0)
    assert m["original"]["smpi_inv"] == pytest.approx(1.0)
    for variant in ("fft", "sns"):
        assert m[variant]["enl"] > 1.5 * m["original"]["enl"], variant
        assert m[variant]["ssi_inv"] > 1.2 and m[variant]["smpi_inv"] > 1.1, variant
    assert m["sns_wavelet"]["enl"] > 1.5 * m["original"]["enl"]
    # the attention alone sharpens a little (its log-slope is 1 + mean|F| / tau = 1.1)
    assert 0.7 * m["original"]["enl"] < m["sns_attention"]["enl"] < m["original"]["enl"]


def test_sns_attention_sharpens_large_activations(params):
    """Where activations are large against tau the attention (exp(mean|F| / tau)) raises
    the contrast of the intensity map: the attention step alone lowers the ENL, which is
    why Figure 3 can show SNS below the original on such features."""
    rng = np.random.default_rng(1)
    feat = torch.from_numpy(2.0 * speckle((1, 8, 64, 64), 4.0, rng))
    m = speckle_metrics(feat, np.ones((64, 64), bool), sns_from_params(params),
                        diagnostics=True)
    assert m["sns_attention"]["enl"] < 0.5 * m["original"]["enl"]
    assert m["sns_wavelet"]["enl"] > m["original"]["enl"]
    # an empty region is refused rather than reported
    with pytest.raises(ValueError, match="empty region"):
        speckle_metrics(feat, np.zeros((64, 64), bool), sns_from_params(params))


def test_background_region_excludes_boxes_and_padding():
    # input 64x96 padded to 64x128, stride 8 -> 8x16 cells, 12 columns of real image
    region = background_region(np.array([[8, 8, 24, 16]]), (64, 96), (64, 128), (8, 16))
    assert region.shape == (8, 16)
    assert not region[1:3, 1:4].any()               # the box's cells (FGD's rule: 2x3)
    assert not region[:, 12:].any()                 # the padding
    assert region.sum() == 8 * 12 - 6


def test_heatmap_follows_the_feature_over_the_original_image():
    feat = torch.zeros(1, 4, 8, 16)
    feat[0, :, 2, 3] = -5.0                          # signed: |F| counts
    m = heatmap(feat, img_shape=(64, 96), batch_input_shape=(64, 128), ori_shape=(32, 48))
    assert m.shape == (32, 48) and m.min() == 0.0 and m.max() == pytest.approx(1.0)
    y, x = np.unravel_index(np.argmax(m), m.shape)
    assert abs(y - 10) <= 2 and abs(x - 14) <= 2    # cell (2, 3) at stride 8, scaled by 1/2
