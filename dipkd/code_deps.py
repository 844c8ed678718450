"""The project code a stage runs, derived from its imports: the stages' code dependencies.

A hand-kept list of source files per stage in ``dvc.yaml`` drifts (training stages once
omitted ``dipkd/launch.py``, ``dipkd/tracking/`` and ``dipkd/evaluation/metric.py``, which
training imports, so editing them reran nothing). Instead, the stage ``code`` (deps: the
``dipkd`` and ``pipeline`` sources) writes, for each stage module ``pipeline.<name>``, the
file :func:`manifest_path` listing every project source file that module imports,
directly or through other project modules, at any depth and also inside functions (lazy
imports count: they run when the stage does), with each file's MD5. Every stage depends on
its module's manifest, so a stage reruns exactly when a source it can execute changes,
and editing code no stage imports (the README, a report module only the tables use) reruns
only the stages that import it. The ``code`` stage itself reruns on every source change; it
takes well under a second.

The import walk is static (``ast``): ``import a.b``, ``from a import b`` (``b`` a module or
a name), relative imports; every parent package's ``__init__.py`` is included, as Python
runs it. Data files beside an imported module (``dipkd/reports/paper_values.yaml``) count as
its sources. A plugin package (:mod:`dipkd.plugins`: its ``__init__.py`` calls
``import_submodules(__name__)``) imports every module in its folder. Other imports built at
run time (``importlib.import_module(name)``) are not seen: the project has none in stage
code. The end-to-end test checks the manifests against the
modules the stages really load (:func:`record_loaded_modules`).
"""
from __future__ import annotations

import ast
import atexit
import hashlib
import json
import os
import sys
from pathlib import Path

from .plugins import DISCOVERY_CALL, module_names

PACKAGES = ("dipkd", "pipeline")
# Files beside the sources that are not data the code reads (bytecode, numba's caches).
NOT_DATA = {".py", ".pyc", ".nbi", ".nbc", ".tmp"}
MANIFEST_DIR = Path("runs/code")


def manifest_path(module: str) -> Path:
    """Where the manifest of stage module ``module`` (``pipeline.<name>``) is written."""
    return MANIFEST_DIR / f"{module}.json"


def module_file(root: Path, name: str) -> Path | None:
    """The source file of project module ``name`` under ``root`` (a package's
    ``__init__.py``), or None if it is not one."""
    path = root.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def _imported_names(path: Path, module: str) -> set[str]:
    """Every module name an import statement in ``path`` may load (``from a import b``
    gives ``a`` and ``a.b``: ``b`` may be a submodule)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif (path.name == "__init__.py" and isinstance(node, ast.Call)
              and _called_name(node.func) == DISCOVERY_CALL):
            names.update(module_names([path.parent], module))   # a plugin folder
    return names


def _called_name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def project_imports(root: Path, module: str) -> dict[str, Path]:
    """Module name -> source file of ``module`` and every project module it imports,
    transitively (parent packages included)."""
    found: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in found or name.split(".")[0] not in PACKAGES:
            continue
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):       # a.b.c runs a/__init__, a/b/__init__
            prefix = ".".join(parts[:depth])
            path = module_file(root, prefix)
            if path is not None and prefix not in found:
                found[prefix] = path
                todo.extend(_imported_names(path, prefix))
    return found


def manifest(root: Path, module: str) -> dict[str, str]:
    """Relative path -> MD5 of every project source file stage module ``module`` runs, and
    of the data files in the same directories."""
    if module_file(root, module) is None:
        raise ValueError(f"no module {module} under {root}")
    sources = set(project_imports(root, module).values())
    data = {p for d in {s.parent for s in sources} for p in d.iterdir()
            if p.is_file() and p.suffix not in NOT_DATA}
    files = sorted(p.relative_to(root).as_posix() for p in sources | data)
    return {f: hashlib.md5((root / f).read_bytes()).hexdigest() for f in files}


GENERATOR = "pipeline.code_manifests"   # the ``code`` stage's own script (deps: the sources)


def stage_modules(root: Path) -> list[str]:
    """Every stage script: ``pipeline.<name>`` for ``pipeline/<name>.py`` (not ``_*``, not
    the generator itself)."""
    return sorted(m for m in (f"pipeline.{p.stem}" for p in (root / "pipeline").glob("*.py")
                              if not p.stem.startswith("_")) if m != GENERATOR)


def write_manifests(root: Path) -> list[Path]:
    """Write the manifest of every stage module (only files whose content changes are
    rewritten, each atomically); remove manifests of modules that no longer exist."""
    out_dir = root / MANIFEST_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    modules = stage_modules(root)
    for module in modules:
        path = root / manifest_path(module)
        text = json.dumps(manifest(root, module), indent=1, sort_keys=True) + "\n"
        if not path.is_file() or path.read_text() != text:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
        written.append(path)
    for stale in set(out_dir.glob("*.json")) - set(written):
        stale.unlink()
    return written


RECORD_VAR = "DIPKD_RECORD_IMPORTS"


def record_loaded_modules(root: Path) -> None:
    """With ``DIPKD_RECORD_IMPORTS=<dir>`` set: at exit, write the project source files this
    process loaded to ``<dir>/<module>.<pid>.json``, ``<module>`` being the one run as
    ``python -m`` (how the tests check that a stage's manifest covers what it really runs).
    Without it: nothing."""
    directory = os.environ.get(RECORD_VAR)
    if not directory:
        return
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    module = spec.name if spec is not None and spec.name else "__main__"

    def write() -> None:
        loaded = set()
        for mod in list(sys.modules.values()):
            path = getattr(mod, "__file__", None)
            if path and getattr(mod, "__name__", "").split(".")[0] in PACKAGES:
                try:
                    loaded.add(Path(path).resolve().relative_to(root.resolve()).as_posix())
                except ValueError:
                    pass
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / f"{module}.{os.getpid()}.json").write_text(
            json.dumps(sorted(loaded)))
    atexit.register(write)
