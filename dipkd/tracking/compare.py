"""A table straight from the MLflow store: the final test metrics of the runs that match a
filter, one row per configuration (runs that differ only by seed are one row, mean +- std).

For runs outside the DVC pipeline (``dvc exp run``, queued experiments, hand-started stages):
everything they logged is in the store, so no metrics file is needed.
"""
from __future__ import annotations

import pandas as pd

GROUP_TAGS = ("dataset", "detector", "role", "method", "variant", "profile")


def runs_frame(experiment: str, filter_string: str = "") -> pd.DataFrame:
    """The experiment's runs (``mlflow.search_runs``), finished or not, as a DataFrame."""
    import mlflow

    from .mlflow_runs import tracking_uri
    mlflow.set_tracking_uri(tracking_uri())
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"no MLflow experiment {experiment!r} in {tracking_uri()}")
    return mlflow.search_runs([exp.experiment_id], filter_string=filter_string)


def compare_table(runs: pd.DataFrame, metrics=("mAP", "AP50", "mAR"),
                  group_by=GROUP_TAGS) -> pd.DataFrame:
    """One row per distinct ``group_by`` tags: ``<metric>`` mean and ``<metric> std`` (in %)
    of ``test/<metric>`` over the runs (seeds) of the group, and ``runs``. Runs that were never
    evaluated (no ``test/mAP``) are left out."""
    if runs.empty or "metrics.test/mAP" not in runs:
        return pd.DataFrame(columns=[*group_by, "runs", *metrics])
    runs = runs[runs["metrics.test/mAP"].notna()].copy()
    keys = []
    for tag in group_by:
        col = f"tags.{tag}"
        runs[tag] = runs[col].fillna("") if col in runs else ""
        keys.append(tag)
    agg = {}
    for m in metrics:
        col = f"metrics.test/{m}"
        runs[m] = 100.0 * runs[col] if col in runs else float("nan")
        agg[m] = (m, "mean")
        agg[f"{m} std"] = (m, "std")
    agg["runs"] = ("run_id", "count")
    table = runs.groupby(keys, dropna=False).agg(**agg).reset_index()
    return table[[*keys, "runs", *[c for m in metrics for c in (m, f"{m} std")]]].round(1)
