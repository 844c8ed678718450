"""Quiet by default (issue 23): a training stage shows its start and result lines, the rest
goes to the run's log file (dipkd/console.py, pipeline/_cli.py); errors keep their one line
plus the log's path; DIPKD_VERBOSE=1 brings everything back; `dipkd repro` condenses DVC's
console to one prefixed line per stage (dipkd/local_repro.py)."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dipkd import console
from dipkd.local_repro import Condenser

REPO = Path(__file__).resolve().parents[1]

# A stage script using pipeline._cli.run as the training stages do: noisy main (Python
# prints, a warning, C-level writes to fd 1 and 2), a `then` returning the result.
STAGE = textwrap.dedent('''
    import os, sys, warnings
    from pipeline._cli import run

    def main(params, args):
        print("mmengine environment report " * 3)
        warnings.warn("a deprecation warning")
        os.write(1, b"C-level stdout\\n")
        os.write(2, b"C-level stderr\\n")
        if args.fail == "value":
            raise ValueError("bad input named here")
        if args.fail == "crash":
            raise RuntimeError("deep failure")

    def then(params, args):
        print("test loop chatter")
        return "mAP 0.123"

    def lines(params, args):
        return args.log, "Teacher  ssdd-faster_rcnn-seed0  2 epochs"

    run(main, "a stage", (("--log",), {}), (("--fail",), {"default": ""}), then=then,
        console_lines=lines)
''')


def _stage(tmp_path, *args, verbose=False):
    script = tmp_path / "stage.py"
    script.write_text(STAGE)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("DIPKD_VERBOSE", None)
    if verbose:
        env["DIPKD_VERBOSE"] = "1"
    log = tmp_path / "runs" / "run.log"
    proc = subprocess.run([sys.executable, str(script), "--log", str(log), *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    return proc, log


def test_a_stage_shows_two_lines_and_logs_the_rest(tmp_path):
    proc, log = _stage(tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == "Teacher  ssdd-faster_rcnn-seed0  2 epochs"
    assert out[1].startswith("Teacher  ssdd-faster_rcnn-seed0  2 epochs  ")
    assert out[1].endswith(" s  mAP 0.123") and len(out) == 2
    assert proc.stderr == ""
    text = log.read_text()
    for noise in ("environment report", "deprecation warning", "C-level stdout",
                  "C-level stderr", "test loop chatter"):
        assert noise in text, noise


def test_bad_input_is_one_line_and_the_log_path(tmp_path):
    proc, log = _stage(tmp_path, "--fail", "value")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["error: bad input named here", f"  full log: {log}"]
    assert proc.stdout.splitlines() == ["Teacher  ssdd-faster_rcnn-seed0  2 epochs"]
    assert "environment report" in log.read_text()


def test_a_crash_is_one_line_and_the_traceback_is_in_the_log(tmp_path):
    proc, log = _stage(tmp_path, "--fail", "crash")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["error: RuntimeError: deep failure",
                                        f"  full log: {log}"]
    assert "Traceback" in log.read_text() and "deep failure" in log.read_text()


def test_verbose_brings_everything_back(tmp_path):
    proc, log = _stage(tmp_path, verbose=True)
    assert proc.returncode == 0
    assert "environment report" in proc.stdout and "C-level stderr" in proc.stderr
    assert proc.stdout.splitlines()[-1].endswith("mAP 0.123")
    assert not log.exists()


# a `dvc repro` console as DVC 3 writes it (stdout)
DVC_LINES = """\
Running stage 'code':
> python -m pipeline.code_manifests
[dipkd] 9 code manifests in /w/runs/code

Stage 'prepare@ssdd' didn't change, skipping
Running stage 'train_teacher@ssdd-faster_rcnn':
> python -m pipeline.train --role teacher --dataset ssdd --detector faster_rcnn --seed 0
Teacher  ssdd-faster_rcnn-seed0  2 epochs
Teacher  ssdd-faster_rcnn-seed0  2 epochs  41 s  mAP 0.000
Updating lock file 'dvc.lock'

Stage 'train_student@ssdd-faster_rcnn-0' is cached - skipping run, checking out outputs
Running stage 'processes':
> python -m pipeline.processes
Updating lock file 'dvc.lock'

To track the changes with git, run:

	git add dvc.lock

To enable auto staging, run:

	dvc config core.autostage true
Use `dvc push` to send your updates to remote storage.
"""


def test_dvc_console_is_condensed_to_prefixed_stage_lines():
    condenser = Condenser(total=6)
    shown = [out for line in DVC_LINES.splitlines(keepends=True)
             for out in condenser.feed(line)] + condenser.close()
    assert shown == [
        "[1/6] code  [dipkd] 9 code manifests in /w/runs/code",
        "[3/6] train_teacher@ssdd-faster_rcnn  Teacher  ssdd-faster_rcnn-seed0  2 epochs",
        "[3/6] train_teacher@ssdd-faster_rcnn  Teacher  ssdd-faster_rcnn-seed0  2 epochs"
        "  41 s  mAP 0.000",
        "[4/6] train_student@ssdd-faster_rcnn-0  restored from the run-cache",
        "[5/6] processes",
    ]


@pytest.mark.parametrize("line", ["Data and pipelines are up to date.",
                                  "WARNING: something DVC wants said"])
def test_lines_outside_a_stage_pass_through(line):
    assert Condenser(total=1).feed(line + "\n") == [line]


def test_ctrl_c_is_not_turned_into_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("DIPKD_VERBOSE", raising=False)
    with pytest.raises(KeyboardInterrupt):
        with console.captured(tmp_path / "run.log"):
            raise KeyboardInterrupt
    assert console.terminal() is sys.stdout          # the capture ended
