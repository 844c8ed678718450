"""Shared pieces of the report tables: reading metrics files, the header line, writing."""
from __future__ import annotations

import json
import os
from pathlib import Path


def read_metrics(metrics_dir: Path, group: str, key: str) -> dict:
    """The metrics of ``metrics/<group>/<key>.json``; a missing run is an error, never a
    blank or a made-up number."""
    path = Path(metrics_dir) / group / f"{key}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics for {group} {key}; run its evaluate "
                                "stage first")
    return json.loads(path.read_text())["metrics"]


def header(params: dict, commit: str) -> str:
    prof = params["profile"]
    sources = sorted({f"{ds}: {params['data'][ds]['source']}"
                      + (f" ({params['data'][ds].get('preset')})"
                         if params['data'][ds]['source'] == 'synthetic' else "")
                      for ds in params["datasets"]})
    epochs = sorted({f"{det}/{ds} {params['profiles'][prof]['schedule'][det][ds]['epochs']} ep"
                     for det in params["detectors"] for ds in params["datasets"]})
    note = " Smoke profile: these numbers only prove the plumbing." if prof == "smoke" else ""
    return (f"Profile `{prof}`; data {'; '.join(sources)}; seed {params['seed']}; "
            f"schedule {', '.join(epochs)}; commit `{commit[:12]}`. COCO bbox metrics "
            f"(pycocotools, maxDets 100; at most 100 detections per image, so equal to mmdet's "
            f"maxDets 1000).{note}")


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
