"""The ``prepare`` stage's work: produce ``data/<name>`` in the common layout from the
dataset's source in params.yaml (synthetic generator, or a real release given as an
unpacked folder ``path``, a local ``archive``, or a ``url`` to download)."""
from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse

from .archive import unpack
from .download import download, verify_sha256
from .sources import REAL_SOURCES

DOWNLOADS = Path("downloads")


def _source_root(name: str, options: dict, scratch: Path):
    """(folder holding the unpacked release, temporary folder to delete or None)."""
    if options.get("path"):
        root = Path(options["path"])
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: dataset folder not found")
        return root, None
    if options.get("url"):
        archive = DOWNLOADS / name / (Path(urlparse(options["url"]).path).name or "archive")
        download(options["url"], archive, options.get("sha256"))
    else:
        archive = Path(options["archive"])
        if not archive.is_file():
            raise FileNotFoundError(f"{archive}: archive not found")
        verify_sha256(archive, options.get("sha256"))
    tmp = unpack(archive, scratch)
    return tmp, tmp


def prepare_real(name: str, source: str, options: dict, out_dir) -> dict:
    """Convert a real release (``source``: one of :data:`REAL_SOURCES`) into ``out_dir``."""
    out_dir = Path(out_dir)
    root, tmp = _source_root(name, options, out_dir.parent)
    try:
        return REAL_SOURCES[source].convert(root, out_dir, options)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
