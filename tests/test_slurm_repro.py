"""``dipkd repro --executor slurm`` (dipkd/slurm/, dipkd/tracking/server.py,
dipkd/rng_state.py): the job plan, the ``slurm:`` resources, the batch script, what the
scheduler's answers mean; and (slow) on a real one-node SLURM cluster (tests/_slurm_cluster.py):
the smoke matrix against a sequential ``dvc repro``, a requeued distillation that resumes,
a failed job that cancels its dependents and a second repro that submits nothing it has,
Ctrl-C that cancels exactly the repro's own jobs."""
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from _polling import processes_in
from dipkd.slurm.repro import (FINAL, Tracked, contract, counts, failure_line, final_stages,
                               plan_jobs, settle)
from dipkd.slurm.resources import (ResourceError, Resources, check_gpus, parse_overrides,
                                   resource_plan)
from dipkd.slurm.scheduler import (DONE, FAILED, PENDING, RUNNING, UNKNOWN, JobState, kind,
                                   parse_job_id, parse_sacct, parse_squeue)
from dipkd.slurm.script import batch_script

REPO = Path(__file__).resolve().parents[1]

# dvc.yaml's graph cut to one dataset and detector (stage -> the stages it depends on): code
# and processes (local: DVC cannot keep them in its run-cache), data, one teacher read by two
# distillations, a student, the tables (local, nothing depends on them).
GRAPH = {
    "code": set(), "processes": {"code"}, "prepare@a": {"code"},
    "train_teacher@a": {"code", "processes", "prepare@a"},
    "train_student@a-0": {"code", "processes", "prepare@a"},
    "distill@a-0": {"code", "processes", "prepare@a", "train_teacher@a"},
    "distill_noinherit@a-0": {"code", "processes", "prepare@a", "train_teacher@a"},
    "tables": {"code", "train_teacher@a", "train_student@a-0", "distill@a-0",
               "distill_noinherit@a-0"},
}
LOCAL = {"code", "processes", "tables"}


# --------------------------------------------------------------------------- planning

def test_jobs_are_the_runs_and_the_shared_stages_each_after_what_it_reads():
    jobs = plan_jobs(GRAPH, LOCAL, left=set(GRAPH))
    assert [j.target for j in jobs] == ["prepare@a", "train_student@a-0", "train_teacher@a",
                                        "distill@a-0", "distill_noinherit@a-0"]
    needs = {j.target: set(j.needs) for j in jobs}
    assert needs["distill@a-0"] == {"prepare@a", "train_teacher@a"}
    assert needs["train_teacher@a"] == {"prepare@a"} and needs["prepare@a"] == set()
    # the local stages are nobody's: the workspace runs them (and copies their outputs)
    assert not {s for j in jobs for s in j.own} & LOCAL


def test_only_what_is_left_is_submitted_and_waits_only_for_submitted_jobs():
    """A second repro: data and teacher restored from the run-cache, one distillation left."""
    jobs = plan_jobs(GRAPH, LOCAL, left={"distill@a-0"})
    assert [(j.target, set(j.needs)) for j in jobs] == [("distill@a-0", set())]
    assert plan_jobs(GRAPH, LOCAL, left=set()) == []


def test_targets_that_are_trainings_are_jobs_not_final_stages():
    """`dipkd repro --executor slurm train_teacher`: the teacher is trained in a job, not by
    the final `dvc repro` on the submitting machine."""
    sub = {s: GRAPH[s] for s in ("code", "processes", "prepare@a", "train_teacher@a")}
    jobs = plan_jobs(sub, LOCAL, set(sub))
    assert [(j.target, set(j.own)) for j in jobs] == [
        ("train_teacher@a", {"prepare@a", "train_teacher@a"})]   # data: only it reads it
    assert final_stages(GRAPH) == {"tables"}


def test_contract_keeps_the_paths_through_dropped_stages():
    assert contract({"a": set(), "b": {"a"}, "c": {"b"}}, {"b"}) == {"a": set(), "c": {"a"}}
    assert FINAL not in {j.target for j in plan_jobs(GRAPH, LOCAL, set(GRAPH))}


def test_repository_graph_every_training_in_one_job_after_its_teacher(monkeypatch):
    """On this repository's dvc.yaml: every training stage is the target of one job, code
    and processes none, a distillation's job waits for its teacher's."""
    from dipkd.parallel_repro import stage_graph
    from dipkd.slurm.workspace import local_stages
    monkeypatch.chdir(REPO)
    graph, local = stage_graph(REPO), local_stages(REPO)
    assert {"code", "processes", "tables", "figures", "efficiency"} <= set(local)
    assert local["processes"] == ["runs/processes.json"]
    jobs = plan_jobs(graph, local, set(graph))
    targets = {j.target: j for j in jobs}
    trainings = [s for s in graph if s.split("@")[0] in (
        "train_teacher", "train_student", "distill", "distill_noinherit", "baseline",
        "ablation", "tau", "mask_rate")]
    assert set(trainings) <= set(targets)
    assert sorted(s for j in jobs for s in j.own) == sorted(set(graph) - set(local))
    distill = targets["distill@ssdd-faster_rcnn-0"]
    assert "train_teacher@ssdd-faster_rcnn" in distill.needs


def test_no_stage_depends_on_the_slurm_block(monkeypatch):
    """Changing the job resources retrains nothing: no stage lists `slurm` (or the whole
    params file) among its params."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo
    monkeypatch.chdir(REPO)
    with Repo(str(REPO)) as repo:
        for stage in repo.index.stages:
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency):
                    assert dep.params, f"{stage.addressing} depends on all of {dep.def_path}"
                    assert not [p for p in dep.params if p.split(".")[0] == "slurm"], \
                        stage.addressing


# --------------------------------------------------------------------------- resources

def test_resources_from_params_stage_groups_and_the_command_line(params):
    plan = resource_plan(params)
    assert plan.default.gres == "gpu:1" and plan.default.partition is None
    assert plan.for_stage("prepare@ssdd").gres is None            # data: no GPU
    assert plan.for_stage("prepare@ssdd").time == "04:00:00"
    assert plan.for_stage("distill@ssdd-faster_rcnn-0") == plan.default
    over = parse_overrides(["partition=gpu", "cpus=8", "gres=null", "extra=--qos=high",
                            "stages.prepare.time=00:30:00"])
    plan = resource_plan(params, over)
    res = plan.for_stage("train_teacher@ssdd-faster_rcnn")
    assert (res.partition, res.cpus, res.gres, res.extra) == ("gpu", 8, None, ("--qos=high",))
    assert plan.for_stage("prepare@ssdd").partition == "gpu"       # inherits the defaults
    assert plan.for_stage("prepare@ssdd").time == "00:30:00"
    assert res.sbatch_lines() == ["#SBATCH --partition=gpu", "#SBATCH --cpus-per-task=8",
                                  "#SBATCH --mem=32G", "#SBATCH --time=24:00:00",
                                  "#SBATCH --qos=high"]


@pytest.mark.parametrize("block, message", [
    ({"partitoin": "gpu"}, "unknown key(s) partitoin"),
    ({"cpus": 0}, "cpus must be a positive integer"),
    ({"time": "1:00\n#SBATCH --x"}, "time must be one line"),
    ({"extra": [3]}, "extra must be a list of #SBATCH options"),
    ({"stages": {"prepare": {"gpus": 1}}}, "stages.prepare has unknown key(s) gpus"),
])
def test_bad_resources_are_one_line_errors(block, message):
    with pytest.raises(ResourceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resource_plan({"slurm": block})
    with pytest.raises(ResourceError, match="expected KEY=VALUE"):
        parse_overrides(["gpus=2"])


def test_gpu_count_must_cover_compute_gpus():
    plan = resource_plan({"slurm": {"gres": "gpu:a100:2"}})
    assert plan.default.gpus() == 2
    check_gpus(plan, 2)
    with pytest.raises(ResourceError, match="gives 2 GPU.*compute.gpus is 4"):
        check_gpus(plan, 4)
    check_gpus(resource_plan({"slurm": {"gres": None}}), 4)     # CPU jobs: no check


# --------------------------------------------------------------------------- the script

def test_batch_script_names_its_log_copy_resources_and_tracking_server(tmp_path):
    text = batch_script("distill@ssdd-faster_rcnn-0", copy=tmp_path / "copy",
                        log=tmp_path / "d.log", workspace=tmp_path, python="/venv/bin/python",
                        resources=Resources(partition="gpu", gres="gpu:1", cpus=4,
                                            extra=("--qos=high",)),
                        env={"MLFLOW_TRACKING_URI": "http://host:5000"}, repro="r1")
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    sbatch = [line for line in lines if line.startswith("#SBATCH")]
    assert sbatch == ["#SBATCH --job-name=dipkd:distill@ssdd-faster_rcnn-0",
                      f"#SBATCH --output={tmp_path / 'd.log'}", "#SBATCH --open-mode=append",
                      f"#SBATCH --chdir={tmp_path / 'copy'}", "#SBATCH --requeue",
                      "#SBATCH --kill-on-invalid-dep=yes", "#SBATCH --partition=gpu",
                      "#SBATCH --gres=gpu:1", "#SBATCH --cpus-per-task=4", "#SBATCH --qos=high"]
    # every #SBATCH line before the first command (sbatch stops reading there)
    assert max(i for i, l in enumerate(lines) if l.startswith("#SBATCH")) < lines.index("set -eu")
    assert "export MLFLOW_TRACKING_URI=http://host:5000" in lines
    assert "export PATH=/venv/bin:\"$PATH\"" in lines
    assert lines[-1] == (f"exec /venv/bin/python -m dipkd.slurm.job --workspace {tmp_path} "
                         "distill@ssdd-faster_rcnn-0")
    proc = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------- the scheduler

def test_scheduler_answers():
    assert parse_job_id("1234\n") == "1234" and parse_job_id("77;cluster") == "77"
    states = parse_squeue("12|RUNNING|None|node1\n13|PENDING|Dependency|\n"
                          "14|CANCELLED|DependencyNeverSatisfied|(null)\n")
    assert states["12"] == JobState("RUNNING", "", "node1")
    assert states["13"].kind == PENDING and states["13"].reason == "Dependency"
    assert states["14"].kind == FAILED
    assert parse_sacct("15|COMPLETED|node2\n16|CANCELLED by 0|None assigned\n") == {
        "15": JobState("COMPLETED", node="node2"), "16": JobState("CANCELLED by 0")}
    assert [kind(s) for s in ("COMPLETED", "COMPLETING", "PREEMPTED", "TIMEOUT", "BOGUS")] == \
        [DONE, RUNNING, RUNNING, FAILED, UNKNOWN]


def test_a_job_the_scheduler_forgot_is_judged_by_its_log(tmp_path):
    from dipkd.parallel_repro import Job
    log = tmp_path / "j.log"
    job = Tracked(Job("distill@a-0", frozenset({"distill@a-0"})), log, tmp_path / "j.sh",
                  job_id="5", status=RUNNING)
    assert settle(job, JobState(UNKNOWN)) == RUNNING          # one miss: still waited for
    assert settle(job, JobState(UNKNOWN)) == RUNNING
    assert settle(job, JobState(UNKNOWN)) == FAILED           # gone, no success line
    log.write_text("[dipkd] done: 2 log file(s) to /x/runs\n")
    assert settle(job, JobState(UNKNOWN)) == DONE
    assert settle(job, JobState("RUNNING")) == RUNNING and job.misses == 0


def test_progress_counts_and_the_one_line_failure(tmp_path):
    from dipkd.parallel_repro import Job
    jobs = [Tracked(Job(s, frozenset({s})), tmp_path / f"{s}.log", tmp_path / f"{s}.sh",
                    job_id=i, status=st)
            for s, i, st in (("prepare@a", "1", FAILED), ("train_teacher@a", "2", "cancelled"),
                             ("distill@a-0", None, "cancelled"), ("x@b", "4", RUNNING),
                             ("y@b", None, "unsubmitted"))]
    assert counts(jobs) == "1 running, 1 pending, 1 failed, 2 cancelled"
    line = failure_line(jobs, tmp_path)
    assert line == ("failed: prepare@a (job 1, log prepare@a.log); 2 job(s) that need it "
                    "cancelled")
    assert failure_line(jobs[3:], tmp_path) is None


# --------------------------------------------------------------------------- copies, tags

def test_a_copy_shares_the_cache_and_keeps_its_work_dirs(tmp_path):
    from dvc.config import Config
    from dipkd.slurm.copies import copy_back_logs, make_copy, workspace_files
    ws = tmp_path / "ws"
    ws.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=ws, check=True)
    (ws / "dvc.yaml").write_text("stages: {}\n")
    (ws / "runs" / "code").mkdir(parents=True)
    (ws / "runs" / "code" / "m.json").write_text("{}")
    files = workspace_files(ws)
    assert "dvc.yaml" in files and ".dvc/config" in files
    copy = make_copy(ws, "distill@a-0", files, ws / ".dvc" / "cache", ["runs/code"])
    assert copy == ws / ".dvc/tmp/dipkd-slurm/jobs/distill@a-0"
    assert (copy / "dvc.yaml").is_file() and (copy / "runs/code/m.json").is_file()
    conf = Config(dvc_dir=str(copy / ".dvc"), validate=False).load_one("local")
    assert conf["cache"]["dir"] == str(ws / ".dvc" / "cache")
    assert conf["cache"]["shared"] == "group" and conf["core"]["no_scm"] == "true"
    work = copy / "runs/distilled/dipkd/a-seed0"            # a requeued training's work dir
    work.mkdir(parents=True)
    (work / "epoch_1.pth").write_bytes(b"x")
    (copy / "runs/distilled/dipkd/a-seed0.log").write_text("log")
    (copy / "data").mkdir()
    make_copy(ws, "distill@a-0", files, ws / ".dvc" / "cache", ["runs/code"])
    assert (work / "epoch_1.pth").is_file() and not (copy / "data").exists()
    assert copy_back_logs(copy, ws) == [ws / "runs/distilled/dipkd/a-seed0.log"]


def test_runs_of_a_slurm_job_are_tagged_with_its_id_and_node():
    from dipkd.tracking.mlflow_runs import slurm_tags
    assert slurm_tags({}) == {}
    assert slurm_tags({"SLURM_JOB_ID": "42", "SLURMD_NODENAME": "gpu07"}) == {
        "slurm_job_id": "42", "node": "gpu07"}


# --------------------------------------------------------------------------- resume RNG

class _Killed(Exception):
    pass


def _toy_train(work_dir: Path, hook: bool, *, kill_after: int | None = None,
               resume: bool = False):
    """Train a toy model 3 epochs whose data and forward draw random numbers (killed by an
    exception in the first iteration after ``kill_after`` epochs); returns its weights."""
    import torch
    from mmengine.hooks import Hook
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    from dipkd import mmdet_plugins  # noqa: F401  (the safe checkpoint loader a resume uses)
    from dipkd.rng_state import HOOK_TYPE

    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return {"x": torch.randn(4), "y": float(i % 2)}

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 1)

        def forward(self, x, y, mode="loss"):
            out = torch.nn.functional.dropout(self.lin(x).squeeze(-1), 0.5)
            return {"loss": ((out - torch.as_tensor(y, dtype=out.dtype)) ** 2).mean()}

    class Kill(Hook):                # a requeue in the middle of epoch kill_after + 1
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if runner.epoch == kill_after:
                raise _Killed

    hooks = ([dict(type=HOOK_TYPE)] if hook else []) + ([Kill()] if kill_after else [])
    torch.manual_seed(0)             # the model's initial weights (drawn before the Runner)
    runner = Runner(
        model=Toy(), work_dir=str(work_dir), experiment_name=f"toy{time.time_ns()}",
        train_dataloader=dict(dataset=Noisy(), sampler=dict(type="DefaultSampler",
                                                             shuffle=True),
                              batch_size=4, num_workers=0,
                              collate_fn=dict(type="default_collate")),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1)),
        train_cfg=dict(by_epoch=True, max_epochs=3),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1),
                           logger=dict(type="LoggerHook", interval=100)),
        custom_hooks=hooks, randomness=dict(seed=0), resume=resume,
        default_scope="mmengine", log_level="WARNING")
    try:
        runner.train()
    except _Killed:
        return None
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def test_a_resumed_training_draws_what_the_uninterrupted_one_drew(tmp_path):
    """Killed after epoch 1 of 3 and resumed: with RngStateHook the weights equal the
    uninterrupted run's (without it they do not: the resumed process restarts from the
    seed); the hook leaves the uninterrupted run unchanged and no state file behind."""
    import torch
    plain = _toy_train(tmp_path / "plain", hook=False)
    whole = _toy_train(tmp_path / "whole", hook=True)
    assert all(torch.equal(plain[k], whole[k]) for k in plain)
    assert not list((tmp_path / "whole").glob("rng_state*"))
    results = {}
    for hook in (True, False):
        work = tmp_path / f"cut-{hook}"
        _toy_train(work, hook=hook, kill_after=1)
        results[hook] = _toy_train(work, hook=hook, resume=True)
    assert all(torch.equal(whole[k], results[True][k]) for k in whole)
    assert not all(torch.equal(whole[k], results[False][k]) for k in whole)


# --------------------------------------------------------------------------- real SLURM (slow)

DISTILL = "distill@ssdd-faster_rcnn-0"
DISTILL_WORK = Path("runs/distilled/dipkd/ssdd-faster_rcnn-seed0")
TRAININGS = {"train_teacher@ssdd-faster_rcnn", "train_student@ssdd-faster_rcnn-0", DISTILL,
             "distill_noinherit@ssdd-faster_rcnn-0", "baseline@fgd-ssdd-0"}


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-node SLURM cluster for the session (tests/_slurm_cluster.py)."""
    import shutil
    import tempfile

    from _slurm_cluster import Cluster, Unavailable, ensure_installed
    try:
        ensure_installed()
    except Unavailable as exc:
        pytest.skip(str(exc))
    folder = Path(tempfile.mkdtemp(prefix="dipkd-slurm-"))   # not under pytest's 0700 dirs:
    cluster = Cluster(folder)                                 # munged's socket must be reachable
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _matrix_params() -> dict:
    """The parallel-repro test's matrix (tests/test_parallel_repro.py): one dataset, one
    detector, one baseline, no extra ablation rows; 2 epochs for the students and distilled
    runs (a requeue can come between two), a checkpoint every epoch; jobs of 1 CPU, no GPU."""
    from test_pipeline_e2e import _shrink
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    _shrink(params)
    params["detectors"] = ["faster_rcnn"]
    params["baselines"] = ["fgd"]
    params["ablation"].update(modules=[], tau=[], mask_rate=[])
    smoke = params["profiles"]["smoke"]
    if "checkpoint_interval" in smoke["train"]:
        smoke["train"]["checkpoint_interval"] = 1
    smoke["schedule"]["faster_rcnn"]["ssdd"].update(epochs=2, teacher={"epochs": 1})
    params["slurm"] = {"gres": None, "cpus": 1, "mem": None, "time": None, "stages": {}}
    return params


def _workspace(path: Path, params: dict) -> Path:
    from test_parallel_repro import _commit
    from test_pipeline_e2e import _copy_repo, _sh
    _copy_repo(path)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _commit(path, _sh)
    return path


def _env(cluster, cwd: Path, **extra) -> dict:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               PYTHONPATH=str(cwd), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **cluster.env)
    env.pop("DVC_ROOT", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env


def _slurm_repro(cluster, ws: Path, *targets: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dipkd.cli", "repro", "--executor", "slurm",
                           "--jobs", "2", "--poll", "1", *targets], cwd=ws,
                          env=_env(cluster, ws, **env), capture_output=True, text=True,
                          timeout=1500)


class Watcher(threading.Thread):
    """Beside a SLURM repro: records what squeue says about dependencies, and requeues the
    job of ``stage`` once its training wrote its first epoch checkpoint (then lets it start
    again at once instead of after SLURM's 2-minute hold for requeued jobs)."""

    def __init__(self, cluster, ws: Path, stage: str, work: Path):
        super().__init__(daemon=True)
        self.cluster, self.stage = cluster, stage
        self.copy = ws / ".dvc/tmp/dipkd-slurm/jobs" / stage
        self.pointer = self.copy / work / "last_checkpoint"
        self.dependencies: set[tuple[str, str]] = set()    # (job name, squeue's %E)
        self.requeued: str | None = None
        self.released = False
        self.halt = threading.Event()

    def _squeue(self) -> list[list[str]]:
        out = self.cluster.run("squeue", "-h", "-t", "all", "-o", "%i|%j|%T|%E", check=False)
        return [line.split("|") for line in out.splitlines() if line.count("|") == 3]

    def run(self):
        while not self.halt.is_set():
            jobs = self._squeue()
            self.dependencies |= {(name, dep) for _, name, _, dep in jobs if dep != "(null)"}
            mine = [(i, state) for i, name, state, _ in jobs if name == f"dipkd:{self.stage}"]
            if self.requeued is None and mine and mine[-1][1] == "RUNNING" \
                    and self.pointer.exists():
                self.requeued = mine[-1][0]
                self.cluster.run("scontrol", "requeue", self.requeued)
            elif self.requeued and not self.released and mine and mine[-1][1] == "PENDING" \
                    and not processes_in(self.copy):
                # the killed attempt is gone from the node (started earlier, the new attempt
                # would find it still there and fail to launch)
                time.sleep(2)
                self.cluster.run("scontrol", "update", f"JobId={self.requeued}",
                                 "StartTime=now", check=False)
                self.released = True
            self.halt.wait(0.2)


def _scontrol(cluster, job_id: str) -> dict[str, str]:
    fields = {}
    for token in cluster.run("scontrol", "show", "job", job_id).split():
        key, _, value = token.partition("=")
        fields.setdefault(key, value)
    return fields


def _runs(ws: Path) -> list:
    import mlflow
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dipkd-repro/smoke")
    return client.search_runs([exp.experiment_id])


def _results(ws: Path) -> dict[str, str]:
    """The tables' CSVs, every run's metrics and training curves."""
    files = [*(ws / "reports" / "tables").glob("*.csv"), *(ws / "metrics").rglob("*.json"),
             *(ws / "plots").rglob("*.json")]
    return {str(f.relative_to(ws)): f.read_text() for f in files}


def _failed_job_logs(ws: Path) -> str:
    """The end of the log of each job that the repro's own record (jobs.json) says failed."""
    from dipkd.slurm.scheduler import FAILED
    tails = []
    for record in (ws / "runs" / "slurm").glob("*/jobs.json"):
        for job in json.loads(record.read_text()):
            log = ws / job["log"]
            if job["status"] == FAILED and log.is_file():
                tails.append(f"\n--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}")
    return "".join(tails)


@pytest.fixture(scope="module")
def matrix(slurm_cluster, tmp_path_factory):
    """The matrix built twice from clean copies: a sequential `dvc repro tables`, and
    `dipkd repro --executor slurm --jobs 2 tables` during which the distillation's job is
    requeued in its second epoch."""
    base = tmp_path_factory.mktemp("slurm-matrix")
    params = _matrix_params()
    sequential = _workspace(base / "sequential", params)
    ws = _workspace(base / "slurm", params)
    proc = subprocess.run(["dvc", "repro", "tables"], cwd=sequential, capture_output=True,
                          text=True, env=_env(slurm_cluster, sequential), timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    watcher = Watcher(slurm_cluster, ws, DISTILL, DISTILL_WORK)
    watcher.start()
    try:
        proc = _slurm_repro(slurm_cluster, ws, "tables")
    finally:
        watcher.halt.set()
        watcher.join(30)
    assert proc.returncode == 0, (proc.stdout[-4000:] + proc.stderr[-3000:]
                                  + _failed_job_logs(ws))
    record = json.loads(next((ws / "runs/slurm").glob("*/jobs.json")).read_text())
    return {"sequential": sequential, "ws": ws, "out": proc.stdout, "watcher": watcher,
            "jobs": {j["stage"]: j for j in record}}


@pytest.mark.slow
def test_the_matrix_on_slurm_trains_each_run_once_and_gives_the_sequential_tables(
        matrix, slurm_cluster):
    """Issue 24's first check: every run in MLflow once (through the tracking server), in a
    SLURM job whose id and node it is tagged with; the final `dvc repro` restores every
    training from the run-cache and a further one runs nothing; tables, metrics and curves
    equal a sequential `dvc repro`'s; the scheduler held the dependencies (squeue showed them
    pending on `afterok:`, and no job started before a job it needs had ended)."""
    ws, out, jobs = matrix["ws"], matrix["out"], matrix["jobs"]
    assert set(jobs) == TRAININGS | {"prepare@ssdd"}
    assert all(j["status"] == "done" for j in jobs.values()), jobs
    runs = _runs(ws)
    key = lambda r: r.data.tags["dvc_stage"]        # noqa: E731
    assert sorted(map(key, runs)) == sorted(map(key, _runs(matrix["sequential"])))
    assert sorted(map(key, runs)) == sorted(TRAININGS)            # each run once
    for run in runs:
        assert run.data.tags["slurm_job_id"] == jobs[key(run)]["job_id"]
        assert run.data.tags["node"] == slurm_cluster.node
    restored = {line.split("'")[1] for line in out.splitlines()
                if "is cached - skipping run" in line}
    assert TRAININGS <= restored, TRAININGS - restored
    assert not [line for line in out.splitlines() if line.startswith("Running stage")
                and line.split("'")[1] in TRAININGS]
    again = subprocess.run(["dvc", "repro", "tables"], cwd=ws, capture_output=True, text=True,
                           env=_env(slurm_cluster, ws))
    assert again.returncode == 0 and "Running stage" not in again.stdout, again.stdout
    assert _results(ws) == _results(matrix["sequential"])
    assert (ws / "runs/teacher/ssdd-faster_rcnn-seed0.log").is_file()   # logs copied back
    # the dependencies, as the scheduler saw them
    pending = {(name, dep) for name, dep in matrix["watcher"].dependencies
               if dep.startswith("afterok:")}
    assert pending, matrix["watcher"].dependencies
    for name, dep in pending:
        stage = name.removeprefix("dipkd:")
        assert set(dep.removeprefix("afterok:").split("(")[0].split(":")) <= set(
            jobs[stage]["after"]), (name, dep)
    # each distillation was submitted after its teacher's job (whether squeue caught it
    # pending on it depends on timing: with --jobs 2 it may be submitted once the teacher
    # is done); the start and end times below show the scheduler kept the order
    teacher = jobs["train_teacher@ssdd-faster_rcnn"]["job_id"]
    assert all(teacher in job["after"] for stage, job in jobs.items()
               if stage.startswith(("distill", "baseline"))), jobs
    times = {s: _scontrol(slurm_cluster, j["job_id"]) for s, j in jobs.items()}
    for stage, job in jobs.items():
        for after in job["after"]:
            before = next(s for s, j in jobs.items() if j["job_id"] == after)
            assert times[stage]["StartTime"] >= times[before]["EndTime"], (stage, before)


@pytest.mark.slow
def test_a_requeued_distillation_resumes_from_its_checkpoint_with_the_same_results(
        matrix, slurm_cluster):
    """Issue 24's second check: the distillation's job, requeued in its second epoch,
    started again in the same copy, resumed from epoch 1's checkpoint with the random
    generators of the uninterrupted run, continued its MLflow run, and ended with the
    sequential run's metrics and training curve."""
    ws, watcher = matrix["ws"], matrix["watcher"]
    job_id = matrix["jobs"][DISTILL]["job_id"]
    assert watcher.requeued == job_id and watcher.released
    assert int(_scontrol(slurm_cluster, job_id)["Restarts"]) == 1
    log = (ws / matrix["jobs"][DISTILL]["log"]).read_text()     # the job's, both attempts
    assert "attempt 1" in log and "attempt 2" in log, log[-3000:]
    resumed = [line for line in log.splitlines() if line.startswith("[dipkd] resuming")]
    assert len(resumed) == 1 and resumed[0].endswith("epoch_1.pth"), log[-3000:]
    run_log = (ws / f"{DISTILL_WORK}.log").read_text()          # the run's, copied back
    assert "random generators restored to the start of epoch 2" in run_log, run_log[-3000:]
    stage_runs = [r for r in _runs(ws) if r.data.tags["dvc_stage"] == DISTILL]
    assert len(stage_runs) == 1 and stage_runs[0].data.tags["slurm_job_id"] == job_id
    for path in ("metrics/distilled/dipkd/ssdd-faster_rcnn-seed0.json",
                 "plots/distilled/dipkd/ssdd-faster_rcnn-seed0.json"):
        assert (ws / path).read_text() == (matrix["sequential"] / path).read_text(), path


@pytest.mark.slow
def test_a_failed_job_cancels_its_dependents_and_a_rerun_submits_only_what_is_missing(
        matrix, slurm_cluster, tmp_path):
    """Issue 24's third check: the data job fails (a dataset path that does not exist): the
    job waiting for it is cancelled by SLURM (--kill-on-invalid-dep), the others are never
    submitted, and the repro ends with one line naming the stage and its log. With the
    data fixed and the matrix's run-cache at hand, the next repro submits nothing and
    restores every stage. (The user's MLFLOW_TRACKING_URI is used as it is: no server.)"""
    params = _matrix_params()
    params["data"]["ssdd"] = {"source": "ssdd", "path": "/nonexistent/Official-SSDD-OPEN"}
    ws = _workspace(tmp_path / "ws", params)
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    proc = _slurm_repro(slurm_cluster, ws, "tables", MLFLOW_TRACKING_URI=uri)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    record = json.loads(next((ws / "runs/slurm").glob("*/jobs.json")).read_text())
    jobs = {j["stage"]: j for j in record}
    prepare = jobs.pop("prepare@ssdd")
    assert proc.stderr == (f"error: failed: prepare@ssdd (job {prepare['job_id']}, log "
                           f"{prepare['log']}); {len(jobs)} job(s) that need it cancelled\n")
    assert "/nonexistent/Official-SSDD-OPEN" in (ws / prepare["log"]).read_text()
    assert {j["status"] for j in jobs.values()} == {"cancelled"}
    submitted = [j for j in jobs.values() if j["job_id"]]
    assert submitted and all(j["after"] == [prepare["job_id"]] for j in submitted)
    for job in submitted:       # cancelled by SLURM itself (--kill-on-invalid-dep=yes)
        assert _scontrol(slurm_cluster, job["job_id"])["JobState"] == "CANCELLED", job
    assert "MLflow tracking server " + uri in proc.stdout

    (ws / "params.yaml").write_text(yaml.safe_dump(_matrix_params(), sort_keys=False))
    subprocess.run(["dvc", "cache", "dir", "--local", str(matrix["ws"] / ".dvc" / "cache")],
                   cwd=ws, check=True, env=_env(slurm_cluster, ws))
    before = slurm_cluster.run("squeue", "-h", "-t", "all", "-o", "%i")
    proc = _slurm_repro(slurm_cluster, ws, "tables", MLFLOW_TRACKING_URI=uri)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "6 stage(s) restored from the run-cache, 0 job(s) to submit" in proc.stdout
    assert slurm_cluster.run("squeue", "-h", "-t", "all", "-o", "%i") == before
    tables = lambda w: {f.name: f.read_text()                     # noqa: E731
                        for f in (w / "reports/tables").glob("*.csv")}
    assert tables(ws) == tables(matrix["ws"])


def _process_group(pgid: int) -> set[int]:
    """Pids of the live processes in process group ``pgid`` (Linux /proc)."""
    from _polling import alive
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[2]) == pgid and alive(int(entry.name)):
                found.add(int(entry.name))
    return found


def _tracking_server_pid(ws: Path) -> int | None:
    """The `mlflow server` a repro in ``ws`` started (its store is ``ws/mlflow.db``)."""
    store = f"sqlite:///{ws / 'mlflow.db'}"
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                args = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            args = [a.decode(errors="replace") for a in args]
            if "mlflow" in args and "server" in args and any(a.startswith(store) for a in args):
                return int(entry.name)
    return None


@pytest.mark.slow
def test_ctrl_c_cancels_exactly_the_jobs_of_the_repro_and_stops_its_tracking_server(
        slurm_cluster, tmp_path):
    """Ctrl-C (SIGINT to the repro's process group, as a terminal sends it) while one job of
    the repro runs and the jobs that need it are pending: the repro scancels exactly its own
    jobs (someone else's job keeps running), says so in one line, stops the tracking server
    it started (its whole process group) and exits with 130; the cancelled job's processes
    are gone from the node."""
    from _polling import processes_in, wait_for
    ws = _workspace(tmp_path / "ws", _matrix_params()).resolve()
    queue = lambda: dict(line.split("|") for line in slurm_cluster.run(   # noqa: E731
        "squeue", "-h", "-t", "all", "-o", "%i|%T").split())
    other = slurm_cluster.run("sbatch", "--parsable", "--job-name=someone-else",
                              "--cpus-per-task=1", "--output=/dev/null", "--chdir=/tmp",
                              "--wrap", "sleep 300").strip().split(";")[0]
    out_path = tmp_path / "repro.out"
    ids: list[str] = []
    with open(out_path, "w") as out, open(tmp_path / "repro.err", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dipkd.cli", "repro", "--executor", "slurm", "--poll", "1",
             "train_teacher@ssdd-faster_rcnn", "train_student@ssdd-faster_rcnn-0"],
            cwd=ws, env=_env(slurm_cluster, ws, PYTHONUNBUFFERED="1"),
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
            # as from a terminal: a test run started in the background (`pytest &` in a
            # script) ignores SIGINT, and a python started ignoring it never sees Ctrl-C
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        def submitted():
            lines = out_path.read_text().splitlines()
            planned = [int(line.split(", ")[1].split()[0]) for line in lines
                       if "job(s) to submit" in line]
            assert proc.poll() is None, "\n".join(lines) + (tmp_path / "repro.err").read_text()
            jobs = [line.split()[3] for line in lines if "  submitted" in line]
            return jobs if planned and len(jobs) == planned[0] else None
        ids = wait_for(submitted, "the repro's jobs submitted", timeout=300, interval=0.5)
        assert len(ids) == 3 and other not in ids     # data, then teacher and student
        # one job runs (the data job; should it be done already, a training) and has its
        # processes on the node, in its copy of the workspace
        copies = ws / ".dvc/tmp/dipkd-slurm/jobs"
        wait_for(lambda: any(queue().get(i) == "RUNNING" for i in ids) and any(
            processes_in(c) for c in copies.iterdir()), "a job of the repro running",
            timeout=60, interval=0.5)
        uri = next(line.split()[4] for line in out_path.read_text().splitlines()
                   if line.startswith("[dipkd] MLflow tracking server "))
        server = _tracking_server_pid(ws)
        assert server is not None
        pgid = os.getpgid(server)
        assert pgid != os.getpgid(proc.pid)           # its own group: Ctrl-C must not reach it

        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(60) == 130, out_path.read_text()[-3000:]
        assert "Traceback" not in (tmp_path / "repro.err").read_text()

        out = out_path.read_text()
        lines = [line for line in out.splitlines() if line.startswith("[dipkd] interrupted")]
        assert len(lines) == 1, out[-3000:]
        said = re.fullmatch(r"\[dipkd\] interrupted: cancelled (\d+) job\(s\) of this repro "
                            r"\(([\d, ]+)\)", lines[0])
        assert said, lines[0]
        left = said.group(2).split(", ")
        assert int(said.group(1)) == len(left) and set(left) <= set(ids)
        # every job it had not seen end (the data job may have been done by then)
        assert {i for i in ids if queue()[i] != "COMPLETED"} <= set(left) and len(left) >= 2
        wait_for(lambda: all(queue()[i] == "CANCELLED" for i in left),
                 "the repro's jobs cancelled", timeout=60, interval=0.5)
        assert queue()[other] == "RUNNING"           # someone else's job: untouched
        wait_for(lambda: not _process_group(pgid), "the tracking server's processes gone",
                 timeout=20, interval=0.2)
        from dipkd.tracking.server import _healthy
        assert not _healthy(uri)
        wait_for(lambda: not any(processes_in(c) for c in copies.iterdir()),
                 "the cancelled job's processes gone", timeout=60, interval=0.5)
    finally:
        if proc.poll() is None:          # failed early: the repro cleans up after itself
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
        slurm_cluster.run("scancel", other, *ids, check=False)
        leftover = _tracking_server_pid(ws)
        if leftover is not None:         # the leader of its own process group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(leftover, signal.SIGKILL)
