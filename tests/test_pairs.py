"""Paired comparisons between any two run groups (params.yaml ``compare``,
dipkd/reports/pairs.py, reports/tables/compare.*): Δ, 95% CI and the seeds/images variance
split checked against a bootstrap written independently here (numpy + pycocotools, full
COCOeval on rebuilt, resampled datasets), the table, the MLflow metrics and the one-line
errors for pairs that cannot be compared."""
import contextlib
import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from dipkd.reports.pairs import compare_runs, log_comparisons, planned
from dipkd.reports.tables import compare as compare_table

N_IMAGES, SEEDS, RESAMPLES, RNG_SEED = 9, (0, 1, 2), 40, 0   # RNG_SEED: bootstrap.SEED
KEY = "ssdd-faster_rcnn"
GROUPS = {"student": 10, "distilled/dipkd": 20, "distilled/inherit_only": 30}


def _gt() -> dict:
    """Nine 100x100 images with 1-3 ships each (fixed by a seeded generator)."""
    rng = np.random.default_rng(123)
    images, anns = [], []
    for i in range(1, N_IMAGES + 1):
        images.append({"id": i, "width": 100, "height": 100, "file_name": f"{i}.png"})
        for _ in range(int(rng.integers(1, 4))):
            x, y = rng.uniform(0, 60, 2)
            w, h = rng.uniform(10, 35, 2)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1,
                         "bbox": [float(x), float(y), float(w), float(h)],
                         "area": float(w * h), "iscrowd": 0})
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "ship"}]}


def _dets(gt: dict, seed: int, jitter: float) -> list[dict]:
    """A run's detections: every ship found with a ``jitter``-px error and a random score,
    plus one random false positive per image."""
    rng = np.random.default_rng(seed)
    out = []
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        e = rng.normal(0, jitter, 4)
        out.append({"image_id": a["image_id"], "category_id": 1,
                    "bbox": [x + e[0], y + e[1], max(2.0, w + e[2]), max(2.0, h + e[3])],
                    "score": float(rng.uniform(0.3, 1.0))})
    for img in gt["images"]:
        out.append({"image_id": img["id"], "category_id": 1,
                    "bbox": [float(v) for v in rng.uniform(0, 70, 2)] + [15.0, 15.0],
                    "score": float(rng.uniform(0.0, 0.8))})
    return out


def _write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _workspace(root, params, seeds=SEEDS):
    """Detections (and metrics files, for the other tables) of student, DIPKD and
    inherit-only per seed on one dataset/detector; DIPKD the most precise boxes."""
    params.update(datasets=["ssdd"], detectors=["faster_rcnn"], seeds=list(seeds),
                  baselines=["inherit_only"], compare=[["dipkd", "inherit_only"]])
    params["ablation"].update(modules=[], tau=[], mask_rate=[])
    gt = _gt()
    _write_json(root / "data" / "ssdd" / "annotations" / "test.json", gt)
    dets = {}
    for group, base_seed in GROUPS.items():
        jitter = {"student": 4.0, "distilled/dipkd": 1.5, "distilled/inherit_only": 2.5}[group]
        for s in seeds:
            dets[group, s] = _dets(gt, base_seed + s, jitter)
            _write_json(root / "detections" / group / f"{KEY}-seed{s}.json", dets[group, s])
    return params, gt, dets


def _coco_map(gt: dict, dets: list[dict], positions) -> float:
    """mAP of ``dets`` on the images at ``positions`` (repeats become new images), by
    rebuilding the dataset and running COCOeval from scratch."""
    images, anns, res = [], [], []
    for new_id, pos in enumerate(positions, start=1):
        old = gt["images"][pos]["id"]
        images.append(dict(gt["images"][pos], id=new_id))
        anns += [dict(a, id=len(anns) + k + 1, image_id=new_id)
                 for k, a in enumerate(a for a in gt["annotations"] if a["image_id"] == old)]
        res += [dict(d, image_id=new_id) for d in dets if d["image_id"] == old]
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns, "categories": gt["categories"]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(res), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


class Independent:
    """The paired bootstrap as documented (seeds with replacement, then images with
    replacement, from numpy's default_rng(0); metric = mean over the drawn seeds' runs),
    written from scratch with memoised full COCOeval runs."""

    def __init__(self, gt, dets, a, b, seeds):
        self.gt, self.dets, self.a, self.b, self.seeds = gt, dets, a, b, list(seeds)
        self.memo = {}

    def _m(self, group, s, positions):
        key = (group, s, tuple(positions))
        if key not in self.memo:
            self.memo[key] = _coco_map(self.gt, self.dets[group, self.seeds[s]], positions)
        return self.memo[key]

    def diff(self, seeds, positions):
        return 100 * (np.mean([self._m(self.a, s, positions) for s in seeds])
                      - np.mean([self._m(self.b, s, positions) for s in seeds]))

    def run(self, resamples):
        rng = np.random.default_rng(RNG_SEED)
        n_seed, everything = len(self.seeds), list(range(N_IMAGES))
        both, seeds_only, images_only = [], [], []
        for _ in range(resamples):
            seeds = rng.integers(0, n_seed, n_seed) if n_seed > 1 else np.arange(1)
            images = rng.integers(0, N_IMAGES, N_IMAGES)
            both.append(self.diff(seeds, images))
            seeds_only.append(self.diff(seeds, everything))
            images_only.append(self.diff(range(n_seed), images))
        point = self.diff(range(n_seed), everything)
        return point, np.percentile(both, [2.5, 97.5]), seeds_only, images_only


def test_pairwise_ci_and_variance_split_equal_an_independent_bootstrap(tmp_path, params):
    params, gt, dets = _workspace(tmp_path, params)
    rows = compare_runs(params, base=tmp_path, resamples=RESAMPLES)
    assert [(c.a, c.b, c.named) for c in rows] == [
        ("dipkd", "student", False), ("inherit_only", "student", False),
        ("dipkd", "inherit_only", True)]
    for c in rows:
        a, b = (f"distilled/{n}" if n != "student" else n for n in (c.a, c.b))
        point, (lo, hi), seeds_only, images_only = Independent(
            gt, dets, a, b, SEEDS).run(RESAMPLES)
        assert c.delta.delta == pytest.approx(point, abs=1e-9), (c.a, c.b)
        assert (c.delta.ci_low, c.delta.ci_high) == (pytest.approx(lo, abs=1e-9),
                                                     pytest.approx(hi, abs=1e-9)), (c.a, c.b)
        assert c.half_width == pytest.approx((hi - lo) / 2, abs=1e-9)
        assert c.split.seeds == pytest.approx(np.var(seeds_only, ddof=1), rel=1e-9)
        assert c.split.images == pytest.approx(np.var(images_only, ddof=1), rel=1e-9)
        assert c.split.share("seeds") + c.split.share("images") == pytest.approx(1.0)
        assert (c.n_seeds, c.n_images) == (3, N_IMAGES)
    named = rows[-1]
    assert named.delta.delta > 0             # DIPKD's boxes are the more precise
    assert named.a_models == tuple(f"models/distilled/dipkd/{KEY}-seed{s}.pth" for s in SEEDS)


def test_one_seed_leaves_the_seeds_part_unmeasured(tmp_path, params):
    params, gt, dets = _workspace(tmp_path, params, seeds=(0,))
    c = compare_runs(params, base=tmp_path, resamples=RESAMPLES)[-1]
    point, (lo, hi), _, images_only = Independent(
        gt, dets, "distilled/dipkd", "distilled/inherit_only", (0,)).run(RESAMPLES)
    assert (c.delta.delta, c.delta.ci_low, c.delta.ci_high) == (
        pytest.approx(point, abs=1e-9), pytest.approx(lo, abs=1e-9), pytest.approx(hi, abs=1e-9))
    assert np.isnan(c.split.seeds) and np.isnan(c.split.share("images"))
    assert c.split.images == pytest.approx(np.var(images_only, ddof=1), rel=1e-9)
    compare_table.write_compare([c], "head", params, tmp_path / "out")
    line = next(x for x in (tmp_path / "out/compare.md").read_text().splitlines()
                if "Inherit-only" in x)
    cells = [x.strip() for x in line.strip("|").split("|")]
    assert cells[-3:-1] == ["-", "-"] and cells[-1] == f"1 x {N_IMAGES}"


def test_the_table_writes_each_comparison(tmp_path, params):
    params, _, _ = _workspace(tmp_path, params)
    rows = compare_runs(params, base=tmp_path, resamples=RESAMPLES)
    compare_table.write_compare(rows, "the header line", params, tmp_path / "out")
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "the header line" in md and "half-width" in md
    c = rows[-1]
    text = f"{c.delta.delta:+.1f} [{c.delta.ci_low:+.1f}, {c.delta.ci_high:+.1f}]"
    line = next(x for x in md.splitlines() if "| DIPKD " in x and "Inherit-only" in x)
    assert text in line and f"| ±{c.half_width:.1f} " in line
    assert f"{100 * c.split.share('seeds'):.0f}%" in line
    csv = pd.read_csv(tmp_path / "out" / "compare.csv")
    assert list(csv[["a", "b"]].itertuples(index=False, name=None)) == [
        ("dipkd", "student"), ("inherit_only", "student"), ("dipkd", "inherit_only")]
    last = csv.iloc[-1]
    assert last["mAP_delta"] == round(c.delta.delta, 2) and bool(last["named"])
    assert last["mAP_half_width"] == round(c.half_width, 2)
    assert last["seed_share"] + last["image_share"] == pytest.approx(1.0, abs=2e-3)
    assert "\\toprule" in (tmp_path / "out" / "compare.tex").read_text()
    # the registered table reads the same runs and writes the same rows
    assert [(r.a, r.b) for r in compare_table.collect(params, tmp_path / "metrics")] == \
        [(r.a, r.b) for r in rows]


def test_named_pairs_are_logged_on_the_runs_of_a(tmp_path, params, monkeypatch):
    import mlflow

    from dipkd.config.params import experiment_name
    from dipkd.tracking.mlflow_runs import ensure_experiment, local_store_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DIPKD_STORE_ROOT", str(tmp_path / "store"))
    params, _, _ = _workspace(tmp_path, params, seeds=(0, 1))
    rows = compare_runs(params, base=tmp_path, resamples=RESAMPLES)
    exp_id = ensure_experiment(experiment_name(params))
    client = mlflow.tracking.MlflowClient(tracking_uri=local_store_uri())
    ids = {}
    for group in ("distilled/dipkd", "distilled/inherit_only"):
        for s in (0, 1):
            ids[group, s] = client.create_run(exp_id).info.run_id
            model = tmp_path / "models" / group / f"{KEY}-seed{s}.pth"
            model.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"state_dict": {}, "meta": {"mlflow_run_id": ids[group, s]}}, model)
    try:
        assert log_comparisons(params, rows, base=tmp_path) == 2     # DIPKD's two seeds
        c = rows[-1]
        for s in (0, 1):
            got = client.get_run(ids["distilled/dipkd", s]).data.metrics
            assert got["compare/dipkd-vs-inherit_only/mAP"] == pytest.approx(c.delta.delta)
            assert got["compare/dipkd-vs-inherit_only/mAP_ci_low"] == pytest.approx(
                c.delta.ci_low)
            assert got["compare/dipkd-vs-inherit_only/mAP_ci_high"] == pytest.approx(
                c.delta.ci_high)
            assert not any(k.startswith("compare/") for k in
                           client.get_run(ids["distilled/inherit_only", s]).data.metrics)
    finally:
        mlflow.end_run()


def test_pairs_that_cannot_be_compared_are_one_line_errors(tmp_path, params):
    params, _, _ = _workspace(tmp_path, params)
    (tmp_path / "detections/distilled/inherit_only" / f"{KEY}-seed1.json").unlink()
    with pytest.raises(FileNotFoundError) as missing:
        compare_runs(params, base=tmp_path, resamples=5)
    message = str(missing.value)
    assert "\n" not in message and "inherit_only vs student" in message
    assert f"distilled/inherit_only/{KEY}-seed1" in message and "seed0" not in message
    params["compare"] = [["dipkd", "fgd"]]                  # fgd: not in baselines
    with pytest.raises(ValueError, match=r"^compare: pair \[dipkd, fgd\]: no runs named fgd "
                                         r"in this params \(run groups: .*inherit_only"):
        planned(params)
    params["compare"] = [["teacher", "dipkd"]]              # one run, not one per seed
    with pytest.raises(ValueError, match="no runs named teacher"):
        planned(params)
    # the ablation rows run on retinanet, inherit-only on faster_rcnn: never together
    params.update(detectors=["faster_rcnn", "retinanet"], compare=[["dipkd-rit",
                                                                     "inherit_only"]])
    params["ablation"].update(detector="retinanet", modules=["rit"])
    with pytest.raises(ValueError, match=r"never on the same dataset and detector "
                                         r"\(dipkd-rit: ssdd/retinanet; inherit_only: "
                                         r"ssdd/faster_rcnn\)"):
        planned(params)


@pytest.mark.parametrize("bad", [[["dipkd"]], [["dipkd", "dipkd"]], "dipkd",
                                 [["dipkd", "fgd"], ["dipkd", "fgd"]], [["dipkd", 3]]])
def test_compare_must_be_a_list_of_pairs(params, bad):
    from dipkd.config.params import ParamsError, validate
    params["compare"] = bad
    with pytest.raises(ParamsError, match="compare"):
        validate(params)


def test_the_default_pairs_are_the_issue_s(params):
    """DIPKD vs inherit-only, vs FGD, vs DIPKD without inheritance; FGD vs inherit-only; on
    Table 2's detector, each name also vs the student."""
    plan = [(a, b, named) for a, b, cell, named in planned(params)
            if cell == ("ssdd", params["baseline_detector"])]
    assert [(a, b) for a, b, named in plan if named] == [
        ("dipkd", "inherit_only"), ("dipkd", "fgd"), ("dipkd", "dipkd-inheritfalse"),
        ("fgd", "inherit_only")]
    assert [a for a, b, named in plan if not named] == [
        "dipkd", "inherit_only", "fgd", "dipkd-inheritfalse"]


def test_labels_name_module_rows_and_other_variants(params):
    """One naming for run groups in every report (the compare table, a study's resolution
    section): Table 3's module rows by their modules, other variants by their name."""
    label = compare_table.label
    assert label("student", params) == "Student" and label("dipkd", params) == "DIPKD"
    assert label("fgd", params) == "FGD" and label("inherit_only", params) == "Inherit-only"
    assert label("dipkd-kld_rit", params) == "DIPKD (KLD+RIT only)"
    assert label("dipkd-sns", params) == "DIPKD (SNS only)"
    assert label("dipkd-inheritfalse", params) == "DIPKD (inheritfalse)"
    assert label("dipkd-tau0.25", params) == "DIPKD (tau0.25)"
