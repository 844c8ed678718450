"""SSDD / HRSID: download (local HTTP server), resume, checksum, unpack, conversion, errors.

The fixtures are tiny releases in the official folder layouts and file formats
(see ../shared/notes/datasets.md), made here, never downloaded.
"""
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dipkd.datasets.archive import ArchiveError, unpack
from dipkd.datasets.download import DownloadError, download
from dipkd.datasets.sources.hrsid import convert_hrsid
from dipkd.datasets.real import DatasetError
from dipkd.datasets.sources.ssdd import convert_ssdd, is_test
from dipkd.evaluation.coco_eval import evaluate_detections

REPO = Path(__file__).resolve().parents[1]
SSDD_NUMBERS = range(1, 13)  # 000001 ... 000012: 1, 9, 11 are test images


def _jpeg(path, w, h, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).convert("RGB").save(path)


def _voc_xml(boxes, w, h):
    objs = "".join(f"<object><name>ship</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                   f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for b in boxes)
    return (f"<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
            f"{objs}</annotation>")


def make_ssdd(root: Path) -> Path:
    """Official-SSDD-OPEN/BBox_SSDD/{voc_style, coco_style} with 12 images."""
    base = root / "Official-SSDD-OPEN" / "BBox_SSDD"
    voc = base / "voc_style"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    coco = {s: {"images": [], "annotations": [], "categories": [{"id": 0, "name": "ship"}]}
            for s in ("train", "test")}
    inshore = []
    for n in SSDD_NUMBERS:
        stem, w, h = f"{n:06d}", 60 + n, 40 + n
        _jpeg(voc / "JPEGImages" / f"{stem}.jpg", w, h, n)
        boxes = [[5, 5, 15 + n, 12]] + ([[30, 20, 40, 30]] if n % 2 else [])
        (voc / "Annotations" / f"{stem}.xml").write_text(_voc_xml(boxes, w, h))
        split = "test" if n % 10 in (1, 9) else "train"
        coco[split]["images"].append({"id": n, "file_name": f"{stem}.jpg", "width": w,
                                      "height": h})
        for b in boxes:
            coco[split]["annotations"].append({
                "id": len(coco[split]["annotations"]), "image_id": n, "category_id": 0,
                "bbox": [b[0] + 0.4, b[1] - 0.3, b[2] - b[0], b[3] - b[1]], "iscrowd": 0,
                "area": float((b[2] - b[0]) * (b[3] - b[1]))})
        if split == "test" and n == 1:
            inshore.append(stem)
    (voc / "ImageSets/Main/test_inshore.txt").write_text("\n".join(inshore) + "\n")
    (voc / "ImageSets/Main/test_offshore.txt").write_text("000009\n000011\n")
    (base / "coco_style" / "annotations").mkdir(parents=True)
    for split, data in coco.items():
        (base / "coco_style" / "annotations" / f"{split}.json").write_text(json.dumps(data))
    return root


def make_hrsid(root: Path) -> Path:
    """HRSID_JPG/{JPEGImages, annotations/{train2017,test2017}.json}, 0-based ids."""
    base = root / "HRSID_JPG"
    (base / "JPEGImages").mkdir(parents=True)
    (base / "annotations").mkdir()
    ann_id = 0
    for split, names in (("train2017", ["P0001_0_800_0_800.jpg", "P0001_0_800_800_1600.jpg"]),
                         ("test2017", ["P0002_0_800_0_800.jpg"])):
        data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "ship"}]}
        for img_id, name in enumerate(names):
            _jpeg(base / "JPEGImages" / name, 80, 80, img_id)
            data["images"].append({"id": img_id, "file_name": name, "width": 80, "height": 80})
            for box in ([10, 10, 20, 8], [40, 50, 12, 25]):
                data["annotations"].append({"id": ann_id, "image_id": img_id, "category_id": 1,
                                            "bbox": box, "area": box[2] * box[3],
                                            "iscrowd": 0})
                ann_id += 1
        (base / "annotations" / f"{split}.json").write_text(json.dumps(data))
    return root


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support; ``cut_after`` bytes ends the first response."""

    cut_after: int | None = None
    ranges: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        type(self).ranges.append(rng)
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).cut_after is not None:
            self.wfile.write(body[:type(self).cut_after])
            type(self).cut_after = None
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = type("H", (_Handler,), {"cut_after": None, "ranges": []})

    def factory(*args, **kwargs):
        return handler(*args, directory=str(root), **kwargs)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), factory)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()


def _zip_dir(src: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for p in sorted(src.rglob("*")):
            zf.write(p, p.relative_to(src))
    return out


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- SSDD ---------------------------------------------------------------------------------

def test_ssdd_split_rule():
    assert [n for n in range(1, 21) if is_test(n)] == [1, 9, 11, 19]


def test_ssdd_conversion(tmp_path):
    src = make_ssdd(tmp_path / "src")
    with pytest.warns(UserWarning, match="published release has 1160 / 2456"):
        summary = convert_ssdd(src, tmp_path / "out")
    assert summary["test"]["images"] == 3 and summary["train"]["images"] == 9
    assert summary["coco_style_images_compared"] == 12
    assert summary["coco_style_images_differing"] == 0
    test = json.loads((tmp_path / "out/annotations/test.json").read_text())
    assert [im["file_name"] for im in test["images"]] == ["000001.jpg", "000009.jpg",
                                                          "000011.jpg"]
    assert [im.get("scene") for im in test["images"]] == ["inshore", "offshore", "offshore"]
    assert test["categories"] == [{"id": 1, "name": "ship"}]
    first = test["annotations"][0]
    assert first["bbox"] == [5.0, 5.0, 11.0, 7.0] and first["area"] == 77.0  # VOC xyxy -> xywh
    assert first["iscrowd"] == 0 and first["id"] == 1
    # pycocotools loads and evaluates the converted file: perfect detections give mAP 1
    dets = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 1.0}
            for a in test["annotations"]]
    assert evaluate_detections(tmp_path / "out/annotations/test.json", dets)["mAP"] == 1.0
    assert (tmp_path / "out/images/train/000002.jpg").read_bytes() == \
        (src / "Official-SSDD-OPEN/BBox_SSDD/voc_style/JPEGImages/000002.jpg").read_bytes()


def _voc(src):
    return src / "Official-SSDD-OPEN/BBox_SSDD/voc_style"


@pytest.mark.parametrize("damage,message", [
    (lambda v: (v / "Annotations/000004.xml").unlink(),
     "000004.xml: missing annotation for image 000004.jpg"),
    (lambda v: (v / "Annotations/000005.xml").write_text("<annotation><object>"),
     "000005.xml: malformed XML"),
    (lambda v: (v / "JPEGImages/000006.jpg").write_bytes(b"\xff\xd8 not a jpeg"),
     "000006.jpg: image cannot be decoded"),
    (lambda v: (v / "Annotations/000007.xml").write_text(_voc_xml([[50, 5, 90, 20]], 67, 47)),
     "000007.xml: box .* lies outside its 67x47 image"),
    (lambda v: (v / "Annotations/000008.xml").write_text(_voc_xml([[9, 5, 9, 20]], 68, 48)),
     "000008.xml: box .* has no positive area"),
])
def test_ssdd_bad_input_names_the_file(tmp_path, damage, message):
    src = make_ssdd(tmp_path / "src")
    damage(_voc(src))
    with pytest.raises(DatasetError, match=message):
        convert_ssdd(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]  # no half dataset, no temp dir


def test_box_off_by_a_pixel_is_clipped_with_a_warning(tmp_path):
    src = make_ssdd(tmp_path / "src")
    (_voc(src) / "Annotations/000002.xml").write_text(_voc_xml([[1, 1, 62.5, 20]], 62, 42))
    with pytest.warns(UserWarning, match="clipped to the 62x42 image"):
        convert_ssdd(src, tmp_path / "out")
    train = json.loads((tmp_path / "out/annotations/train.json").read_text())
    assert train["annotations"][0]["bbox"] == [1.0, 1.0, 61.0, 19.0]


# --- HRSID --------------------------------------------------------------------------------

def test_hrsid_conversion_renumbers_ids(tmp_path):
    src = make_hrsid(tmp_path / "src")
    with pytest.warns(UserWarning, match="5604 / 16951"):
        summary = convert_hrsid(src, tmp_path / "out")
    assert (summary["train"]["images"], summary["train"]["ships"]) == (2, 4)
    train = json.loads((tmp_path / "out/annotations/train.json").read_text())
    assert [a["id"] for a in train["annotations"]] == [1, 2, 3, 4]
    assert [im["id"] for im in train["images"]] == [1, 2]
    dets = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 1.0}
            for a in train["annotations"]]
    m = evaluate_detections(tmp_path / "out/annotations/train.json", dets)
    assert m["mAP"] == 1.0 and m["mAR"] == 1.0  # id 0 would have been lost


def test_hrsid_keeps_the_release_area_and_falls_back_to_the_box(tmp_path):
    """HRSID's ``area`` is the mask area: kept as is (it decides APs/APm/APl); w*h only when
    the annotation has no valid area."""
    src = make_hrsid(tmp_path / "src")
    ann_file = src / "HRSID_JPG/annotations/train2017.json"
    data = json.loads(ann_file.read_text())
    anns = data["annotations"]  # boxes 20x8, 12x25, 20x8, 12x25
    anns[0]["area"] = 101.0     # mask smaller than its box
    del anns[1]["area"]         # missing -> 12 * 25
    anns[2]["area"] = 0         # invalid -> 20 * 8
    anns[3]["area"] = 2000      # larger than the box: still the release's value (medium)
    ann_file.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="5604 / 16951"):
        summary = convert_hrsid(src, tmp_path / "out")
    train = json.loads((tmp_path / "out/annotations/train.json").read_text())
    assert [a["area"] for a in train["annotations"]] == [101.0, 300.0, 160.0, 2000.0]
    assert [a["bbox"][2:] for a in train["annotations"]] == [[20, 8], [12, 25], [20, 8], [12, 25]]
    assert summary["area_fallbacks"] == {"train": 2, "test": 0}
    assert (summary["train"]["small"], summary["train"]["medium"]) == (3, 1)
    test = json.loads((tmp_path / "out/annotations/test.json").read_text())
    assert [a["area"] for a in test["annotations"]] == [160.0, 300.0]  # fixture: area = w*h


def test_hrsid_skips_zero_size_boxes_and_counts_them(tmp_path):
    """A box of width or height 0, or with nothing left once clipped to the image, is left out
    (as COCO tools do) and counted in the summary; the conversion goes on."""
    src = make_hrsid(tmp_path / "src")
    ann_file = src / "HRSID_JPG/annotations/train2017.json"
    data = json.loads(ann_file.read_text())
    anns = data["annotations"]  # boxes [10, 10, 20, 8], [40, 50, 12, 25] on two 80x80 images
    anns[1]["bbox"] = [40, 50, 0, 25]      # zero width
    anns[2]["bbox"] = [10, 10, 20, 0]      # zero height
    data["annotations"].append({"id": 99, "image_id": 1, "category_id": 1,
                                "bbox": [80, 30, 0.5, 6], "area": 3, "iscrowd": 0})
    ann_file.write_text(json.dumps(data))  # ^ 80.5 - 80 px wide: nothing left once clipped
    with pytest.warns(UserWarning) as caught:
        summary = convert_hrsid(src, tmp_path / "out")
    said = [str(w.message) for w in caught]
    assert any(m.endswith("train2017.json: 3 zero-size box(es) skipped") for m in said), said
    assert any("(annotation 99, " in m and "clipped" in m for m in said), said
    train = json.loads((tmp_path / "out/annotations/train.json").read_text())
    assert [a["bbox"] for a in train["annotations"]] == [[10, 10, 20, 8], [40, 50, 12, 25]]
    assert [a["image_id"] for a in train["annotations"]] == [1, 2]
    assert summary["skipped_boxes"] == {"train": 3, "test": 0}
    assert summary["train"]["ships"] == 2 and summary["test"]["ships"] == 2
    on_disk = json.loads((tmp_path / "out/summary.json").read_text())
    assert on_disk["skipped_boxes"] == {"train": 3, "test": 0}


@pytest.mark.parametrize("damage,message", [
    (lambda b: (b / "annotations/test2017.json").write_text("{not json"),
     "test2017.json: malformed COCO JSON"),
    (lambda b: (b / "JPEGImages/P0002_0_800_0_800.jpg").unlink(),
     "P0002_0_800_0_800.jpg: image file missing"),
    (lambda b: (b / "annotations/train2017.json").write_text(json.dumps(
        {"images": [], "annotations": [], "categories": [{"id": 1, "name": "boat"}]})),
     "train2017.json: expected the single category 'ship'"),
])
def test_hrsid_bad_input_names_the_file(tmp_path, damage, message):
    src = make_hrsid(tmp_path / "src")
    damage(src / "HRSID_JPG")
    with pytest.raises(DatasetError, match=message):
        convert_hrsid(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- download and archives ----------------------------------------------------------------

def test_download_resumes_after_a_cut_connection(server, tmp_path, capsys):
    root, url, handler = server
    payload = os.urandom(300_000)
    (root / "ssdd.zip").write_bytes(payload)
    handler.cut_after = 100_000
    dest = tmp_path / "dl" / "ssdd.zip"
    with pytest.raises(DownloadError, match="bytes kept in .*ssdd.zip.partial to resume"):
        download(f"{url}/ssdd.zip", dest, retries=0)
    assert (tmp_path / "dl/ssdd.zip.partial").stat().st_size == 100_000
    download(f"{url}/ssdd.zip", dest, sha256=hashlib.sha256(payload).hexdigest())
    assert dest.read_bytes() == payload and handler.ranges[-1] == "bytes=100000-"
    assert hashlib.sha256(payload).hexdigest() in capsys.readouterr().out  # printed to pin it
    assert not (tmp_path / "dl/ssdd.zip.partial").exists()


def test_download_retries_within_one_call(server, tmp_path):
    root, url, handler = server
    (root / "a.bin").write_bytes(b"x" * 50_000)
    handler.cut_after = 10_000
    assert download(f"{url}/a.bin", tmp_path / "a.bin").read_bytes() == b"x" * 50_000


def test_checksum_mismatch_discards_the_download(server, tmp_path):
    root, url, _ = server
    (root / "h.tar.gz").write_bytes(b"abc")
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(f"{url}/h.tar.gz", tmp_path / "h.tar.gz", sha256="0" * 64)
    assert not list(tmp_path.glob("h.tar.gz*"))
    with pytest.raises(DownloadError, match="HTTPError"):
        download(f"{url}/missing.zip", tmp_path / "m.zip")


def test_unpack_errors(tmp_path):
    with pytest.raises(ArchiveError, match="nope.zip: archive not found"):
        unpack(tmp_path / "nope.zip", tmp_path)
    bogus = tmp_path / "bogus.zip"
    bogus.write_text("hello")
    with pytest.raises(ArchiveError, match="bogus.zip: not an archive"):
        unpack(bogus, tmp_path / "x")
    assert not any((tmp_path / "x").iterdir())


# --- the prepare stage --------------------------------------------------------------------

def _stage(ws, params):
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run([sys.executable, "-m", "pipeline.prepare_data", "--dataset", "ssdd"],
                          cwd=ws, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=300)


def test_prepare_stage_from_url_and_from_tar(server, tmp_path, params):
    root, url, _ = server
    archive = _zip_dir(make_ssdd(tmp_path / "rel"), root / "Official-SSDD-OPEN.zip")
    ws = tmp_path / "ws"
    ws.mkdir()
    params["data"]["ssdd"] = {"source": "ssdd", "url": f"{url}/Official-SSDD-OPEN.zip",
                              "sha256": _sha(archive)}
    proc = _stage(ws, params)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((ws / "metrics/data/ssdd.json").read_text())["metrics"]["test"][
        "images"] == 3
    assert (ws / "data/ssdd/annotations/train.json").is_file()
    assert sorted(p.name for p in (ws / "data").iterdir()) == ["ssdd"]  # no unpack left over

    # HRSID from a local tar.gz archive
    tar = tmp_path / "HRSID_JPG.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(make_hrsid(tmp_path / "hr") / "HRSID_JPG", arcname="HRSID_JPG")
    params["data"]["ssdd"] = {"source": "hrsid", "archive": str(tar)}
    assert _stage(ws, params).returncode == 0
    assert json.loads((ws / "data/ssdd/summary.json").read_text())["source"] == "hrsid"


def _numbers_only(value) -> bool:
    if isinstance(value, dict):
        return all(_numbers_only(v) for v in value.values())
    return type(value) in (int, float)


def test_prepare_stage_metrics_hold_numbers_and_the_sidecar_the_rest(tmp_path, params):
    """`dvc metrics show` reads metrics/data/<ds>.json: numbers only; the text fields (source,
    warnings) stay in the layout's data/<ds>/summary.json, with the numbers."""
    params["data"]["ssdd"] = {"source": "hrsid", "path": str(make_hrsid(tmp_path / "rel"))}
    ws = tmp_path / "ws"
    ws.mkdir()
    proc = _stage(ws, params)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((ws / "metrics/data/ssdd.json").read_text())["metrics"]
    assert _numbers_only(metrics), metrics
    assert metrics["train"]["images"] == 2 and metrics["skipped_boxes"] == {"train": 0, "test": 0}
    sidecar = json.loads((ws / "data/ssdd/summary.json").read_text())
    assert set(sidecar) - set(metrics) == {"source", "warnings"}
    assert sidecar["source"] == "hrsid" and "5604 / 16951" in sidecar["warnings"][0]
    assert {key: sidecar[key] for key in metrics} == metrics


def test_metrics_of_a_summary_are_its_numbers():
    from pipeline.prepare_data import numeric_fields
    summary = {"train": {"images": 2, "ships_per_image": 1.5}, "seed": 0, "preset": "ssdd-like",
               "config": {"num_train": 2, "length_range": [4, 9]}, "warnings": [],
               "flag": True, "empty": {}, "nested": {"a": {"b": 1}}}
    assert numeric_fields(summary) == {"train": {"images": 2, "ships_per_image": 1.5},
                                       "seed": 0, "nested": {"a": {"b": 1}}}


def test_prepare_stage_failure_keeps_the_previous_dataset(server, tmp_path, params):
    root, url, _ = server
    ws = tmp_path / "ws"
    shutil.copytree(make_ssdd(tmp_path / "rel"), ws / "release")
    params["data"]["ssdd"] = {"source": "ssdd", "path": str(ws / "release")}
    assert _stage(ws, params).returncode == 0
    before = (ws / "data/ssdd/annotations/test.json").read_bytes()
    params["data"]["ssdd"] = {"source": "ssdd", "url": f"{url}/missing.zip"}
    proc = _stage(ws, params)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (ws / "data/ssdd/annotations/test.json").read_bytes() == before
    params["data"]["ssdd"] = {"source": "ssdd"}
    proc = _stage(ws, params)
    assert "needs one of path, archive, url" in proc.stderr
