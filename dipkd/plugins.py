"""Plugin folders: packages whose every module is imported by the package itself, so a new
method, table or data source is one new module there and nothing else to edit.

A plugin package's ``__init__.py`` calls :func:`import_submodules` with its own
``__name__``; each module defines its objects (a KD loss class registered by mmdet's
decorator, a table or a data source as a module-level object) and the package collects
them (:func:`instances_in`, :func:`classes_defined_in` for classes). The folders: ``dipkd/baselines/`` (KD
methods), ``dipkd/reports/tables/`` (the paper's tables), ``dipkd/datasets/sources/`` (real
data sources).

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


def module_names(paths: Iterable, package: str) -> list[str]:
    """The names of the modules and subpackages of ``package`` found in its folder(s)
    ``paths`` (sorted, not starting with ``_``), without importing them: what
    :func:`import_submodules` imports, and what :mod:`dipkd.code_deps` counts."""
    return sorted(f"{package}.{info.name}"
                  for info in pkgutil.iter_modules([str(p) for p in paths])
                  if not info.name.startswith("_"))


def submodule_names(package: str) -> list[str]:
    """:func:`module_names` of the (already imported) package ``package``."""
    return module_names(sys.modules[package].__path__, package)


def import_submodules(package: str) -> list[ModuleType]:
    """Import every module of the (already imported) package ``package``, in name order."""
    return [importlib.import_module(name) for name in submodule_names(package)]


def instances_in(modules: Iterable[ModuleType], kind: type[T]) -> list[T]:
    """Every module-level instance of ``kind`` in ``modules``, each once (a module may
    import another's), in module order."""
    found: dict[int, T] = {}
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, kind):
                found.setdefault(id(value), value)
    return list(found.values())


def classes_defined_in(modules: Iterable[ModuleType], base: type[T]) -> dict[str, type[T]]:
    """Class name -> class, for every subclass of ``base`` that one of ``modules`` defines
    (not one it imports). Two modules defining one name is an error."""
    found: dict[str, type[T]] = {}
    for module in modules:
        for name, value in vars(module).items():
            if (isinstance(value, type) and issubclass(value, base)
                    and value.__module__ == module.__name__ and not name.startswith("_")):
                if name in found and found[name] is not value:
                    raise ValueError(f"{name} is defined in two plugin modules "
                                     f"({found[name].__module__}, {module.__name__})")
                found[name] = value
    return found
