"""The `dipkd` command (dipkd.cli): --help of each subcommand, `dipkd efficiency` forwarding,
`dipkd compare` (the table of pipeline.compare), one-line errors, and `dipkd infer` end to end
on a tiny exported random RetinaNet: a scene 3x the model's scale is tiled (and the tiles'
detections are those of mmdet's `inference_detector` on each tile, shifted and merged), every
image gets its PNG and its JSON entries, and a corrupt file is one line while the rest go on."""
import copy
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SCALE = (128, 96)


def _cli(*args, cwd=REPO, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "dipkd.cli", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


# --- help, console script, efficiency forwarding --------------------------------------------

def test_help_of_the_command_and_its_subcommands():
    top = _cli("--help")
    assert top.returncode == 0, top.stderr
    for name in ("infer", "compare", "efficiency"):
        assert name in top.stdout
    infer = _cli("infer", "--help")
    assert infer.returncode == 0, infer.stderr
    for option in ("MODEL", "IMAGE_OR_DIR", "--out", "--score-thr", "--overlap", "--nms-iou",
                   "--device", "--tile-size", "detections.json", "16-bit"):
        assert option in infer.stdout, option
    compare = _cli("compare", "--help")
    assert compare.returncode == 0, compare.stderr
    for option in ("--experiment", "--filter", "--metrics", "--params", "%table3%"):
        assert option in compare.stdout, option
    assert _cli().returncode == 2      # no subcommand: usage, exit code 2


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "dipkd"
    assert script.is_file(), "pip install -e . creates it ([project.scripts])"
    assert "dipkd.cli" in script.read_text()
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "infer" in out.stdout


def test_efficiency_forwards_its_arguments(monkeypatch, capsys):
    from dipkd import cli
    seen = {}

    def fake_main(argv):
        seen["argv"], seen["prog"] = argv, sys.argv[0]
        return 3
    monkeypatch.setitem(sys.modules, "dipkd.efficiency", types.SimpleNamespace(main=fake_main))
    assert cli.main(["efficiency", "--help", "--runs", "5"]) == 3
    assert seen == {"argv": ["--help", "--runs", "5"], "prog": "dipkd efficiency"}


def test_efficiency_without_its_module_is_one_line(monkeypatch, capsys):
    from dipkd import cli
    monkeypatch.setitem(sys.modules, "dipkd.efficiency", None)    # import fails
    assert cli.main(["efficiency", "--help"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and "efficiency" in err


def test_efficiency_help_comes_from_its_module():
    pytest.importorskip("dipkd.efficiency")
    out = _cli("efficiency", "--help")
    assert out.returncode == 0, out.stderr
    assert "usage: dipkd efficiency" in out.stdout and "--params" in out.stdout


# --- compare ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_compare_prints_the_table_of_pipeline_compare(tmp_path):
    import mlflow

    from pipeline import compare as pipeline_compare
    from dipkd import cli
    # one function and one set of options for `dipkd compare` and `python -m pipeline.compare`
    assert pipeline_compare.main is cli.compare
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("dipkd-repro/smoke")
    for m_ap in (0.50, 0.54):
        with mlflow.start_run(experiment_id=exp):
            mlflow.set_tags({"dataset": "ssdd", "detector": "retinanet", "role": "distilled",
                             "method": "dipkd", "profile": "smoke"})
            mlflow.log_metrics({"test/mAP": m_ap, "test/AP50": 0.9})
    env = {**__import__("os").environ, "MLFLOW_TRACKING_URI": uri,
           "PYTHONPATH": str(REPO)}
    # no params.yaml in the working directory: the default experiment
    out = _cli("compare", "--metrics", "mAP", "AP50", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if "dipkd" in line)
    assert "52.0" in row and "90.0" in row and "2.8" in row
    bad = _cli("compare", "--experiment", "nope", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "no MLflow experiment 'nope'" in bad.stderr
    assert "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1
    missing = _cli("compare", "--params", tmp_path / "nope.yaml", cwd=tmp_path, env=env)
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr


# --- infer: errors ----------------------------------------------------------------------------

def _one_line_error(proc, *words):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for w in words:
        assert w in lines[0]


def test_infer_bad_model_is_one_line_exit_2(tmp_path):
    img = tmp_path / "x.png"
    img.write_bytes(b"")
    _one_line_error(_cli("infer", tmp_path / "nope.pth", img, "--out", tmp_path / "o"),
                    "nope.pth", "not found")
    (tmp_path / "junk.pth").write_text("this is not a checkpoint")
    _one_line_error(_cli("infer", tmp_path / "junk.pth", img, "--out", tmp_path / "o"),
                    "junk.pth", "not a readable torch checkpoint")
    torch.save({"state_dict": {}, "meta": {}}, tmp_path / "nocfg.pth")
    _one_line_error(_cli("infer", tmp_path / "nocfg.pth", img, "--out", tmp_path / "o"),
                    "nocfg.pth", "no mmdet config")
    _one_line_error(_cli("infer", tmp_path / "nocfg.pth", img, "--out", tmp_path / "o",
                         "--overlap", "1.5"), "--overlap")
    _one_line_error(_cli("infer", tmp_path / "nocfg.pth", img, "--out", tmp_path / "o",
                         "--tile-size", "0", "64"), "--tile-size")
    if not torch.cuda.is_available():
        _one_line_error(_cli("infer", tmp_path / "nocfg.pth", img, "--out", tmp_path / "o",
                             "--device", "cuda:0"), "cuda:0", "CUDA is not available")
    assert not (tmp_path / "o").exists()


# --- infer: a tiny exported model -------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A RetinaNet R18 with random weights (classification bias zeroed so that scores pass
    0.3) at scale 128x96, exported as the pipeline exports models; the synthetic test images
    it goes with."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from dipkd.mmdet_config import build_config
    from dipkd.config.params import run_spec
    from dipkd.datasets.synthetic import generate_dataset
    from dipkd.export import export_model

    tmp = tmp_path_factory.mktemp("infer")
    params = copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text()))
    params["profiles"]["smoke"]["schedule"]["retinanet"]["ssdd"]["scale"] = list(SCALE)
    generate_dataset(tmp / "data", preset="ssdd-like", seed=0, image_scale=0.25,
                     num_train=1, num_test=2)
    register_all_modules()
    spec = run_spec(params, "student", "ssdd", "retinanet")
    cfg = build_config(spec)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    state = model.state_dict()
    for key in state:
        if key.endswith("retina_cls.bias"):
            state[key] = torch.zeros_like(state[key])
    torch.save({"state_dict": state, "meta": {"dataset_meta": {"classes": ("ship",)}}},
               tmp / "ckpt.pth")
    model_path = tmp / "models" / "student" / "run.pth"
    export_model(tmp / "ckpt.pth", model_path, {"role": "student"}, model_cfg=cfg)
    return model_path, sorted((tmp / "data" / "images" / "test").glob("*.png"))


def _scene(image_path):
    """A scene 3x the model's scale (384x288) made of copies of a synthetic test image."""
    import cv2
    img = cv2.imread(str(image_path), cv2.IMREAD_GRAYSCALE)
    reps = (-(-3 * SCALE[1] // img.shape[0]), -(-3 * SCALE[0] // img.shape[1]))
    return np.ascontiguousarray(np.tile(img, reps)[:3 * SCALE[1], :3 * SCALE[0]])


def _canonical(boxes, scores):
    """(score, x1, y1, x2, y2) rows sorted by score (to 4 decimals), then position."""
    rows = np.column_stack([np.round(scores, 4), np.round(boxes, 1)])
    return rows[np.lexsort(rows.T[::-1])]


@pytest.mark.slow
def test_tiled_detection_is_mmdets_inference_on_each_tile_merged(exported):
    """Independent reference: mmdet's `inference_detector` on each tile (its own pipeline
    from the config), shifted by hand and merged by torchvision's NMS."""
    from mmdet.apis import inference_detector
    from torchvision.ops import batched_nms

    from dipkd.inference.infer import detect, load_detector
    from dipkd.inference.tiling import tile_grid

    model_path, images = exported
    det = load_detector(model_path, "cpu")
    assert det.scale == SCALE and det.classes == ("ship",)
    scene = np.repeat(_scene(images[0])[:, :, None], 3, axis=2)
    ours = detect(det, scene, overlap=0.2, nms_iou=0.5, score_thr=0.3, batch_size=3,
                  merge="nms")
    assert len(ours.tiles) == 16

    boxes, scores, labels = [], [], []
    for t in tile_grid(384, 288, SCALE, 0.2):
        pred = inference_detector(det.model, scene[t.y0:t.y1, t.x0:t.x1].copy()).pred_instances
        keep = pred.scores >= 0.3
        boxes.append(pred.bboxes[keep] + torch.tensor([t.x0, t.y0, t.x0, t.y0]))
        scores.append(pred.scores[keep])
        labels.append(pred.labels[keep])
    boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    keep = batched_nms(boxes, scores, labels, 0.5)
    assert len(keep) > 0 and len(ours.scores) == len(keep)
    # the scene repeats an image: equal scores, so compare in a canonical order
    np.testing.assert_allclose(_canonical(ours.boxes, ours.scores),
                               _canonical(boxes[keep].numpy(), scores[keep].numpy()),
                               atol=1e-2)
    # detections come from all over the scene, not only the first tile
    assert ours.boxes[:, 0].max() > SCALE[0] and ours.boxes[:, 1].max() > SCALE[1]

    # --tile-size: another grid (x starts 0, 154, 192; y starts 0, 116, 144), same merge
    other = detect(det, scene, overlap=0.2, score_thr=0.3, batch_size=9, tile_size=(192, 144))
    assert [(t.x0, t.y0) for t in other.tiles[:4]] == [(0, 0), (154, 0), (192, 0), (0, 116)]
    assert len(other.tiles) == 9 and len(other.scores) > 0

    # an image that fits the scale is run whole: exactly inference_detector's output
    small = scene[:80, :100].copy()
    whole = detect(det, small, score_thr=0.3)
    assert len(whole.tiles) == 1
    pred = inference_detector(det.model, small).pred_instances
    ref = pred.scores[pred.scores >= 0.3].sort(descending=True).values.numpy()
    np.testing.assert_allclose(whole.scores, ref, atol=1e-5)


@pytest.mark.slow
def test_infer_end_to_end(exported, tmp_path):
    import cv2
    from pycocotools.coco import COCO

    model_path, images = exported
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    big = _scene(images[0])
    cv2.imwrite(str(tmp_path / "big.png"), big)
    cv2.imwrite(str(scenes / "big16.tif"), big.astype(np.uint16) * 180 + 400)   # 16-bit
    small = cv2.imread(str(images[1]))
    cv2.imwrite(str(scenes / "small.png"), cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(scenes / "rgba.png"), cv2.cvtColor(small, cv2.COLOR_BGR2BGRA))
    (tmp_path / "corrupt.png").write_bytes(images[0].read_bytes()[:100])
    out = tmp_path / "out"

    proc = _cli("infer", model_path, scenes, tmp_path / "corrupt.png", tmp_path / "big.png",
                "--out", out, "--score-thr", "0.3", "--batch-size", "4")
    assert proc.returncode == 1, proc.stderr            # one image failed
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "corrupt.png" in err[0] and "not a readable image" in err[0]
    progress = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    assert len(progress) == 4, proc.stdout             # one line per image read
    assert "big.png: 384x288, 16 tiles of 128x96" in proc.stdout

    info = json.loads((out / "images.json").read_text())
    by_name = {img["file_name"]: img for img in info["images"]}
    assert set(by_name) == {"big16.tif", "rgba.png", "small.png", "big.png"}
    assert by_name["big.png"]["tiles"] == 16 and by_name["big16.tif"]["tiles"] == 16
    assert (by_name["small.png"]["width"], by_name["small.png"]["height"]) == small.shape[1::-1]
    assert [f["path"] for f in info["failed"]] == [str(tmp_path / "corrupt.png")]
    assert info["tile_size"] == list(SCALE) and info["categories"] == [{"id": 1, "name": "ship"}]
    # image ids are the inputs' positions (the corrupt file keeps its id 4)
    assert by_name["big.png"]["id"] == 5

    dets = json.loads((out / "detections.json").read_text())
    assert dets and all(d["score"] >= 0.3 and d["category_id"] == 1 for d in dets)
    for img in info["images"]:
        mine = [d for d in dets if d["image_id"] == img["id"]]
        assert len(mine) == img["detections"] > 0
        assert all(d["file_name"] == img["file_name"] for d in mine)
        for x, y, w, h in (d["bbox"] for d in mine):
            assert 0 <= x and 0 <= y and w > 0 and h > 0
            assert x + w <= img["width"] + 1e-3 and y + h <= img["height"] + 1e-3
        vis = cv2.imread(str(out / img["visualization"]))
        assert vis.shape[:2] == (img["height"], img["width"])
        # the boxes are drawn in green on a grayscale image
        assert ((vis[:, :, 1] == 255) & (vis[:, :, 0] == 0)).any()
    assert {p.name for p in out.glob("*.png")} == {"big16.png", "rgba.png", "small.png",
                                                  "big.png"}
    # the results are a COCO results file for these images
    coco = COCO()
    coco.dataset = {"images": info["images"], "categories": info["categories"],
                    "annotations": []}
    coco.createIndex()
    assert len(coco.loadRes(str(out / "detections.json")).getAnnIds()) == len(dets)
