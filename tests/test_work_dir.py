"""A training stage's work dir: resumed only when it was left by the same config and data,
cleared otherwise, and a truncated last checkpoint neither resumed nor fatal
(:func:`dipkd.training.prepare_work_dir`). No training here except in the slow test at the end.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _helpers import tiny_workspace

REPO = Path(__file__).resolve().parents[1]


def _checkpoint(path: Path, epoch: int) -> Path:
    """An mmengine-style epoch checkpoint (meta, state_dict, optimizer)."""
    torch.save({"meta": {"epoch": epoch, "iter": 2 * epoch},
                "state_dict": {"w": torch.full((64, 64), float(epoch))},
                "optimizer": {"state": {}, "param_groups": []}}, path)
    return path


def _left_by_a_run(work_dir: Path, fingerprint: str, epochs=(1, 2)) -> dict:
    """What a killed training leaves: the stamp, epoch checkpoints, the resume pointer (the
    absolute path, as mmengine writes it), the MLflow run record and a log."""
    from dipkd.training import FINGERPRINT, RUN_FILE
    work_dir.mkdir(parents=True)
    (work_dir / FINGERPRINT).write_text(json.dumps({"fingerprint": fingerprint}))
    ckpts = {e: _checkpoint(work_dir / f"epoch_{e}.pth", e) for e in epochs}
    (work_dir / "last_checkpoint").write_text(str(ckpts[max(epochs)].resolve()))
    (work_dir / RUN_FILE).write_text(json.dumps({"run_id": "abc", "experiment_id": "1"}))
    (work_dir / "20250101_000000").mkdir()
    (work_dir / "20250101_000000" / "20250101_000000.log").write_text("epoch 1\n")
    return ckpts


def _stamp(work_dir: Path) -> str:
    from dipkd.training import FINGERPRINT
    return json.loads((work_dir / FINGERPRINT).read_text())["fingerprint"]


def test_same_config_and_data_resume(tmp_path, capsys):
    from dipkd.training import RUN_FILE, latest_checkpoint, prepare_work_dir
    work = tmp_path / "runs" / "student" / "ssdd-retinanet-seed0"
    ckpts = _left_by_a_run(work, "f1")
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    assert prepare_work_dir(work, "f1") is True
    assert sorted(p.relative_to(work) for p in work.rglob("*")) == before   # nothing removed
    assert latest_checkpoint(work) == ckpts[2].resolve()
    assert json.loads((work / RUN_FILE).read_text())["run_id"] == "abc"     # same MLflow run
    assert _stamp(work) == "f1"
    assert "starting from scratch" not in capsys.readouterr().out


@pytest.mark.parametrize("old_stamp", ["f0", None])
def test_other_config_or_data_clear_the_work_dir(tmp_path, capsys, old_stamp):
    """Other params (another fingerprint) or a work dir without a stamp: everything goes,
    checkpoints, resume pointer and the MLflow run record (a new run is opened)."""
    from dipkd.training import FINGERPRINT, prepare_work_dir
    work = tmp_path / "work"
    _left_by_a_run(work, "f0")
    if old_stamp is None:
        (work / FINGERPRINT).unlink()
    assert prepare_work_dir(work, "f1") is False
    assert sorted(p.name for p in work.iterdir()) == [FINGERPRINT]
    assert _stamp(work) == "f1"
    out = capsys.readouterr().out
    assert "config or data changed" in out and len(out.strip().splitlines()) == 1
    assert prepare_work_dir(work, "f1") is False          # nothing to resume, nothing cleared
    assert sorted(p.name for p in work.iterdir()) == [FINGERPRINT]


def test_fingerprint_follows_the_config_and_the_data(tmp_path):
    """The stamp changes with the config text and with either split's annotations (so a
    regenerated dataset clears the work dir) and with nothing else."""
    from mmengine.config import Config

    from dipkd.training import config_fingerprint, prepare_work_dir
    data = tmp_path / "data"
    (data / "annotations").mkdir(parents=True)
    for split in ("train", "test"):
        (data / "annotations" / f"{split}.json").write_text(json.dumps({"split": split}))
    cfg = Config(dict(model=dict(type="RetinaNet", depth=18), lr=0.01))
    first = config_fingerprint(cfg, data)
    assert config_fingerprint(Config(dict(model=dict(type="RetinaNet", depth=18), lr=0.01)),
                              data) == first
    (data / "images").mkdir()                               # not part of the stamp
    assert config_fingerprint(cfg, data) == first
    assert config_fingerprint(Config(dict(model=dict(type="RetinaNet", depth=18), lr=0.02)),
                              data) != first
    work = tmp_path / "work"
    _left_by_a_run(work, first)
    assert prepare_work_dir(work, config_fingerprint(cfg, data)) is True
    (data / "annotations" / "test.json").write_text(json.dumps({"split": "test", "v": 2}))
    changed = config_fingerprint(cfg, data)
    assert changed != first
    assert prepare_work_dir(work, changed) is False
    assert not list(work.glob("epoch_*.pth"))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("kept", [0.1, 0.5, 0.9, 0.999])
def test_a_checkpoint_cut_anywhere_is_a_one_line_error_naming_it(tmp_path, kept):
    """Cut after its zip header, torch's reader fails with a bare "OSError: [Errno 22]
    Invalid argument" (nothing about which file); safe_load names the file."""
    from dipkd.checkpoint import CorruptCheckpointError, safe_load
    path = _checkpoint(tmp_path / "epoch_1.pth", 1)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * kept)])
    with pytest.raises(CorruptCheckpointError) as err:
        safe_load(path)
    assert str(err.value).startswith(f"{path}: not a readable torch checkpoint")
    assert "\n" not in str(err.value)


def test_truncated_last_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    """A last checkpoint cut short (disk full, a crash while writing): the run resumes from the
    previous epoch's checkpoint, with a one-line warning, instead of dying in the loader."""
    from dipkd.checkpoint import safe_load
    from dipkd.training import RUN_FILE, latest_checkpoint, prepare_work_dir
    work = tmp_path / "work"
    ckpts = _left_by_a_run(work, "f1")
    _truncate(ckpts[2])
    assert prepare_work_dir(work, "f1") is True
    assert latest_checkpoint(work).resolve() == ckpts[1].resolve()
    assert safe_load(latest_checkpoint(work))["meta"]["epoch"] == 1       # loadable
    out = capsys.readouterr().out.strip().splitlines()
    warning = [line for line in out if "epoch_2.pth" in line]
    assert len(warning) == 1 and "epoch_1.pth" in warning[0], out
    assert (work / RUN_FILE).exists()                     # the same MLflow run continues


def test_pointer_to_a_missing_checkpoint_falls_back_too(tmp_path, capsys):
    from dipkd.training import latest_checkpoint, prepare_work_dir
    work = tmp_path / "work"
    ckpts = _left_by_a_run(work, "f1", epochs=(2, 3))
    ckpts[3].unlink()
    assert prepare_work_dir(work, "f1") is True
    assert latest_checkpoint(work).resolve() == ckpts[2].resolve()
    assert "epoch_3.pth" in capsys.readouterr().out


def test_no_readable_checkpoint_starts_afresh(tmp_path, capsys):
    """Every checkpoint unreadable: nothing to resume; the work dir is cleared as for other
    params (a new MLflow run, no half-trained state), with a one-line warning."""
    from dipkd.training import FINGERPRINT, prepare_work_dir
    work = tmp_path / "work"
    ckpts = _left_by_a_run(work, "f1", epochs=(1,))
    _truncate(ckpts[1])
    assert prepare_work_dir(work, "f1") is False
    assert sorted(p.name for p in work.iterdir()) == [FINGERPRINT] and _stamp(work) == "f1"
    out = capsys.readouterr().out.strip().splitlines()
    assert len([line for line in out if "epoch_1.pth" in line]) == 1, out


def _train_in_process(ws: Path) -> subprocess.CompletedProcess:
    """``dipkd.training.train`` of the tiny student in a subprocess: trains (or resumes) and
    exports, but keeps the work dir's checkpoints (only the stage script prunes them)."""
    code = ("from dipkd.config.params import load_params, run_spec\n"
            "from dipkd.training import train\n"
            "train(run_spec(load_params('params.yaml'), 'student', 'ssdd', 'retinanet'))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), DVC_ROOT=str(ws))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ws, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_training_resumes_past_a_truncated_last_checkpoint(tmp_path, params):
    """End to end: a 2-epoch training whose epoch-2 checkpoint is then cut short, run again:
    it resumes from epoch 1 (mmengine accepts the fallback pointer), trains epoch 2 again and
    exports a model of epoch 2."""
    from dipkd.checkpoint import safe_load
    ws = tiny_workspace(tmp_path, params, epochs=2)
    _train_in_process(ws)
    work = ws / "runs" / "student" / "ssdd-retinanet-seed0"
    model = ws / "models" / "student" / "ssdd-retinanet-seed0.pth"
    assert (work / "epoch_1.pth").is_file() and (work / "epoch_2.pth").is_file()
    model.unlink()
    _truncate(work / "epoch_2.pth")
    log = _train_in_process(ws)
    text = log.stdout + log.stderr
    assert "resuming" in text and "epoch_1.pth" in text, text[-3000:]
    assert "Epoch(train)   [2]" in text or "Epoch(train) [2]" in text, text[-3000:]
    assert safe_load(model)["meta"]["epoch"] == 2
    assert safe_load(work / "epoch_2.pth")["meta"]["epoch"] == 2   # written anew, complete
