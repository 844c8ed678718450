"""Paired comparisons between any two run groups of the matrix: ``params.yaml``'s ``compare``.

A pair ``[a, b]`` names two run groups as ``models/`` names them (``student``, ``dipkd``, a
method of ``baselines`` such as ``fgd`` or ``inherit_only``, a DIPKD variant such as
``dipkd-inheritfalse``, ``dipkd-rit``, ``dipkd-tau0.75``). The groups and where they run are
read from the paper tables' own run lists (:data:`dipkd.reports.tables.TABLES`), so a name is
valid exactly when some table reads its runs; the teacher (one run, not one per seed) is not
a group. On every dataset and detector both groups run, the pair gets Δ = a minus b (mAP,
percentage points) with its 95% CI from the same paired bootstrap as the tables' "Δ vs
student" (:func:`dipkd.evaluation.bootstrap.paired_bootstrap`: runs paired by seed, seeds
then test images resampled), and the variance split of that interval between seeds and test
images (:func:`dipkd.evaluation.bootstrap.variance_split`). Every name of a pair also gets
its own comparison "vs student" there (not logged into MLflow: its runs carry ``delta/*``).

The named pairs are logged into MLflow as ``compare/<a>-vs-<b>/mAP``, ``..._ci_low`` and
``..._ci_high`` on each of a's runs of that dataset and detector (the pair's all-seed
numbers, as in the table), as :func:`dipkd.reports.deltas.log_run_deltas` logs ``delta/*``.

A name that is no run group, a pair that never shares a dataset and detector, and a pair
whose runs have no detections yet are one-line errors naming them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..config.params import DISTILLED
from ..evaluation.bootstrap import (RESAMPLES, Delta, VarianceSplit, paired_bootstrap,
                                    variance_split)
from .deltas import per_image_eval

TABLE_NAME = "compare"           # reports/tables/compare.{md,tex,csv}
STUDENT = "student"
METRIC = "mAP"
MLFLOW_PREFIX = "compare"        # compare/<a>-vs-<b>/mAP


@dataclass(frozen=True)
class Comparison:
    """One paired comparison on one dataset and detector."""

    a: str
    b: str
    dataset: str
    detector: str
    delta: Delta                 # a minus b, percentage points, with its 95% CI
    split: VarianceSplit         # the CI's variance from seeds and from test images (pp^2)
    n_seeds: int
    n_images: int
    named: bool                  # declared in ``compare`` (False: a name's row vs student)
    a_models: tuple = ()         # a's model paths (relative), one per seed: its MLflow runs

    @property
    def half_width(self) -> float:
        """Half the 95% CI's width: the smallest difference this comparison resolves."""
        return (self.delta.ci_high - self.delta.ci_low) / 2

    @property
    def metric_key(self) -> str:
        return f"{MLFLOW_PREFIX}/{self.a}-vs-{self.b}/{METRIC}"


def declared_pairs(params: dict) -> list[tuple[str, str]]:
    """``params['compare']`` as (a, b) tuples (none when absent)."""
    return [(str(a), str(b)) for a, b in params.get("compare") or []]


def group_name(spec) -> str:
    """``student``, or the run's group under ``distilled/`` (``dipkd``, ``fgd``,
    ``dipkd-inheritfalse``, ...)."""
    if spec.role == STUDENT:
        return STUDENT
    return PurePosixPath(spec.group.as_posix()).relative_to(DISTILLED).as_posix()


def run_groups(params: dict) -> dict[str, dict[tuple[str, str], list]]:
    """Group name -> {(dataset, detector): its runs, one per seed in ``seeds`` order}, for
    every run the paper tables read (their ``runs`` lists), the teacher excepted."""
    from .tables import TABLES
    found: dict[str, dict[tuple[str, str], dict[int, object]]] = {}
    for table in TABLES:
        if table.name == TABLE_NAME:
            continue
        for spec in table.runs(params):
            if spec.role in (STUDENT, DISTILLED):
                cell = (spec.dataset.name, spec.detector)
                found.setdefault(group_name(spec), {}).setdefault(cell, {})[spec.seed] = spec
    return {name: {cell: [by_seed[s] for s in params["seeds"] if s in by_seed]
                   for cell, by_seed in cells.items()} for name, cells in found.items()}


def _cells_in_order(params: dict, cells) -> list[tuple[str, str]]:
    order = {(ds, det): i for i, (ds, det) in enumerate(
        (ds, det) for ds in params["datasets"] for det in params["detectors"])}
    return sorted(cells, key=lambda c: order.get(c, len(order)))


def planned(params: dict, groups: dict | None = None) -> list[tuple[str, str, tuple, bool]]:
    """``(a, b, (dataset, detector), named)`` of every comparison, per dataset and detector:
    first each pair's names vs student (in order of first mention), then the declared pairs
    in their order. One line of ``ValueError`` for a name that is no run group or a pair
    that never runs on the same dataset and detector."""
    groups = run_groups(params) if groups is None else groups
    pairs = declared_pairs(params)
    for a, b in pairs:
        unknown = [n for n in (a, b) if n not in groups]
        if unknown:
            raise ValueError(f"compare: pair [{a}, {b}]: no runs named {', '.join(unknown)} "
                             f"in this params (run groups: {', '.join(sorted(groups))}); run it "
                             f"(a method in baselines, a variant in ablation) or drop the pair")
        if not set(groups[a]) & set(groups[b]):
            raise ValueError(f"compare: pair [{a}, {b}]: never on the same dataset and "
                             f"detector ({a}: {_cells_text(groups[a])}; {b}: "
                             f"{_cells_text(groups[b])})")
    out = []
    all_cells = {c for a, b in pairs for c in set(groups[a]) & set(groups[b])}
    for cell in _cells_in_order(params, all_cells):
        here = [(a, b) for a, b in pairs if cell in groups[a] and cell in groups[b]]
        names = list(dict.fromkeys(n for pair in here for n in pair if n != STUDENT))
        out += [(n, STUDENT, cell, False) for n in names if (n, STUDENT) not in here]
        out += [(a, b, cell, True) for a, b in here]
    return out


def _cells_text(cells) -> str:
    return ", ".join(f"{ds}/{det}" for ds, det in cells)


def check_pairs(params: dict) -> None:
    """Raise the one-line ``ValueError`` of :func:`planned` if a pair cannot be compared
    (before anything runs: ``make study`` calls it)."""
    planned(params)


def compare_runs(params: dict, base: Path = Path("."),
                 resamples: int = RESAMPLES) -> list[Comparison]:
    """Every comparison of :func:`planned`, from the runs' saved test detections under
    ``base`` (a run without them: one-line ``FileNotFoundError`` naming every missing run of
    the pair); ``resamples`` bootstrap draws (the tables' 1000 unless a test asks fewer)."""
    groups = run_groups(params)
    out = []
    for a, b, (ds, det), named in planned(params, groups):
        specs_a, specs_b = groups[a][(ds, det)], groups[b][(ds, det)]
        missing = [f"{s.group.as_posix()}/{s.run_key}" for s in (*specs_a, *specs_b)
                   if not (Path(base) / s.detections_path).is_file()]
        if missing:
            raise FileNotFoundError(f"compare {a} vs {b} on {ds}/{det}: no test detections "
                                    f"of {', '.join(missing)}; run their training stages "
                                    f"(dvc repro)")
        runs_a = [per_image_eval(s, base) for s in specs_a]
        runs_b = [per_image_eval(s, base) for s in specs_b]
        out.append(Comparison(
            a=a, b=b, dataset=ds, detector=det,
            delta=paired_bootstrap(runs_a, runs_b, (METRIC,), resamples)[METRIC],
            split=variance_split(runs_a, runs_b, METRIC, resamples),
            n_seeds=len(runs_a), n_images=len(runs_a[0].image_ids), named=named,
            a_models=tuple(s.model_path.as_posix() for s in specs_a)))
    return out


def log_comparisons(params: dict, comparisons: list[Comparison],
                    base: Path = Path(".")) -> int:
    """Log each declared pair's Δ and CI into the MLflow runs of its ``a`` (one per seed,
    found through their checkpoints' ``meta.mlflow_run_id``): ``compare/<a>-vs-<b>/mAP``,
    ``..._ci_low``, ``..._ci_high``. Returns how many runs were updated; a model missing here
    or a run missing from the store is skipped (with a note for the latter)."""
    import mlflow

    from ..config.params import experiment_name
    from ..tracking import ensure_experiment
    from .deltas import mlflow_run_of

    named = [c for c in comparisons if c.named]
    if not named:
        return 0
    ensure_experiment(experiment_name(params))
    client, updated = mlflow.tracking.MlflowClient(), set()
    for c in named:
        for model in c.a_models:
            path = Path(base) / model
            run_id = mlflow_run_of(path, client) if path.is_file() else None
            if run_id is None:
                continue
            for suffix, value in (("", c.delta.delta), ("_ci_low", c.delta.ci_low),
                                  ("_ci_high", c.delta.ci_high)):
                if math.isfinite(value):
                    client.log_metric(run_id, f"{c.metric_key}{suffix}", value)
            updated.add(run_id)
    return len(updated)
