"""DVC stage ``code``: for every stage script ``pipeline/<name>.py``, the project sources it
imports and their MD5s (``runs/code/pipeline.<name>.json``, :mod:`dipkd.code_deps`). Each
stage depends on its script's manifest instead of a hand-kept list of sources."""
import sys
from pathlib import Path

from dipkd.code_deps import write_manifests

if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.exit(f"usage: python -m pipeline.code_manifests  ({__doc__.splitlines()[0]})")
    written = write_manifests(Path.cwd())
    print(f"[dipkd] {len(written)} code manifests in {written[0].parent if written else '-'}")
