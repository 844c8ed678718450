"""``dipkd repro --at-once N`` (dipkd/concurrent_repro.py): N stages at a time in one
workspace, on a real DVC project of shell stages."""
import io
import os
import subprocess
import textwrap

import pytest

from dipkd import concurrent_repro
from dipkd.concurrent_repro import Schedule, stage_environment
from dipkd.parallel_repro import stage_graph

GRAPH = {"a": set(), "b@1": {"a"}, "b@2": {"a"}, "c": {"b@1", "b@2"}, "lone": set()}


def test_a_stage_is_ready_when_everything_upstream_has_finished():
    schedule = Schedule(GRAPH)
    assert schedule.ready() == ["a", "lone"]        # most depended-on first (a: 3 below)
    schedule.start("a")
    assert schedule.ready() == ["lone"]
    schedule.done("a")
    assert schedule.ready() == ["b@1", "b@2", "lone"]
    for stage in ("b@1", "lone"):
        schedule.start(stage)
        schedule.done(stage)
    assert schedule.ready() == ["b@2"] and not schedule.complete
    schedule.start("b@2")
    schedule.done("b@2")
    assert schedule.ready() == ["c"]
    schedule.start("c")
    schedule.done("c")
    assert schedule.ready() == [] and schedule.complete


def test_each_stage_gets_its_share_of_the_cores(monkeypatch):
    monkeypatch.setattr(concurrent_repro.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(concurrent_repro, "_cuda", lambda: False)
    assert stage_environment({}, 2)["OMP_NUM_THREADS"] == "4"
    assert stage_environment({}, 16)["MKL_NUM_THREADS"] == "1"
    assert stage_environment({"OMP_NUM_THREADS": "3"}, 2)["OMP_NUM_THREADS"] == "3"


def _project(root, fail=""):
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    log = root / "times.log"
    # each b stage notes when it starts and ends; `fail` names a stage whose command fails
    (root / "dvc.yaml").write_text(textwrap.dedent(f"""\
        stages:
          a:
            cmd: echo a > a.txt
            outs: [a.txt]
          b:
            foreach: [1, 2]
            do:
              cmd: >-
                echo start ${{item}} >> {log} && sleep 3 && echo end ${{item}} >> {log} &&
                cat a.txt > "b${{item}}.txt" && test "b@${{item}}" != "{fail}"
              deps: [a.txt]
              outs: ["b${{item}}.txt"]
          c:
            cmd: cat b1.txt b2.txt > c.txt
            deps: [b1.txt, b2.txt]
            outs: [c.txt]
        """))
    return log


def _run(root, at_once=2):
    """From another directory than ``root``, as ``make study`` runs a worktree's stages."""
    out = io.StringIO()
    env = {k: v for k, v in os.environ.items() if k != "DIPKD_VERBOSE"}
    code = concurrent_repro.run(root, stage_graph(root), env, at_once, out)
    return code, out.getvalue().splitlines()


def test_two_stages_run_at_once_and_dvc_records_every_one(tmp_path):
    log = _project(tmp_path)
    code, lines = _run(tmp_path)
    assert code == 0
    assert lines == ["[1/4] a", "[2/4] b@1", "[3/4] b@2", "[4/4] c"] or \
        lines == ["[1/4] a", "[2/4] b@2", "[3/4] b@1", "[4/4] c"]
    events = log.read_text().split("\n")
    assert events[:2] == ["start 1", "start 2"] or events[:2] == ["start 2", "start 1"], events
    assert (tmp_path / "c.txt").read_text() == "a\na\n"
    status = subprocess.run(["dvc", "status"], cwd=tmp_path, capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout       # dvc.lock has all four
    code, lines = _run(tmp_path)
    assert code == 0 and lines == ["Data and pipelines are up to date."]


def test_a_failed_stage_stops_what_needs_it_and_the_running_one_finishes(tmp_path):
    log = _project(tmp_path, fail="b@2")
    code, lines = _run(tmp_path)
    assert code != 0
    assert (tmp_path / "b1.txt").is_file() and not (tmp_path / "c.txt").exists()
    assert "end 1" in log.read_text()                 # the other stage was not cut short
    assert not any(line.endswith("] c") for line in lines), lines
    status = subprocess.run(["dvc", "status", "b@1"], cwd=tmp_path, capture_output=True,
                            text=True)
    assert "up to date" in status.stdout, status.stdout       # its work is kept


def test_one_at_a_time_is_the_serial_order(tmp_path):
    log = _project(tmp_path)
    code, _ = _run(tmp_path, at_once=1)
    assert code == 0
    events = log.read_text().split("\n")
    assert events[1].startswith("end"), events


@pytest.mark.parametrize("argv", [["--at-once", "0"], ["--at-once", "2", "--jobs", "2"],
                                  ["--at-once", "2", "--executor", "slurm"]])
def test_bad_at_once_is_one_line(argv, capsys):
    from dipkd import cli
    assert cli.main(["repro", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--at-once" in err[0], err


def test_a_stage_that_times_itself_runs_alone():
    schedule = Schedule({"t1": set(), "t2": set(), "t3": set(), "efficiency": {"t1"}})
    batch = schedule.next_batch(2, 0)
    assert batch == ["t1", "t2"]
    for stage in batch:
        schedule.start(stage)
    schedule.done("t1")
    assert schedule.next_batch(1, 1) == ["t3"]       # efficiency is ready, t3 goes first
    schedule.start("t3")
    schedule.done("t3")
    assert schedule.next_batch(1, 1) == []           # t2 still runs: efficiency waits
    schedule.done("t2")
    assert schedule.next_batch(2, 0) == ["efficiency"]
