"""Parallel repro (dipkd/parallel_repro.py, dipkd/device_slots.py): the job plan, the worker
slots and their GPUs, the queue's status, and (slow) the smoke pipeline with 2 CPU workers
against a sequential `dvc repro`."""
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _polling import file_contains, wait_for
from dipkd import device_slots
from dipkd.parallel_repro import (ParallelReproError, plan_waves, queue_states,
                                  restrict_to, worker_environment)

# A two-dataset, one-detector slice of dvc.yaml's graph (stage -> the stages it depends on);
# teacher a serves two distillations, teacher b one.
GRAPH = {
    "prepare@a": set(), "prepare@b": set(), "processes": set(),
    "train_teacher@a": {"prepare@a", "processes"},
    "train_teacher@b": {"prepare@b", "processes"},
    "train_student@a-0": {"prepare@a", "processes"},
    "distill@a-0": {"prepare@a", "processes", "train_teacher@a"},
    "distill@a-1": {"prepare@a", "processes", "train_teacher@a"},
    "distill@b-0": {"prepare@b", "processes", "train_teacher@b"},
    "tables": {"train_teacher@a", "train_teacher@b", "train_student@a-0", "distill@a-0",
               "distill@a-1", "distill@b-0"},
    "figures": {"train_student@a-0", "distill@a-0", "prepare@a"},
}


def test_waves_run_shared_stages_first_and_each_training_once():
    waves = plan_waves(GRAPH)
    targets = [[job.target for job in wave] for wave in waves]
    assert targets == [
        ["prepare@a", "processes"],
        # students need no teacher; a teacher only one job needs is that job's own stage
        ["distill@b-0", "train_student@a-0", "train_teacher@a"],
        ["distill@a-0", "distill@a-1"],
    ]
    jobs = {job.target: job for wave in waves for job in wave}
    assert jobs["train_student@a-0"].own == {"train_student@a-0"}
    assert jobs["distill@b-0"].own == {"distill@b-0", "train_teacher@b", "prepare@b"}
    assert jobs["distill@a-0"].own == {"distill@a-0"}
    assert jobs["distill@a-0"].needs == {"prepare@a", "processes", "train_teacher@a"}
    # every stage but the sinks is run by exactly one job
    owned = [s for job in jobs.values() for s in job.own]
    assert sorted(owned) == sorted(set(GRAPH) - {"tables", "figures"})


def test_a_graph_of_independent_stages_is_one_wave():
    waves = plan_waves({"a": set(), "b": set(), "report": {"a", "b"}})
    assert [[j.target for j in w] for w in waves] == [["a", "b"]]


def test_targets_keep_what_they_need():
    """`dipkd repro --jobs N TARGET...` plans what `dvc repro TARGET...` runs: the targets
    (a foreach group by its name) and their upstream stages, nothing else."""
    sub = restrict_to(GRAPH, ["train_teacher"])
    assert sub == {"train_teacher@a": {"prepare@a", "processes"},
                   "train_teacher@b": {"prepare@b", "processes"},
                   "prepare@a": set(), "prepare@b": set(), "processes": set()}
    assert "figures" not in restrict_to(GRAPH, ["tables"])
    assert set(restrict_to(GRAPH, ["figures"])) == {
        "figures", "train_student@a-0", "distill@a-0", "train_teacher@a", "prepare@a",
        "processes"}
    with pytest.raises(ParallelReproError, match="no stage named 'tabels'"):
        restrict_to(GRAPH, ["tabels"])


def test_repository_graph_queues_every_training_stage_once():
    """On this repository's dvc.yaml: each training stage belongs to one job, the teachers
    run in a wave before every stage that reads a teacher's model."""
    from dipkd.parallel_repro import stage_graph
    graph = stage_graph(Path(__file__).resolve().parents[1])
    waves = plan_waves(graph)
    wave_of = {s: i for i, wave in enumerate(waves) for job in wave for s in job.own}
    trainings = [s for s in graph if s.split("@")[0] in
                 ("train_teacher", "train_student", "distill", "distill_noinherit", "baseline",
                  "ablation", "tau", "mask_rate")]
    assert trainings and all(s in wave_of for s in trainings)
    for stage in trainings:
        for dep in graph[stage]:
            if dep.startswith("train_teacher@"):
                assert wave_of[dep] < wave_of[stage], (dep, stage)


def test_queue_status_is_parsed():
    text = ("Task     Name                   Created    Status\n"
            "c4f39d9  dipkd-1-000            10:18 AM   Success\n"
            "1bbbad1  dipkd-1-001            10:18 AM   Running\n"
            "5aa5aa5  dipkd-1-002            10:19 AM   Failed\n"
            "\nWorker status: 2 active, 0 idle\n")
    states, active = queue_states(text)
    assert states == {"dipkd-1-000": "Success", "dipkd-1-001": "Running",
                      "dipkd-1-002": "Failed"}
    assert active == 2
    assert queue_states("No experiment tasks in the queue.\n\n"
                        "Worker status: 0 active, 0 idle") == ({}, 0)


def _status(**states) -> str:
    """A `dvc queue status` listing of the given experiments (name=state)."""
    rows = "".join(f"abc{i:04d}  {name}  10:18 AM   {state}\n"
                   for i, (name, state) in enumerate(states.items()))
    return "Task     Name                   Created    Status\n" + rows + \
        "\nWorker status: 1 active, 0 idle\n"


def _fake_queue(monkeypatch, listings):
    """`dvc queue status` answers the given listings in turn, then the last one again (up to
    50 calls: a wait that never ends fails the test instead of hanging it)."""
    from dipkd import parallel_repro
    listings = list(listings)
    calls = []

    def dvc(root, *args, env=None, check=True):
        assert args == ("queue", "status")
        calls.append(args)
        assert len(calls) <= 50, "still waiting after 50 listings"
        return listings[min(len(calls), len(listings)) - 1]
    monkeypatch.setattr(parallel_repro, "_dvc", dvc)
    return calls


def test_a_task_gone_from_the_queue_fails_the_wave(monkeypatch, capsys):
    """A task DVC lost (no longer in `dvc queue status`) is not waited for forever: after
    VANISHED_AFTER listings without it, it fails the wave with the one-line message."""
    from dipkd.parallel_repro import VANISHED, VANISHED_AFTER, _wait, failure
    names = {"dipkd-1-000": "train_student@a-0", "dipkd-1-001": "distill@a-0"}
    calls = _fake_queue(monkeypatch, [
        _status(**{"dipkd-1-000": "Running", "dipkd-1-001": "Queued"}),
        _status(**{"dipkd-1-000": "Success"}),           # 001 gone for good
    ])
    final = _wait(Path("."), names, poll=0)
    assert final == {"dipkd-1-000": "Success", "dipkd-1-001": VANISHED}
    assert len(calls) == 1 + VANISHED_AFTER
    assert "1 success, 1 vanished" in capsys.readouterr().out
    error = failure(names, final)
    assert isinstance(error, ParallelReproError) and "\n" not in str(error)
    assert str(error) == "failed: distill@a-0 (dipkd-1-001: gone from dvc queue status)"


def test_a_task_missing_from_one_listing_is_still_waited_for(monkeypatch):
    """`dvc queue status` lists running, then queued tasks: one that starts in between is
    in neither list once; it is not taken as lost."""
    from dipkd.parallel_repro import _wait, failure
    names = {"dipkd-1-000": "distill@a-0"}
    _fake_queue(monkeypatch, [_status(**{"dipkd-1-000": "Queued"}), _status(),
                              _status(**{"dipkd-1-000": "Running"}), _status(),
                              _status(**{"dipkd-1-000": "Success"})])
    final = _wait(Path("."), names, poll=0)
    assert final == {"dipkd-1-000": "Success"} and failure(names, final) is None
    assert str(failure(names, {"dipkd-1-000": "Failed"})) == (
        "failed: distill@a-0 (dipkd-1-000: dvc queue logs dipkd-1-000)")


def test_worker_environment_shares_out_gpus_and_cpu_threads(tmp_path):
    env = worker_environment(tmp_path, 4, 2, [str(i) for i in range(8)], "t", base={})
    assert env[device_slots.SLOTS_VAR] == "4" and env[device_slots.GPUS_PER_SLOT_VAR] == "2"
    assert env[device_slots.SLOT_GPUS_VAR] == "0,1,2,3,4,5,6,7"
    assert "OMP_NUM_THREADS" not in env
    cpu = worker_environment(tmp_path, 2, 1, [], "t", cores=8, base={})
    assert cpu["OMP_NUM_THREADS"] == "4" and cpu[device_slots.GPUS_PER_SLOT_VAR] == "0"
    with pytest.raises(ParallelReproError, match="needs 6 GPUs but 4 are visible"):
        worker_environment(tmp_path, 3, 2, ["0", "1", "2", "3"], "t", base={})


def test_slot_gpus():
    gpus = ["0", "1", "2", "3"]
    assert device_slots.slot_gpus(1, gpus, 1) == ("1",)
    assert device_slots.slot_gpus(1, gpus, 2) == ("2", "3")
    assert device_slots.slot_gpus(0, [], 0) == ()
    with pytest.raises(ValueError, match="only 4 are listed"):
        device_slots.slot_gpus(2, gpus, 2)


def _take_slot(env, queue, hold, log=None):
    os.environ.clear()
    os.environ.update(env)
    if log is not None:   # what acquire() says, e.g. that it waits for a slot
        sys.stdout = open(log, "w", buffering=1)
    slot = device_slots.acquire(poll=0.05)
    queue.put((slot.index, os.environ.get("CUDA_VISIBLE_DEVICES"), device_slots.tags()))
    hold.wait(300)        # the test sets it (also when it fails)


def test_concurrent_stages_take_distinct_slots_and_their_gpus(tmp_path):
    """Three processes at once in three slots: slots 0, 1, 2 with GPUs (0,1), (2,3), (4,5);
    a fourth waits until they exit and then takes a freed slot, with that slot's GPUs."""
    env = {device_slots.SLOTS_VAR: "3", device_slots.SLOT_DIR_VAR: str(tmp_path / "slots"),
           device_slots.SLOT_GPUS_VAR: "0,1,2,3,4,5", device_slots.GPUS_PER_SLOT_VAR: "2",
           "PATH": os.environ["PATH"]}
    ctx = multiprocessing.get_context("spawn")
    queue, hold = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_take_slot, args=(env, queue, hold)) for _ in range(3)]
    for p in procs:
        p.start()
    got = sorted(queue.get(timeout=60) for _ in procs)
    assert [(i, gpus) for i, gpus, _ in got] == [(0, "0,1"), (1, "2,3"), (2, "4,5")]
    assert got[1][2] == {"gpu": "2,3", "worker_slot": "1/3"}
    late_hold, late_log = ctx.Event(), tmp_path / "late.log"
    late = ctx.Process(target=_take_slot, args=(env, queue, late_hold, str(late_log)))
    late.start()
    try:
        # all three slots taken: it has tried them all and waits (however long it took to
        # start), holding none
        wait_for(lambda: file_contains(late_log, "all 3 worker slots taken; waiting"),
                 "the fourth process to find every slot taken", timeout=120)
        assert late.is_alive() and queue.empty()
        hold.set()
        for p in procs:
            p.join(120)
        index, gpus, _ = queue.get(timeout=120)
    finally:
        hold.set()
        late_hold.set()
    late.join(120)
    assert gpus == ",".join(device_slots.slot_gpus(index, ["0", "1", "2", "3", "4", "5"], 2))


def test_no_slot_outside_a_parallel_repro():
    assert device_slots.acquire(env={}) is None


def _commit(ws: Path, sh) -> None:
    sh(ws, "git", "init", "-q")
    sh(ws, "git", "add", "-A")
    sh(ws, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy")


def _runs(ws: Path) -> list:
    import mlflow
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dipkd-repro/smoke")
    return client.search_runs([exp.experiment_id])


def _results(ws: Path) -> dict[str, str]:
    """The tables' CSVs and every run's metrics file."""
    files = [*(ws / "reports" / "tables").glob("*.csv"), *(ws / "metrics").rglob("*.json")]
    return {str(f.relative_to(ws)): f.read_text() for f in files}


@pytest.mark.slow
def test_two_cpu_workers_train_each_run_once_and_give_the_sequential_tables(tmp_path):
    """Issue 15's check, on the e2e test's smoke matrix cut to one detector, one baseline,
    no extra ablation rows, and built up to the tables (the e2e test covers the figures and
    reports; CI time): `dipkd repro --jobs 2 tables` from a clean copy puts every run in
    MLflow once, on a worker slot; the final `dvc repro tables` restores every training from
    the run-cache, a further one runs nothing; the tables and metrics equal a sequential
    `dvc repro tables`'s (both with one thread per process, as each of two CPU workers gets
    on two cores)."""
    import yaml
    from test_pipeline_e2e import _copy_repo, _sh, _shrink

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    _shrink(params)
    params["detectors"] = ["faster_rcnn"]
    params["baselines"] = ["fgd"]
    params["ablation"].update(modules=[], tau=[], mask_rate=[])   # rows shared with Table 1
    workspaces = {}
    for name in ("sequential", "parallel"):
        ws = workspaces[name] = tmp_path / name
        _copy_repo(ws)
        (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        _commit(ws, _sh)
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")   # restored by conftest
    _sh(workspaces["sequential"], "dvc", "repro", "tables")
    ws = workspaces["parallel"]
    log = _sh(ws, sys.executable, "-m", "dipkd.cli", "repro", "--jobs", "2", "--poll", "1",
              "tables")

    runs = _runs(ws)
    sequential = _runs(workspaces["sequential"])
    key = lambda r: r.data.tags["dvc_stage"]        # noqa: E731
    assert sorted(map(key, runs)) == sorted(map(key, sequential))     # each run once
    assert len(set(map(key, runs))) == len(runs) == 5   # teacher, student, 2 DIPKD, FGD
    assert {r.data.tags["gpu"] for r in runs} == {"cpu"}
    assert {r.data.tags["worker_slot"] for r in runs} == {"0/2", "1/2"}
    assert all("mlflow.parentRunId" not in r.data.tags and "parallel_repro" in r.data.tags
               for r in runs)
    trainings = {key(r) for r in runs}
    restored = {line.split("'")[1] for line in log.splitlines()
                if "is cached - skipping run" in line}
    assert trainings <= restored, trainings - restored
    ran_here = {line.split("'")[1] for line in log.splitlines()
                if line.startswith("Running stage")}
    assert not ran_here & trainings, ran_here
    assert "Running stage" not in _sh(ws, "dvc", "repro", "tables")
    assert _results(ws) == _results(workspaces["sequential"])
    assert "dipkd-" not in _sh(ws, "dvc", "exp", "list")       # the machinery is removed


def test_bad_starts_are_one_line_errors(tmp_path):
    """--jobs 0, and a repository without a commit (DVC's queue starts experiments from
    one): one line on stderr, exit code 1, nothing queued."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    for jobs, expected in (("0", "--jobs must be at least 1"), ("2", "no git commit")):
        proc = subprocess.run([sys.executable, "-m", "dipkd.cli", "repro", "--jobs", jobs],
                              cwd=tmp_path, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1])))
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith("error: ") and expected in proc.stderr
