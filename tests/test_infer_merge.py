"""`dipkd infer` end to end through the tiling code path with a deterministic fake detector
(bright rectangles are ships; a tile reports the part of each ship inside it), on a scene whose
long ships cross tile borders: `--merge nmm` gives one box per ship covering it, `--merge nms`
keeps partial boxes, and two images are never merged with each other. Also: the model file is
read once by `load_detector`, and its weights and classes are those of that read."""
import json
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dipkd.inference import infer
from dipkd.inference.infer import Detector, InferError, detect

SCALE = (192, 128)
SHIPS = [                     # scene xyxy; every one is longer than the tiles' overlap
    (150, 20, 240, 34),       # cut by the borders of columns 0/1/2 (x 154..192, 208)
    (60, 90, 72, 170),        # cut by the border of rows 0/1 (y 103..128)
    (140, 110, 200, 150),     # cut by both: four tiles
    (100, 350, 200, 358),     # two parallel ships 4 px apart, cut by columns 0/1
    (100, 362, 200, 370),
    (300, 300, 320, 310),     # short: whole in the 4 tiles that see it
]


def _scene() -> np.ndarray:
    """A 400x400 BGR scene, black with the ships in white."""
    img = np.zeros((400, 400, 3), np.uint8)
    for x1, y1, x2, y2 in SHIPS:
        img[y1:y2, x1:x2] = 255
    return img


class _BrightBlobModel:
    """``test_step`` of a fake detector: one box per bright connected region of each crop,
    scored by its size (a larger part of a ship scores higher)."""

    def test_step(self, batch):
        return [self._detect(img) for img in batch["inputs"]]

    @staticmethod
    def _detect(img):
        n, _, stats, _ = cv2.connectedComponentsWithStats((img[:, :, 0] > 127).astype(np.uint8))
        x, y, w, h = (stats[1:, i].astype(np.float32) for i in range(4))
        boxes = torch.from_numpy(np.stack([x, y, x + w, y + h], axis=1).reshape(-1, 4))
        scores = torch.from_numpy(np.minimum(0.99, 0.5 + 0.004 * np.maximum(w, h)))
        pred = types.SimpleNamespace(bboxes=boxes, scores=scores,
                                     labels=torch.zeros(n - 1, dtype=torch.int64))
        return types.SimpleNamespace(pred_instances=pred)


def _fake_detector() -> Detector:
    return Detector(model=_BrightBlobModel(),
                    pipeline=lambda d: {"inputs": d["img"], "data_samples": None},
                    scale=SCALE, classes=("ship",), path=Path("fake.pth"))


def _boxes(dets) -> list[tuple]:
    return sorted(tuple(round(v) for v in b) for b in dets.boxes.tolist())


def test_tiled_detection_merges_the_parts_of_cut_ships_into_one_box():
    scene = _scene()
    nmm = detect(_fake_detector(), scene, overlap=0.2, score_thr=0.3, merge="nmm",
                 batch_size=4)
    assert len(nmm.tiles) == 12
    assert _boxes(nmm) == sorted(SHIPS)

    nms = detect(_fake_detector(), scene, overlap=0.2, score_thr=0.3, merge="nms")
    assert len(nms.scores) > len(SHIPS)
    # the short ship, whole in every tile that sees it, is one box either way
    assert _boxes(nms).count((300, 300, 320, 310)) == 1
    # the long ships are in parts: the east-west one in no box as a whole
    assert (150, 20, 240, 34) not in _boxes(nms)


def _write_scenes(tmp_path) -> list[Path]:
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path in paths:                     # the same scene twice: identical boxes
        cv2.imwrite(str(path), _scene()[:, :, 0])
    return paths


def test_infer_command_merges_each_image_on_its_own(tmp_path, monkeypatch, capsys):
    from dipkd import cli
    monkeypatch.setattr(infer, "load_detector", lambda model, device: _fake_detector())
    paths = _write_scenes(tmp_path)
    counts = {}
    for merge in ("nmm", "nms"):
        out = tmp_path / merge
        assert cli.main(["infer", "fake.pth", *map(str, paths), "--out", str(out),
                         "--merge", merge]) == 0, capsys.readouterr().err
        dets = json.loads((out / "detections.json").read_text())
        per_image = {i: sorted((round(x), round(y), round(x + w), round(y + h))
                               for d in dets if d["image_id"] == i
                               for x, y, w, h in [d["bbox"]]) for i in (1, 2)}
        # identical images keep their own boxes: nothing is merged across images
        assert per_image[1] == per_image[2]
        counts[merge] = len(per_image[1])
        if merge == "nmm":
            assert per_image[1] == sorted(SHIPS)
        info = json.loads((out / "images.json").read_text())
        assert (info["merge"], info["merge_threshold"]) == (merge, 0.5)
    assert counts["nms"] > counts["nmm"]


@pytest.mark.parametrize("option,value", [("merge", "wbf"), ("merge_threshold", 0.0),
                                          ("merge_threshold", 1.5)])
def test_bad_merge_options_are_one_line_errors(tmp_path, option, value):
    with pytest.raises(InferError, match=f"--{option.replace('_', '-')}") as info:
        infer.run("missing.pth", [], str(tmp_path / "out"), **{option: value})
    assert "\n" not in str(info.value)


def test_default_merge_of_the_command_is_nmm():
    from dipkd import cli
    args = cli.build_parser().parse_args(["infer", "m.pth", "x.png", "--out", "o"])
    assert (args.merge, args.merge_threshold) == ("nmm", 0.5)


# --- the model file is read once --------------------------------------------------------------

@pytest.fixture(scope="module")
def exported_model(tmp_path_factory):
    """A tiny RetinaNet R18 with random weights, exported as the pipeline exports models."""
    import copy

    import yaml
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from dipkd.config.params import run_spec
    from dipkd.export import export_model
    from dipkd.mmdet_config import build_config

    tmp = tmp_path_factory.mktemp("infer-load")
    repo = Path(__file__).resolve().parents[1]
    params = copy.deepcopy(yaml.safe_load((repo / "params.yaml").read_text()))
    params["profiles"]["smoke"]["schedule"]["retinanet"]["ssdd"]["scale"] = [128, 96]
    register_all_modules()
    cfg = build_config(run_spec(params, "student", "ssdd", "retinanet"))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save({"state_dict": model.state_dict(),
                "meta": {"dataset_meta": {"classes": ("ship",)}}}, tmp / "ckpt.pth")
    path = tmp / "run.pth"
    export_model(tmp / "ckpt.pth", path, {"role": "student"}, model_cfg=cfg)
    return path


def test_the_model_file_is_read_once_with_its_weights(exported_model, monkeypatch, capfd):
    import warnings
    reads, real_load = [], torch.load

    def counting_load(f, *args, **kwargs):
        reads.append(Path(f) if isinstance(f, (str, Path)) else f)
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        det = infer.load_detector(exported_model, "cpu")
    assert reads.count(exported_model) == 1, reads
    monkeypatch.undo()
    # no warning escapes to the command's stderr (init_detector warns without a checkpoint)
    assert [str(w.message) for w in seen] == [] and capfd.readouterr().err == ""

    assert det.classes == ("ship",) and det.scale == (128, 96)
    saved = torch.load(exported_model, weights_only=False)["state_dict"]
    loaded = det.model.state_dict()
    assert set(saved) <= set(loaded)
    for key, value in saved.items():
        assert torch.equal(loaded[key].cpu(), value), key


def test_a_model_that_fails_to_build_is_one_line(exported_model, tmp_path):
    bad = torch.load(exported_model, weights_only=False)
    bad["meta"]["cfg"] = bad["meta"]["cfg"].replace("RetinaNet", "NoSuchDetector")
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(InferError, match="cannot build the detector") as info:
        infer.load_detector(tmp_path / "bad.pth", "cpu")
    assert "\n" not in str(info.value)
