"""Warm stages (dipkd/stage_server.py, dipkd/stage_client.py, issue 23): a stage run through
the server writes what it writes when run plainly (bit-identical weights), shows the same
console and exit code, is refused (and runs plainly) from another directory, and Ctrl-C
reaches it."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from dipkd import stage_server
from dipkd.stage_client import SOCKET_ENV, module_command
from tests._helpers import tiny_workspace

REPO = Path(__file__).resolve().parents[1]


def test_only_plain_module_command_lines_are_delegated():
    assert module_command(["python", "-m", "pipeline.train", "--role", "teacher"]) == \
        ("pipeline.train", ["--role", "teacher"])
    assert module_command(["python", "-X", "importtime", "-m", "pipeline.train"]) is None
    assert module_command(["python", "pipeline/train.py"]) is None
    assert module_command(["python"]) is None


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A project copy (sources, params.yaml with a one-epoch tiny run) and a stage server
    started in it as ``dipkd repro`` starts one."""
    ws = tmp_path_factory.mktemp("warm")
    for name in ("dipkd", "pipeline"):
        shutil.copytree(REPO / name, ws / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    tiny_workspace(ws, params, detector="faster_rcnn")
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["profiles"]["smoke"]["schedule"]["faster_rcnn"]["ssdd"]["teacher"] = {"epochs": 40}
    (ws / "params.yaml").write_text(yaml.safe_dump(params))     # a teacher to interrupt
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               OMP_NUM_THREADS="1")
    for var in ("PYTHONPATH", "DIPKD_VERBOSE", "DVC_ROOT", "DIPKD_RECORD_IMPORTS"):
        env.pop(var, None)
    log = ws / "runs" / "logs" / "stage_server.log"
    with stage_server.running(ws, env, log) as served_env:
        assert SOCKET_ENV in served_env, log.read_text()
        yield ws, env, served_env, log


def _stage(ws, env, *args, **kw):
    return subprocess.run([sys.executable, "-m", *args], cwd=ws, env=env, capture_output=True,
                          text=True, timeout=600, **kw)


def _served(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.endswith(" exit 0")]


def test_a_served_training_stage_writes_the_same_model(workspace):
    ws, env, served_env, log = workspace
    train = ("pipeline.train", "--role", "student", "--dataset", "ssdd", "--detector",
             "faster_rcnn", "--seed", "0")
    model = ws / "models" / "student" / "ssdd-faster_rcnn-seed0.pth"
    plain = _stage(ws, env, *train)
    assert plain.returncode == 0, plain.stderr
    plain_state = torch.load(model, map_location="cpu", weights_only=False)["state_dict"]
    plain_curve = (ws / "plots" / "student" / "ssdd-faster_rcnn-seed0.json").read_text()
    shutil.rmtree(ws / "runs" / "student")
    model.unlink()
    served = _stage(ws, served_env, *train)
    assert served.returncode == 0, served.stderr
    assert any("pipeline.train --role student" in line for line in _served(log))
    state = torch.load(model, map_location="cpu", weights_only=False)["state_dict"]
    assert state.keys() == plain_state.keys()
    assert all(torch.equal(state[k], plain_state[k]) for k in state)
    assert (ws / "plots" / "student" / "ssdd-faster_rcnn-seed0.json").read_text() == plain_curve
    title = "Student  ssdd-faster_rcnn-seed0  1 epochs"
    for proc in (plain, served):
        lines = proc.stdout.splitlines()
        assert lines[0] == title and lines[-1].startswith(title + "  "), proc.stdout
    assert served.stderr == plain.stderr == ""


def test_bad_input_gives_the_same_line_and_code(workspace):
    ws, env, served_env, log = workspace
    bad = ("pipeline.train", "--role", "student", "--dataset", "nowhere", "--detector",
           "faster_rcnn", "--seed", "0")
    plain, served = _stage(ws, env, *bad), _stage(ws, served_env, *bad)
    assert plain.returncode == served.returncode == 2
    assert served.stderr == plain.stderr and "nowhere" in served.stderr
    assert any("--dataset nowhere " in line and line.endswith("exit 2")
               for line in log.read_text().splitlines())


def test_another_directory_is_refused_and_runs_plainly(workspace, tmp_path):
    ws, env, served_env, log = workspace
    other = tmp_path / "other"
    shutil.copytree(ws, other, ignore=shutil.ignore_patterns("runs", "models", "__pycache__"))
    proc = _stage(other, served_env, "pipeline.processes")
    assert proc.returncode == 0, proc.stderr
    assert (other / "runs" / "processes.json").is_file()
    assert f"refused pipeline.processes in {other}" in log.read_text()


def test_ctrl_c_reaches_the_served_stage(workspace):
    ws, env, served_env, log = workspace
    shutil.rmtree(ws / "runs" / "teacher", ignore_errors=True)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.train", "--role", "teacher",
                             "--dataset", "ssdd", "--detector", "faster_rcnn", "--seed", "0"],
                            cwd=ws, env=served_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("Teacher  ")      # started (in the server's child)
    run_log = ws / "runs" / "teacher" / "ssdd-faster_rcnn-seed0.log"
    deadline = time.monotonic() + 120
    second_epoch = re.compile(r"Epoch\(train\)\s+\[\s*2\]")
    while not second_epoch.search(run_log.read_text() if run_log.exists() else ""):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)                              # training: epoch 2 or later
    code, err = proc.wait(timeout=120), proc.stderr.read()
    # as a plain python would: an uncaught KeyboardInterrupt kills it with SIGINT; one that
    # lands inside a library that turns it into another error (SQLAlchemy, during an MLflow
    # write) ends the stage with its error line and exit code 1
    assert code in (-signal.SIGINT, 1), err[-3000:]
    assert "KeyboardInterrupt" in err or "error:" in err, err[-3000:]
    ended = [line for line in log.read_text().splitlines() if "--role teacher" in line]
    assert ended[-1].endswith("exit -2" if code < 0 else "exit 1"), ended   # the child ended
