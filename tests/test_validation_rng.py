"""``train.isolate_validation_rng`` (dipkd.rng_state.ValidationRngHook): with it, a run
validated every epoch trains to the same weights as the same run validated only at its end;
without it (the default) they differ, because a validation draws from torch's global
generator (the data loader's base seed) and Faster R-CNN's samplers draw from it too."""
import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from _helpers import tiny_workspace

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
MODEL = "models/student/ssdd-faster_rcnn-seed0.pth"


def _trained(tmp_path, params, name, val_interval, isolate):
    ws = tmp_path / name
    ws.mkdir()
    tiny_workspace(ws, copy.deepcopy(params), detector="faster_rcnn", epochs=2)
    written = yaml.safe_load((ws / "params.yaml").read_text())
    written["profiles"]["smoke"]["train"].update(val_interval=val_interval,
                                                 isolate_validation_rng=isolate)
    (ws / "params.yaml").write_text(yaml.safe_dump(written))
    env = dict(os.environ, PYTHONPATH=str(REPO), DVC_ROOT=str(ws), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "pipeline.train", "--role", "student",
                           "--dataset", "ssdd", "--detector", "faster_rcnn"], cwd=ws, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return torch.load(ws / MODEL, map_location="cpu", weights_only=False)


def _same(a, b) -> bool:
    sa, sb = a["state_dict"], b["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_validation_interval_changes_no_weight_when_isolated(tmp_path, params):
    once = _trained(tmp_path, params, "once", val_interval=2, isolate=True)
    every = _trained(tmp_path, params, "every", val_interval=1, isolate=True)
    assert _same(once, every)
    assert "DipkdValidationRngHook" in once["meta"]["cfg"]
    default = _trained(tmp_path, params, "default", val_interval=1, isolate=False)
    assert not _same(once, default)         # the default: the validation shifts training
    assert "DipkdValidationRngHook" not in default["meta"]["cfg"]
