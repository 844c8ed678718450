"""Multi-process training (``compute.gpus``): the torchrun re-exec, the single-process path,
SARCocoMetric's result collection across gloo ranks, and a 2-process CPU training (slow)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from _helpers import last_capture, tiny_workspace
from _polling import alive, complete_checkpoint, processes_in, wait_for
from dipkd import launch
from dipkd.config.params import ParamsError, requested_processes

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- fast: the launcher logic

@pytest.mark.parametrize("compute, expected", [
    (None, 1), ({}, 1), ({"gpus": 0}, 1), ({"gpus": 1}, 1), ({"gpus": 2}, 2),
    ({"gpus": None}, 1)])
def test_requested_processes(compute, expected):
    params = {} if compute is None else {"compute": compute}
    assert requested_processes(params) == expected


@pytest.mark.parametrize("gpus", [-1, 1.5, "2", True])
def test_requested_processes_rejects_bad_values(gpus):
    with pytest.raises(ParamsError, match="compute.gpus"):
        requested_processes({"compute": {"gpus": gpus}})


def test_worker_detection():
    outside = {"PATH": "/bin", "RANK": "3"}  # a stray RANK alone is not a worker
    worker = {"LOCAL_RANK": "1", "RANK": "1", "WORLD_SIZE": "2"}
    assert launch.needs_launch(2, outside) and not launch.needs_launch(1, outside)
    assert not launch.needs_launch(2, worker)  # already under torchrun: train, don't launch
    assert (launch.rank(outside), launch.world_size(outside)) == (0, 1)
    assert launch.is_leader(outside) and not launch.is_distributed(outside)
    assert (launch.rank(worker), launch.world_size(worker)) == (1, 2)
    assert launch.is_distributed(worker) and not launch.is_leader(worker)
    single = {"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1"}  # torchrun with 1 process
    assert not launch.is_distributed(single) and launch.is_leader(single)


def test_launch_command():
    cmd = launch.launch_command(2, "pipeline.train",
                                ["--dataset", "ssdd", "--params", "p.yaml"], python="/py")
    assert cmd == ["/py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                   "2", "-m", "pipeline.train", "--dataset", "ssdd", "--params",
                   "p.yaml"]


def test_relaunch_prints_and_propagates_exit_code(monkeypatch, capsys):
    monkeypatch.setattr(launch, "launch_command",
                        lambda n, module, argv: [sys.executable, "-c",
                                                 "import sys; sys.exit(int(sys.argv[1]))",
                                                 *argv])
    assert launch.relaunch(2, module="pipeline.x", argv=["3"]) == 3
    assert "launching 2 training processes" in capsys.readouterr().out
    assert launch.relaunch(2, module="pipeline.x", argv=["0"]) == 0
    monkeypatch.setattr(launch, "launch_command",
                        lambda n, module, argv: [sys.executable, "-c",
                                                 "import os; os.kill(os.getpid(), 15)"])
    assert launch.relaunch(2, module="pipeline.x", argv=[]) == 128 + signal.SIGTERM


def _stage(monkeypatch, write_params, params, gpus, env=None, torchrun_code=7):
    """Call ``pipeline._cli.run`` like a training stage; record main / relaunch / then
    (the test after training) calls."""
    from pipeline import _cli
    if gpus is None:
        params.pop("compute", None)
    else:
        params["compute"] = {"gpus": gpus}
    path = write_params(params)
    calls = []
    monkeypatch.setattr(launch, "relaunch",
                        lambda n: calls.append(("relaunch", n)) or torchrun_code)
    monkeypatch.setattr(_cli, "_check_training_inputs", lambda p, a: None)
    monkeypatch.setattr(launch, "die_with_launcher", lambda: calls.append(("bound",)))
    monkeypatch.setattr(sys, "argv", ["train", "--params", str(path),
                                      "--dataset", "ssdd", "--detector", "retinanet"])
    for name in launch.WORKER_VARS + ("RANK",):
        monkeypatch.delenv(name, raising=False)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    code = None
    try:
        _cli.run(lambda p, a: calls.append(("main", a.dataset)), "doc", _cli.DATASET,
                 _cli.DETECTOR, scale_out=True,
                 then=lambda p, a: calls.append(("then", a.dataset)))
    except SystemExit as exc:
        code = exc.code
    return calls, code


@pytest.mark.parametrize("gpus", [None, 0, 1])
def test_single_process_runs_in_place(monkeypatch, write_params, params, gpus):
    calls, code = _stage(monkeypatch, write_params, params, gpus)
    assert calls == [("main", "ssdd"), ("then", "ssdd")] and code is None


def test_n_processes_relaunch_under_torchrun(monkeypatch, write_params, params):
    calls, code = _stage(monkeypatch, write_params, params, 2)
    assert calls == [("relaunch", 2)] and code == 7  # torchrun's exit code is the stage's
    # the test after training runs once, in the launching process, when every worker succeeded
    calls, code = _stage(monkeypatch, write_params, params, 2, torchrun_code=0)
    assert calls == [("relaunch", 2), ("then", "ssdd")] and code is None


def test_workers_train_instead_of_relaunching(monkeypatch, write_params, params):
    calls, code = _stage(monkeypatch, write_params, params, 2,
                         env={"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "2"})
    assert calls == [("bound",), ("main", "ssdd")] and code is None   # no test in a worker


def test_bad_input_fails_before_launching(tmp_path, monkeypatch, params):
    """Names and the dataset are checked in the launching process: one line, exit 2."""
    params["compute"] = {"gpus": 2}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for name in launch.WORKER_VARS:
        env.pop(name, None)
    for detector, message in (("yolo", "unknown detector 'yolo'"), ("retinanet", "data/ssdd")):
        proc = subprocess.run([sys.executable, "-m", "pipeline.train", "--role", "student",
                               "--dataset", "ssdd", "--detector", detector], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert "launching" not in proc.stdout


def test_worker_config(params):
    from dipkd.mmdet_config import build_config
    from dipkd.config.params import run_spec
    cfg = build_config(run_spec(params, "student", "ssdd", "retinanet"))
    single = cfg.pretty_text
    launch.configure(cfg, Path("runs/x"))
    assert cfg.launcher == "pytorch"
    import torch
    assert cfg.env_cfg.dist_cfg.backend == ("nccl" if torch.cuda.is_available() else "gloo")
    assert cfg.model_wrapper_cfg.type == "MMDistributedDataParallel"
    assert cfg.model_wrapper_cfg.find_unused_parameters is False
    if not torch.cuda.is_available():
        assert cfg.model_wrapper_cfg.device_ids is None
    assert cfg.val_evaluator.collect_dir == os.path.join("runs/x", launch.COLLECT_DIR)
    assert cfg.test_evaluator.collect_dir == cfg.val_evaluator.collect_dir
    assert cfg.pretty_text != single  # another fingerprint: a 1-process work dir is not resumed


# ------------------------------------------------- slow: real gloo processes on the CPU

WORKER = '''
import json, sys
import torch
import torch.distributed as dist
from mmengine.dataset import DefaultSampler
from dipkd.evaluation.metric import SARCocoMetric

ann, out, collect_dir = sys.argv[1:]
dist.init_process_group("gloo")
coco = json.load(open(ann))
images = coco["images"]
collected = []


class Recording(SARCocoMetric):
    def compute_metrics(self, results):
        collected.extend(per_image[0]["image_id"] for per_image in results)
        return super().compute_metrics(results)


metric = Recording(ann_file=ann, collect_dir=collect_dir)
seen = []
for index in DefaultSampler(images, shuffle=False):  # pads: 3 images -> 2 + 2
    image = images[index]
    seen.append(image["id"])
    boxes = [[x, y, x + w, y + h] for a in coco["annotations"] if a["image_id"] == image["id"]
             for x, y, w, h in [a["bbox"]]]
    metric.process(None, [{"img_id": image["id"], "pred_instances": {
        "bboxes": torch.tensor(boxes), "scores": torch.ones(len(boxes)),
        "labels": torch.zeros(len(boxes), dtype=torch.long)}}])
metrics = metric.evaluate(len(images))
rank = dist.get_rank()
json.dump({"metrics": metrics, "collected": collected, "seen": seen,
           "world_size": dist.get_world_size()}, open(f"{out}.{rank}", "w"))
dist.destroy_process_group()
'''


def _gt(path):
    boxes = {1: [[10, 10, 20, 8]], 2: [[30, 5, 12, 12], [5, 40, 25, 10]], 3: [[50, 50, 9, 20]]}
    coco = {"images": [{"id": i, "file_name": f"{i}.png", "width": 100, "height": 100}
                       for i in boxes],
            "annotations": [{"id": 10 * i + k, "image_id": i, "category_id": 1, "bbox": b,
                             "area": b[2] * b[3], "iscrowd": 0}
                            for i, bs in boxes.items() for k, b in enumerate(bs)],
            "categories": [{"id": 1, "name": "ship"}]}
    path.write_text(json.dumps(coco))


@pytest.mark.slow
def test_metric_collects_all_ranks_under_gloo(tmp_path):
    """Each rank sees part of the (padded) test set; rank 0 evaluates every image exactly
    once and every rank gets the numbers. Perfect detections: mAP 1 only if nothing is
    lost or duplicated."""
    _gt(tmp_path / "gt.json")
    (tmp_path / "dist_metric_worker.py").write_text(WORKER)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}")
    for name in launch.WORKER_VARS:
        env.pop(name, None)
    cmd = launch.launch_command(2, "dist_metric_worker",
                                [str(tmp_path / "gt.json"), str(tmp_path / "out"),
                                 str(tmp_path / "collect")])
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rank0 = json.loads((tmp_path / "out.0").read_text())
    rank1 = json.loads((tmp_path / "out.1").read_text())
    assert rank0["world_size"] == 2
    assert sorted(rank0["seen"] + rank1["seen"]) == [1, 1, 2, 3]  # one padded duplicate
    assert rank0["collected"] == [1, 2, 3] and rank1["collected"] == []
    assert rank0["metrics"]["coco/mAP"] == pytest.approx(1.0)
    assert rank0["metrics"]["coco/mAR"] == pytest.approx(1.0)
    assert rank1["metrics"] == rank0["metrics"]
    assert not (tmp_path / ".dist_test").exists() and not (tmp_path / "collect").exists()


def _run(cwd, env, *args):
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{args}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def _workspace(ws, params, epochs, det="retinanet"):
    """A tiny ssdd project with ``compute.gpus: 2``; returns the student's RunSpec."""
    from dipkd.config.params import load_params, run_spec
    tiny_workspace(ws, params, det, epochs, compute={"gpus": 2})
    return run_spec(load_params(ws / "params.yaml"), "student", "ssdd", det)


def _env(ws, **extra):
    env = dict(os.environ, PYTHONPATH=str(REPO), DVC_ROOT=str(ws), **extra)
    for name in launch.WORKER_VARS:
        env.pop(name, None)
    return env


@pytest.mark.slow
def test_two_process_cpu_training(tmp_path, params):
    """``compute.gpus: 2`` without CUDA: two gloo CPU processes train the smoke student,
    validate with SARCocoMetric across both ranks, and leave one MLflow run (in the store
    named by MLFLOW_TRACKING_URI, honoured by every process) and one exported model."""
    det = "retinanet"
    spec = _workspace(tmp_path, params, epochs=1, det=det)
    store = tmp_path / "tracking" / "remote.db"
    store.parent.mkdir()
    env = _env(tmp_path, MLFLOW_TRACKING_URI=f"sqlite:///{store}")
    start = time.time()
    out = _run(tmp_path, env, "pipeline.train", "--role", "student", "--dataset", "ssdd",
               "--detector", det)
    trained = time.time() - start
    log = out.stdout + out.stderr + last_capture(tmp_path / spec.log_path)   # the run's log
    assert "launching 2 training processes (gloo)" in log
    assert "--nproc_per_node 2 -m pipeline.train --role student" in log
    assert f"rank 0/2 (gloo): training student/{spec.key}" in log
    assert f"rank 1/2 (gloo): training student/{spec.key}" in log

    from dipkd.checkpoint import safe_load
    model_path = tmp_path / spec.model_path
    meta = safe_load(model_path)["meta"]
    assert meta["world_size"] == 2 and meta["epoch"] == 1
    assert "launcher = 'pytorch'" in meta["train_config"]
    from mmdet.apis import init_detector
    from dipkd.mmdet_config import build_config
    model = init_detector(build_config(spec), str(model_path), device="cpu")
    assert model.dataset_meta["classes"] == ("ship",)
    assert not (tmp_path / ".dist_test").exists()  # results collected inside the work dir

    # the launching process tested the model once the workers had finished
    metrics = json.loads((tmp_path / spec.metrics_path).read_text())
    assert set(metrics["metrics"]) >= {"mAP", "AP50", "mAR"}
    assert not (tmp_path / spec.work_dir / "last_checkpoint").exists()   # pruned after it

    assert not (tmp_path / "mlflow.db").exists()  # every process used MLFLOW_TRACKING_URI
    import mlflow
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{store}")
    runs = client.search_runs([client.get_experiment_by_name("dipkd-repro/smoke").experiment_id])
    assert len(runs) == 1, [r.data.tags for r in runs]
    run = runs[0]
    assert {k: run.data.tags[k] for k in ("dataset", "detector", "role", "profile",
                                          "world_size")} == {
        "dataset": "ssdd", "detector": det, "role": "student", "profile": "smoke",
        "world_size": "2"}
    assert run.info.status == "FINISHED"
    assert meta["mlflow_run_id"] == run.info.run_id
    assert len(client.get_metric_history(run.info.run_id, "coco/mAP")) == 1  # validation
    assert "test/mAP" in run.data.metrics
    print(f"2-process training took {trained:.0f} s")


@pytest.mark.slow
def test_killed_two_process_training_resumes(tmp_path, params):
    """Killing the stage's process group stops the workers too (torchrun starts them in
    sessions of their own; they die with the agent), and the rerun resumes the same MLflow
    run from the last checkpoint."""
    spec = _workspace(tmp_path, params, epochs=3)
    env = _env(tmp_path)
    cmd = [sys.executable, "-m", "pipeline.train", "--role", "student", "--dataset", "ssdd",
           "--detector", "retinanet"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    work_dir = tmp_path / spec.work_dir
    # a complete checkpoint on disk while the training still runs
    wait_for(lambda: proc.poll() is not None or complete_checkpoint(work_dir),
             "a complete first checkpoint")
    assert proc.poll() is None, "the training ended before it could be killed"
    stage = processes_in(tmp_path)   # the stage, the torchrun agent and its two workers
    assert len(stage) >= 3, stage
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # every one of them dies (the workers with their agent), so none can write the next
    # epoch's checkpoint after the kill
    wait_for(lambda: not any(alive(pid) for pid in stage), "the killed stage's processes to end",
             timeout=120)
    assert not processes_in(tmp_path)
    left = sorted(p.name for p in work_dir.iterdir())
    assert "epoch_1.pth" in left, "no first checkpoint"
    assert "epoch_3.pth" not in left and not (tmp_path / spec.model_path).exists()
    run_id = json.loads((work_dir / "mlflow_run.json").read_text())["run_id"]

    out = _run(tmp_path, env, *cmd[2:])
    assert "resuming" in last_capture(tmp_path / spec.log_path)   # rank 0's line, in the log
    from dipkd.checkpoint import safe_load
    meta = safe_load(tmp_path / spec.model_path)["meta"]
    assert meta["epoch"] == 3 and meta["world_size"] == 2
    assert meta["mlflow_run_id"] == run_id
