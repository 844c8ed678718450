"""Real SAR data sources by name: a plugin folder (:mod:`dipkd.plugins`).

``params.yaml``'s ``data.<name>.source`` is ``synthetic`` (the offline generator,
:mod:`dipkd.datasets.synthetic`) or one of :data:`REAL_SOURCES`. Each module here is one
release: its converter into the common layout and a module-level
:class:`~dipkd.datasets.real.DataSource` (name, converter, published counts, synthetic
stand-in). A new real dataset is one module here (plus its ``data`` entry in params.yaml).
"""
from __future__ import annotations

from ...plugins import import_submodules, instances_in
from ..real import DataSource

SYNTHETIC = "synthetic"

REAL_SOURCES: dict[str, DataSource] = {
    source.name: source for source in instances_in(import_submodules(__name__), DataSource)}
SOURCES = (SYNTHETIC, *REAL_SOURCES)

__all__ = ["DataSource", "REAL_SOURCES", "SOURCES", "SYNTHETIC"]
