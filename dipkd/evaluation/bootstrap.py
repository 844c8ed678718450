"""How sure a difference is: paired (hierarchical) bootstrap of COCO metrics over test images.

A distilled model and the student are evaluated on the same test images. For one resample
(images drawn with replacement, the same draw for both models) the metric of each model is
COCOeval's own ``accumulate`` over the resampled images, fed with the per-image results
(``evalImgs``: matches, scores, ignore flags) that ``COCOeval.evaluate`` computed once on
the full test set: boxes are never re-matched per resample. The 95% interval is the 2.5 and
97.5 percentiles of the resampled differences (percentile bootstrap, 1000 resamples, seeded,
so the interval is the same on every run).

With several seeds (several runs of each model) the resampling is hierarchical: each
resample first draws seeds with replacement (the same draw for both models, runs paired by
seed), then images; the metric of a model is the mean over the drawn seeds' runs.

:func:`variance_split` splits that uncertainty into a seeds' part and a test images' part
(one-factor bootstraps with the same RNG; see there).

Only the pieces of pycocotools' ``accumulate``/``summarize`` it defines are used: mAP is the
mean of ``eval['precision']`` over IoU thresholds, recall points and the (one) category at
area 'all' and maxDets 100 (entries > -1), AP50 the same at IoU 0.5 (``COCOeval.summarize``).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import math
from dataclasses import dataclass

import numpy as np
from pycocotools.cocoeval import COCOeval

from .coco_eval import _empty_results, _load_gt, _normalise

#: metric name -> (IoU threshold or None for the mean over 0.50:0.95, area range label)
BOOTSTRAP_METRICS = {"mAP": (None, "all"), "AP50": (0.5, "all"), "AP75": (0.75, "all"),
                     "APs": (None, "small"), "APm": (None, "medium"), "APl": (None, "large")}
RESAMPLES = 1000
SEED = 0
MAX_DETS = 100          # the detections per image every metric here counts (COCO's AP)


@dataclass(frozen=True)
class Delta:
    """Difference of a metric (model - reference, in the metric's own unit) with its CI."""

    delta: float
    ci_low: float
    ci_high: float

    @property
    def significant(self) -> bool:
        """The 95% interval excludes 0."""
        return self.ci_low > 0 or self.ci_high < 0


class PerImageEval:
    """``COCOeval.evaluate`` of one model's detections, kept for resampling."""

    def __init__(self, gt, detections: list[dict]):
        coco = _load_gt(gt)
        image_ids, cat_ids = set(coco.getImgIds()), set(coco.getCatIds())
        dets = [_normalise(i, d, image_ids, cat_ids) for i, d in enumerate(detections)]
        with contextlib.redirect_stdout(io.StringIO()):
            res = coco.loadRes(dets) if dets else _empty_results(coco)
            self.ev = COCOeval(coco, res, iouType="bbox")
            self.ev.evaluate()
        self.image_ids = list(self.ev.params.imgIds)
        self._memo: dict = {}   # resample -> metrics (the same draws recur across rows)

    def metrics(self, image_index: np.ndarray | None = None,
                names=tuple(BOOTSTRAP_METRICS)) -> dict:
        """COCO metrics (fractions; NaN where undefined) over the images at ``image_index``
        (positions into :attr:`image_ids`, repeats allowed; None = all, in order), with
        COCOeval's own ``accumulate``."""
        ev = self.ev
        n = len(self.image_ids)
        idx = np.arange(n) if image_index is None else np.asarray(image_index)
        key = hashlib.blake2b(idx.astype(np.int64).tobytes(), digest_size=16).digest()
        if key not in self._memo:
            self._memo[key] = self._metrics(idx)
        return {name: self._memo[key][name] for name in names}

    def _metrics(self, idx: np.ndarray, max_dets: tuple[int, ...] | None = (MAX_DETS,)) -> dict:
        """``accumulate`` over the images at ``idx``, for the ``max_dets`` limits only (None:
        all of COCOeval's, 1, 10 and 100). ``accumulate`` computes each (category, area,
        maxDets) cell from that cell's own slice of ``evalImgs``, so leaving out the limits
        no metric reads changes no number (tested) and saves two thirds of its time, which
        is most of a table stage's."""
        ev = self.ev
        n = len(self.image_ids)
        p = ev._paramsEval
        k_n, a_n = len(p.catIds), len(p.areaRng)
        picked = [ev.evalImgs[k * a_n * n + a * n + i]
                  for k in range(k_n) for a in range(a_n) for i in idx]
        view = copy.copy(ev)
        view.evalImgs = picked
        view._paramsEval = copy.copy(p)
        view._paramsEval.imgIds = list(range(len(idx)))   # unique ids: repeats count twice
        if max_dets is not None:
            view._paramsEval.maxDets = list(max_dets)
        view.params = view._paramsEval
        with contextlib.redirect_stdout(io.StringIO()):
            view.accumulate()
        return {name: _summary(view, *spec) for name, spec in BOOTSTRAP_METRICS.items()}


def _summary(ev: COCOeval, iou, area: str, max_dets: int = MAX_DETS) -> float:
    """One entry of ``COCOeval.summarize`` (AP), NaN where pycocotools gives -1."""
    p = ev.params
    a = p.areaRngLbl.index(area)
    m = p.maxDets.index(max_dets)
    prec = ev.eval["precision"]                  # T x R x K x A x M
    if iou is not None:
        prec = prec[np.where(np.isclose(p.iouThrs, iou))[0]]
    prec = prec[:, :, :, a, m]
    valid = prec[prec > -1]
    return float(valid.mean()) if valid.size else float("nan")


def _checked(model_runs: list[PerImageEval], reference_runs: list[PerImageEval]) -> int:
    """The number of test images after checking that the runs pair up."""
    if not model_runs or len(model_runs) != len(reference_runs):
        raise ValueError(f"paired bootstrap needs the same number of runs per model, got "
                         f"{len(model_runs)} and {len(reference_runs)}")
    ids = model_runs[0].image_ids
    for run in model_runs + reference_runs:
        if run.image_ids != ids:
            raise ValueError("paired bootstrap: the runs were evaluated on different images")
    return len(ids)


def _mean_over(runs, seeds, images, names) -> dict:
    vals = [runs[s].metrics(images, names) for s in seeds]
    return {k: float(np.mean([v[k] for v in vals])) for k in names}


def _replicates(model_runs, reference_runs, names, resamples: int, seed: int,
                draw_seeds: bool, draw_images: bool) -> dict:
    """``{metric: array}`` of mean(model) - mean(reference) (fractions) over ``resamples``
    draws from ``np.random.default_rng(seed)``, each drawing seeds with replacement (when
    there is more than one), then images with replacement: the hierarchical resample. Only
    the drawn factors are used: seeds when ``draw_seeds`` (else every seed), images when
    ``draw_images`` (else the full test set), so the one-factor bootstraps share the
    hierarchical one's draws (and its memoised per-run metrics)."""
    n_img = _checked(model_runs, reference_runs)
    n_seed = len(model_runs)
    rng = np.random.default_rng(seed)
    full = np.arange(n_seed)
    diffs = {k: [] for k in names}
    for _ in range(resamples):
        seeds = rng.integers(0, n_seed, n_seed) if n_seed > 1 else full
        images = rng.integers(0, n_img, n_img)
        seeds, images = (seeds if draw_seeds else full), (images if draw_images else None)
        m = _mean_over(model_runs, seeds, images, names)
        r = _mean_over(reference_runs, seeds, images, names)
        for k in names:
            diffs[k].append(m[k] - r[k])
    return {k: np.asarray(v, dtype=float) for k, v in diffs.items()}


def paired_bootstrap(model_runs: list[PerImageEval], reference_runs: list[PerImageEval],
                     names=("mAP",), resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """``{metric: Delta}`` of mean(model) - mean(reference), in percentage points.

    ``model_runs`` / ``reference_runs``: one :class:`PerImageEval` per seed, paired by
    position, all on the same test images. One seed: images resampled; several: seeds, then
    images (hierarchical). The point estimate is the difference on the full test set."""
    _checked(model_runs, reference_runs)
    full = np.arange(len(model_runs))
    point_m = _mean_over(model_runs, full, None, names)
    point_r = _mean_over(reference_runs, full, None, names)
    diffs = _replicates(model_runs, reference_runs, names, resamples, seed,
                        draw_seeds=True, draw_images=True)
    out = {}
    for k in names:
        d = diffs[k][np.isfinite(diffs[k])]
        point = 100.0 * (point_m[k] - point_r[k])
        if not d.size or not np.isfinite(point):
            out[k] = Delta(float("nan"), float("nan"), float("nan"))
            continue
        lo, hi = np.percentile(d, [2.5, 97.5])
        out[k] = Delta(point, 100.0 * float(lo), 100.0 * float(hi))
    return out


@dataclass(frozen=True)
class VarianceSplit:
    """Where the uncertainty of a paired difference comes from (percentage points squared):
    ``seeds`` is the bootstrap variance of the difference with the seeds resampled and the
    test images held at the full test set, ``images`` with the images resampled and every
    seed's run kept (NaN: not measurable, e.g. seeds with one seed)."""

    seeds: float
    images: float

    def share(self, part: str) -> float:
        """``part``'s (``seeds`` or ``images``) fraction of ``seeds + images``; NaN when
        either is not measurable or both are 0."""
        total = self.seeds + self.images
        return getattr(self, part) / total if math.isfinite(total) and total > 0 else math.nan


def variance_split(model_runs: list[PerImageEval], reference_runs: list[PerImageEval],
                   name: str = "mAP", resamples: int = RESAMPLES,
                   seed: int = SEED) -> VarianceSplit:
    """How much of the variance of ``paired_bootstrap``'s difference comes from seeds and
    how much from test images: two one-factor bootstraps of the same paired difference, on
    the draws of the hierarchical one (the same ``resamples`` draws of
    ``np.random.default_rng(seed)``, each seeds then images), one using only each draw's
    seeds (runs paired by seed, images fixed at the full test set), one only its images (the
    same images for every seed and both models, every seed kept); each part is the sample
    variance (``ddof=1``) of its differences, in percentage points squared. Each is the
    variance the hierarchical bootstrap would have if the other factor were held at what was
    observed; their sum approximates its variance (the two-way interaction left out), so
    ``share`` says which factor narrows the interval more when it grows: more seeds or more
    test images. With one seed the seeds' part is not measurable (NaN)."""
    parts = {}
    for part, draw_seeds in (("seeds", True), ("images", False)):
        if part == "seeds" and len(model_runs) < 2:
            _checked(model_runs, reference_runs)
            parts[part] = math.nan
            continue
        d = _replicates(model_runs, reference_runs, (name,), resamples, seed,
                        draw_seeds=draw_seeds, draw_images=not draw_seeds)[name]
        d = d[np.isfinite(d)]
        parts[part] = float(np.var(100.0 * d, ddof=1)) if d.size > 1 else math.nan
    return VarianceSplit(**parts)
