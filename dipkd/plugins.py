"""Plugin folders: packages whose every module is imported by the package itself, so a new
method, table or data source is one new module there and nothing else to edit.

A plugin package's ``__init__.py`` calls :func:`import_submodules` with its own
``__name__``; each module registers what it defines (a KD loss by mmdet's registry
decorator, a table or a data source as a module-level object) and :func:`members` collects
those objects. The folders: ``dipkd/baselines/`` (KD methods), ``dipkd/reports/tables/``
(the paper's tables), ``dipkd/datasets/sources/`` (real data sources).

Stages' code dependencies (:mod:`dipkd.code_deps`) see these imports too: a package that
calls ``import_submodules(__name__)`` imports each of its modules (a static rule, tested).
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Iterable
from types import ModuleType
from typing import TypeVar

T = TypeVar("T")

DISCOVERY_CALL = "import_submodules"    # the name code_deps looks for in a package __init__


def submodule_names(package: str) -> list[str]:
    """The names of ``package``'s modules (sorted, not starting with ``_``), without
    importing them."""
    paths = sys.modules[package].__path__
    return sorted(f"{package}.{info.name}" for info in pkgutil.iter_modules(paths)
                  if not info.name.startswith("_"))


def import_submodules(package: str) -> list[ModuleType]:
    """Import every module of the (already imported) package ``package``, in name order."""
    return [importlib.import_module(name) for name in submodule_names(package)]


def members(modules: Iterable[ModuleType], kind: type[T], *,
            defined_here: bool = False) -> dict[str, T]:
    """Module-level attribute name -> value for every attribute of ``modules`` that is an
    instance of ``kind`` (or, with ``kind`` a class and ``defined_here``, a subclass of it
    defined in that module). Two modules offering one name is an error."""
    found: dict[str, T] = {}
    for module in modules:
        for name, value in vars(module).items():
            if name.startswith("_"):
                continue
            if defined_here:
                hit = (isinstance(value, type) and issubclass(value, kind)
                       and value.__module__ == module.__name__)
            else:
                hit = isinstance(value, kind)
            if hit:
                if name in found and found[name] is not value:
                    raise ValueError(f"{name} is defined in two plugin modules "
                                     f"({found[name]!r}, {module.__name__})")
                found[name] = value
    return found
