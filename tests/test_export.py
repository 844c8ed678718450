"""Exported models in mmdet's own tools (dipkd.export): ``DetInferencer`` (in a process that
never imports dipkd) and ``init_detector`` + ``inference_detector`` give the detections our
own evaluation wrote for the same test images, for a teacher, a student and a distilled model
(whose stored config must be the student's, not the distiller's)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _helpers import build_distiller

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

INFERENCER = r"""
import json, sys
from mmdet.apis import DetInferencer
assert not any(m == "dipkd" or m.startswith("dipkd.") for m in sys.modules)
cfg, weights, images = sys.argv[1], sys.argv[2], sys.argv[3:]
inferencer = DetInferencer(model=cfg, weights=weights, device="cpu", show_progress=False)
out = inferencer(images, return_datasamples=False, no_save_pred=True, no_save_vis=True)
assert not any(m == "dipkd" or m.startswith("dipkd.") for m in sys.modules), "dipkd imported"
print(json.dumps(out["predictions"]))
"""


def _checkpoint(tmp_path, role, detector, params):
    """A training checkpoint of ``role`` as mmengine writes one (random weights), its RunSpec
    and the config it trained with."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from dipkd.mmdet_config import build_config
    from dipkd.config.params import distill_spec, run_spec
    register_all_modules()
    if role == "distilled":
        model, _, train_cfg = build_distiller(params, "dipkd", detector, tmp_path)
        spec = distill_spec(params, "dipkd", "ssdd", detector)
    else:
        spec = run_spec(params, role, "ssdd", detector)
        train_cfg = build_config(spec)
        model = MODELS.build(train_cfg.model)
        model.init_weights()
    state = model.state_dict()
    for key in state:   # RetinaNet's prior bias (p = 0.01) leaves nothing above score_thr
        if key.endswith("retina_cls.bias"):
            state[key] = torch.zeros_like(state[key])
    ckpt = tmp_path / f"{role}-epoch_1.pth"
    torch.save({"state_dict": state,
                "meta": {"dataset_meta": {"classes": ("ship",)}, "epoch": 1,
                         "optimizer_junk": "dropped"}}, ckpt)
    return ckpt, spec, train_cfg


def _by_image(detections, images):
    """COCO results (xywh) -> per image file: (boxes xyxy, scores), by descending score."""
    out = {}
    for img in images:
        dets = sorted((d for d in detections if d["image_id"] == img["id"]),
                      key=lambda d: -d["score"])
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in dets)])
        out[img["file_name"]] = (boxes.reshape(-1, 4), np.array([d["score"] for d in dets]))
    return out


def _assert_same(ours, theirs, top=20):
    b1, s1 = ours
    b2, s2 = theirs
    assert len(s1) == len(s2)
    np.testing.assert_allclose(s1[:top], s2[:top], atol=1e-4)
    np.testing.assert_allclose(b1[:top], b2[:top], atol=1e-2)


@pytest.mark.parametrize("role,detector", [("teacher", "faster_rcnn"),
                                           ("student", "retinanet"),
                                           ("distilled", "faster_rcnn")])
def test_mmdet_tools_reproduce_our_evaluation(tmp_path, params, monkeypatch, role, detector):
    from mmdet.apis import inference_detector, init_detector

    from dipkd.checkpoint import safe_load
    from dipkd.mmdet_config import build_config
    from dipkd.datasets.synthetic import generate_dataset
    from dipkd.evaluation.run import test_model
    from dipkd.export import config_path, export_model

    monkeypatch.chdir(tmp_path)
    params["profiles"]["smoke"]["schedule"][detector]["ssdd"]["scale"] = [128, 96]
    generate_dataset(tmp_path / "data" / "ssdd", preset="ssdd-like", seed=0,
                     image_scale=0.25, num_train=2, num_test=2)
    ckpt, spec, train_cfg = _checkpoint(tmp_path, role, detector, params)
    model_path = tmp_path / "models" / f"{role}.pth"
    export_model(ckpt, model_path, {"role": role}, model_cfg=build_config(spec),
                 train_cfg=train_cfg)

    # the checkpoint: weights of the detector only, its config in meta["cfg"] and beside it
    saved = safe_load(model_path)
    assert not any(k.startswith(("student.", "teacher.")) for k in saved["state_dict"])
    assert "optimizer_junk" not in saved["meta"] and saved["meta"]["role"] == role
    cfg_file = config_path(model_path)
    assert cfg_file.read_text() == saved["meta"]["cfg"]
    assert "dipkd" not in saved["meta"]["cfg"] and "SARCocoMetric" not in saved["meta"]["cfg"]
    assert "FeatureDistiller" not in saved["meta"]["cfg"]
    assert ("FeatureDistiller" in saved["meta"]["train_config"]) == (role == "distilled")
    assert f"depth={50 if role == 'teacher' else 18}" in saved["meta"]["cfg"]

    # our own evaluation on the test split
    dets_file = tmp_path / "ours.json"
    test_model(spec, model_path, detections_out=dets_file)
    images = json.loads((tmp_path / "data/ssdd/annotations/test.json").read_text())["images"]
    ours = _by_image(json.loads(dets_file.read_text()), images)
    assert sum(len(scores) for _, scores in ours.values()) > 0   # something to compare
    paths = [str(tmp_path / "data/ssdd/images/test" / img["file_name"]) for img in images]

    # mmdet's DetInferencer, in a process without dipkd, with the config file beside the model
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", INFERENCER, str(cfg_file), str(model_path),
                           *paths], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    predictions = json.loads(proc.stdout.strip().splitlines()[-1])
    for path, pred in zip(paths, predictions):
        order = np.argsort(-np.array(pred["scores"]), kind="stable")
        _assert_same(ours[Path(path).name], (np.array(pred["bboxes"]).reshape(-1, 4)[order],
                                             np.array(pred["scores"])[order]))

    # init_detector + inference_detector with the config stored in the checkpoint
    from mmengine.config import Config
    model = init_detector(Config.fromstring(saved["meta"]["cfg"], ".py"), str(model_path),
                          device="cpu")
    assert model.dataset_meta["classes"] == ("ship",)
    for path in paths:
        pred = inference_detector(model, path).pred_instances
        order = torch.argsort(pred.scores, descending=True, stable=True)
        _assert_same(ours[Path(path).name], (pred.bboxes[order].numpy(),
                                             pred.scores[order].numpy()))
