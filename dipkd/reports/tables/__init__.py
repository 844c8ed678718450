"""The paper's tables: a plugin folder (:mod:`dipkd.plugins`). Each module here defines one
or more tables with the same small interface (:class:`dipkd.reports.common.PaperTable`:
its name, its runs, its rows, its writer) as module-level objects; :data:`TABLES` holds all
of them in the order of their names (table1, table2, ..., table10, then tables of ours such
as ``compare``, the paired comparisons), and the ``tables`` stage
(``pipeline/make_tables.py``) writes each into ``reports/tables/`` (the stage's one output
directory). A new table is one module here (and its published values in
``dipkd/reports/paper_values.yaml``). The MLflow ``tables`` tag of each run comes from the
same run lists (:func:`tag_runs`, called by the stage)."""
from __future__ import annotations

import re
from pathlib import Path

from ...plugins import import_submodules, instances_in
from ..common import PaperTable


def _in_order(found: list[PaperTable]) -> tuple[PaperTable, ...]:
    """The paper's tables (``table<N>``) in number order, then ours (``compare``) by name."""
    names = [t.name for t in found]
    if len(set(names)) != len(names):
        raise ValueError(f"two tables share a name: {sorted(names)}")
    return tuple(sorted(found, key=lambda t: (re.fullmatch(r"table\d+", t.name) is None,
                                              [int(p) if p.isdigit() else p
                                               for p in re.split(r"(\d+)", t.name)])))


TABLES = _in_order(instances_in(import_submodules(__name__), PaperTable))


def readers(params: dict) -> dict[str, list[str]]:
    """Model path (posix) -> the names of the tables that read that run, in table order."""
    out: dict[str, list[str]] = {}
    for table in TABLES:
        for spec in table.runs(params):
            names = out.setdefault(Path(spec.model_path).as_posix(), [])
            if table.name not in names:
                names.append(table.name)
    return out


def tables_reading(params: dict, spec) -> list[str]:
    """The names of the tables that read run ``spec`` (matched by its model path)."""
    return readers(params).get(Path(spec.model_path).as_posix(), [])


def tag_runs(params: dict) -> int:
    """Set the ``tables`` tag (``table1,table2,...``: the tables that read the run, from
    their own run lists) on every MLflow run of the profile's experiment whose
    ``model_path`` tag is one of the tables' models (its training run and, for a model from
    another store, its evaluation run). Returns how many runs were tagged."""
    import mlflow

    from ...config.params import experiment_name
    from ...tracking import ensure_experiment
    by_path = readers(params)
    client, tagged, token = mlflow.tracking.MlflowClient(), 0, None
    experiment = ensure_experiment(experiment_name(params))
    while True:
        page = client.search_runs([experiment], max_results=1000, page_token=token)
        for run in page:
            names = by_path.get(Path(run.data.tags.get("model_path", "")).as_posix())
            if names:
                client.set_tag(run.info.run_id, "tables", ",".join(names))
                tagged += 1
        token = page.token
        if not token:
            return tagged
