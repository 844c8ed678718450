"""What each KD term did during a study's training: the MLflow metrics ``kd_grad_ratio/<term>``
(:class:`dipkd.kd_terms.KDTermGradHook`: the L2 norm of the term's gradient on the student's
distilled features over the summed detection losses', probed every ``kd_probe_interval``
iterations) of the study's distilled runs, as a table for the study report.

For each run group (method and variant) and KD term: the mean ratio over each run's probes,
then the mean, minimum and maximum over its seeds, and ``inert`` when the mean is below
:data:`dipkd.kd_terms.INERT_RATIO` (next to the detection gradient the term cannot move the
student). The student's own detection losses (:data:`DETECTION_TERMS`, those of the project's
detectors) are left out: they are the reference.
"""
from __future__ import annotations

import statistics

import pandas as pd

from ..kd_terms import INERT_RATIO, RATIO_PREFIX

# The detection losses of the project's detectors (Faster R-CNN: RPN + RoI head; RetinaNet)
DETECTION_TERMS = {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox"}
TITLE = "What each KD term did in training: its gradient over the detection losses'"


def ratios(client, experiment_ids: list[str], study: str) -> dict:
    """``{(method, variant): {term: [per-run mean ratio, one per run]}}`` of the runs tagged
    ``study=<study>``."""
    out: dict = {}
    runs = client.search_runs(experiment_ids, f"tags.study = '{study}'", max_results=5000)
    for run in runs:
        tags = run.data.tags
        if tags.get("role") != "distilled":
            continue
        key = (tags.get("method", "?"), tags.get("variant", ""))
        for metric in run.data.metrics:
            prefix, _, term = metric.partition("/")
            if prefix != RATIO_PREFIX or term in DETECTION_TERMS:
                continue
            history = [m.value for m in client.get_metric_history(run.info.run_id, metric)]
            if history:
                out.setdefault(key, {}).setdefault(term, []).append(statistics.fmean(history))
    return out


NO_PROBES = ("No distilled run of this study has KD-gradient probes in this clone's MLflow "
             "store: the probes are logged while a run trains (`train.kd_probe`), and a run "
             "that DVC restored from its cache brings its outputs, not its MLflow record. The "
             "section is written where the runs trained.")


def section(client, experiment_ids: list[str], study: str) -> str:
    """The report's section (saying so when no run of the study probed its KD terms in
    this store, instead of leaving the section out without a word)."""
    found = ratios(client, experiment_ids, study)
    rows = [{"method": method + (f" ({variant})" if variant else ""), "KD term": f"`{term}`",
             "runs": len(values), "ratio (mean)": f"{statistics.fmean(values):.3g}",
             "min - max over runs": f"{min(values):.3g} - {max(values):.3g}",
             "": "inert" if statistics.fmean(values) < INERT_RATIO else ""}
            for (method, variant), terms in sorted(found.items())
            for term, values in terms.items()]
    if not rows:
        return f"# {TITLE}\n\n{NO_PROBES}\n\n"
    table = pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)
    return (f"# {TITLE}\n\n{table}\n\nratio: MLflow `{RATIO_PREFIX}/<term>` of the study's "
            f"runs, the L2 norm of the term's gradient on the student's distilled FPN features "
            f"over the summed detection losses' (dipkd/kd_terms.py), averaged over each run's "
            f"probes (every `kd_probe_interval` iterations), then over the runs; inert: a mean "
            f"below {INERT_RATIO:g}, the term cannot move the student next to the detection "
            f"losses.\n\n")
