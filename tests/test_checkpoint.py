"""Checkpoints load with weights_only=True plus an allowlist; foreign pickles are refused."""
import os
from collections import OrderedDict

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

from dipkd.checkpoint import UnsafeCheckpointError, install, safe_load


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_mmengine_style_checkpoint_loads(tmp_path):
    buf = HistoryBuffer()
    buf.update(0.5)
    buf.update(0.25)
    ckpt = {"meta": {"epoch": 3, "seed": 0, "dataset_meta": {"classes": ("ship",)}},
            "state_dict": OrderedDict(w=torch.arange(4.0)),
            "message_hub": {"log_scalars": {"train/loss": buf},
                            "runtime_info": {"iter": 12, "arr": np.arange(3)}}}
    path = tmp_path / "epoch_3.pth"
    torch.save(ckpt, path)
    loaded = safe_load(path)
    assert torch.equal(loaded["state_dict"]["w"], torch.arange(4.0))
    assert loaded["message_hub"]["log_scalars"]["train/loss"].current() == 0.25
    np.testing.assert_array_equal(loaded["message_hub"]["runtime_info"]["arr"], np.arange(3))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "x": _Exploit(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="evil.pth: refused to load"):
        safe_load(path)
    assert not marker.exists()


def test_mmengine_loader_goes_through_the_allowlist(tmp_path):
    from mmengine.runner.checkpoint import _load_checkpoint
    install()
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"x": _Exploit(marker)}, path)
    with pytest.raises(UnsafeCheckpointError):
        _load_checkpoint(str(path), map_location="cpu")
    assert not marker.exists()


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        safe_load(tmp_path / "none.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises((RuntimeError, UnsafeCheckpointError), match="bad.pth"):
        safe_load(bad)


class _Walker:
    """Pickles as getattr(numpy.ndarray, 'tofile'): the getattr stand-in must refuse it."""

    def __reduce__(self):
        return (getattr, (np.ndarray, "tofile"))


def test_getattr_is_only_allowed_for_history_buffers(tmp_path):
    path = tmp_path / "walk.pth"
    torch.save({"x": _Walker()}, path)
    with pytest.raises(UnsafeCheckpointError, match="walk.pth"):
        safe_load(path)


def test_history_buffer_checkpoint_loads_in_a_fresh_process(tmp_path):
    """mmengine registers the statistics methods only when the first HistoryBuffer is made;
    a resuming process loads the checkpoint before that."""
    import subprocess
    import sys
    buf = HistoryBuffer()
    buf.update(1.0)
    path = tmp_path / "ckpt.pth"
    torch.save({"message_hub": {"log_scalars": {"loss": buf}}}, path)
    code = ("from dipkd.checkpoint import safe_load; import sys; "
            "print(safe_load(sys.argv[1])['message_hub']['log_scalars']['loss'].current())")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "1.0"


def test_truncated_model_given_to_evaluation_is_one_line_naming_it(tmp_path, params):
    """Testing a cut-off model file (pipeline.evaluate): exit 2, one line naming the file."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from _helpers import tiny_workspace
    from dipkd.checkpoint import CorruptCheckpointError
    ws = tiny_workspace(tmp_path, params)
    model = ws / "models/student/ssdd-retinanet-seed0.pth"
    model.parent.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "meta": {}}, model)
    model.write_bytes(model.read_bytes()[:300])          # a cut download / full disk
    with pytest.raises(CorruptCheckpointError, match="ssdd-retinanet-seed0.pth"):
        safe_load(model)
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "pipeline.evaluate", "--role", "student",
                           "--dataset", "ssdd", "--detector", "retinanet"], cwd=ws,
                          env=dict(os.environ, PYTHONPATH=str(repo), DVC_ROOT=str(ws)),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "ssdd-retinanet-seed0.pth" in lines[0] \
        and "not a readable torch checkpoint" in lines[0], proc.stderr


def test_checkpoint_meta_reads_the_meta_without_the_tensors(tmp_path):
    """checkpoint_meta gives the meta that a full load gives (the tensors stay mapped in the
    file), refuses a foreign pickle, and names a cut-off file in one line."""
    from dipkd.checkpoint import CorruptCheckpointError, checkpoint_meta
    path = tmp_path / "model.pth"
    meta = {"mlflow_run_id": "abc", "epoch": 2, "cfg": "model = dict(type='FasterRCNN')"}
    torch.save({"state_dict": OrderedDict(w=torch.arange(10_000.0)), "meta": meta}, path)
    assert checkpoint_meta(path) == meta == safe_load(path)["meta"]
    torch.save({"state_dict": {}}, path)
    assert checkpoint_meta(path) == {}
    torch.save({"meta": _Exploit(tmp_path / "pwned")}, path)
    with pytest.raises(UnsafeCheckpointError):
        checkpoint_meta(path)
    assert not (tmp_path / "pwned").exists()
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "meta": meta}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CorruptCheckpointError, match="model.pth"):
        checkpoint_meta(path)
