"""Multi-process training ("scale-out"): ``compute.gpus: N`` in params.yaml.

A training stage asked for N > 1 processes re-executes itself under torchrun::

    python -m torch.distributed.run --standalone --nproc_per_node N -m pipeline.<stage> <args>

(:func:`relaunch`; the launching process prints the command, forwards SIGINT/SIGTERM and exits
with torchrun's code, so a failing worker fails the stage). Each worker runs the same stage
script; it sees ``LOCAL_RANK``/``WORLD_SIZE`` in its environment, so it trains instead of
launching again. Inside a worker:

- :func:`init_worker` joins the process group: NCCL with one GPU per process when CUDA is
  available (mmengine's ``init_dist``, which also selects the GPU ``LOCAL_RANK``), else gloo.
  **Without CUDA, N means N CPU processes talking gloo** (that is how the CPU test runs;
  useful only to test the plumbing). The group is joined before mmengine's ``Runner`` is
  built, because rank 0 prepares the work dir while the others wait (:func:`barrier`);
  the ``Runner`` then finds the group initialised and uses it. (mmengine's own
  ``init_dist('pytorch')`` calls ``torch.cuda.set_device`` and so cannot run on CPU.)
- :func:`configure` sets the config's ``launcher='pytorch'``,
  ``env_cfg.dist_cfg.backend`` (``nccl``/``gloo``), the DDP wrapper (no ``device_ids`` on
  CPU; ``find_unused_parameters`` for the distiller, whose KD losses leave modules unused
  when switches are off) and a collect dir inside the work dir for the validation results
  that mmengine gathers from all ranks (instead of ``.dist_test/`` in the current dir).
- Only rank 0 (:func:`is_leader`) touches the outside world: the work dir fingerprint, the
  MLflow run, the exported model (see :func:`dipkd.training.train`).

``batch_size`` in params.yaml is per process (the paper's "8 per GPU"): N processes train
with N x ``batch_size`` images per step; the learning rate is not rescaled. Evaluation stays
single-process. With N <= 1 (or no ``compute`` section) nothing here changes anything: the
stage trains in its own process exactly as before.

Environment variables (``MLFLOW_TRACKING_URI``, ``DVC_ROOT``, ``DVC_STAGE``, ...) pass
unchanged from the stage to torchrun and its workers.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence

from .config.params import ParamsError

WORKER_VARS = ("LOCAL_RANK", "WORLD_SIZE")
COLLECT_DIR = ".dist_collect"


def in_worker(env: Mapping | None = None) -> bool:
    """True inside a process started by torchrun (or another ``pytorch``-style launcher)."""
    env = os.environ if env is None else env
    return any(name in env for name in WORKER_VARS)


def world_size(env: Mapping | None = None) -> int:
    """Processes of the run (1 outside a torchrun worker)."""
    env = os.environ if env is None else env
    return int(env.get("WORLD_SIZE", 1)) if in_worker(env) else 1


def rank(env: Mapping | None = None) -> int:
    """Global rank of this process (0 outside a torchrun worker)."""
    env = os.environ if env is None else env
    return int(env.get("RANK", 0)) if in_worker(env) else 0


def is_distributed(env: Mapping | None = None) -> bool:
    """True in a worker of a run with more than one process."""
    return in_worker(env) and world_size(env) > 1


def is_leader(env: Mapping | None = None) -> bool:
    """Rank 0, or the only process."""
    return rank(env) == 0


def backend() -> str:
    import torch
    return "nccl" if torch.cuda.is_available() else "gloo"


def needs_launch(processes: int, env: Mapping | None = None) -> bool:
    """Whether a stage asked for ``processes`` must re-execute itself under torchrun."""
    return processes > 1 and not in_worker(env)


def check_devices(processes: int) -> None:
    """With CUDA, one GPU per process: fail early when fewer are visible."""
    import torch
    if processes > 1 and torch.cuda.is_available():
        visible = torch.cuda.device_count()
        if processes > visible:
            raise ParamsError(f"params.yaml: compute.gpus is {processes} but only {visible} "
                              "CUDA device(s) are visible")


def current_module() -> str:
    """The dotted name the running stage was started with (``python -m pipeline.<stage>``)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is None or not spec.name:
        raise RuntimeError("multi-process training needs the stage started as "
                           "`python -m pipeline.<stage>`")
    return spec.name


def launch_command(processes: int, module: str, argv: Sequence[str],
                   python: str | None = None) -> list[str]:
    """The torchrun command that runs ``python -m <module> <argv>`` in ``processes``
    workers on this machine."""
    return [python or sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", str(int(processes)), "-m", module, *argv]


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _prctl():
    """libc's ``prctl`` on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def relaunch(processes: int, module: str | None = None,
             argv: Sequence[str] | None = None) -> int:
    """Run the stage under torchrun and return its exit code (128 + signal if killed).

    SIGINT and SIGTERM received meanwhile are passed on to torchrun, which stops its workers;
    the workers die with torchrun (:func:`die_with_launcher`), so killing the stage's process
    group with SIGKILL leaves nothing running.
    """
    cmd = launch_command(processes, module or current_module(),
                         sys.argv[1:] if argv is None else argv)
    print(f"[dipkd] launching {processes} training processes ({backend()}): "
          f"{shlex.join(cmd)}", flush=True)
    prctl = _prctl()

    def bind():  # torchrun gets SIGTERM (and stops its workers) if this process dies
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)

    proc = subprocess.Popen(cmd, preexec_fn=bind if prctl else None)

    def forward(signum, _frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


def die_with_launcher() -> None:
    """In a torchrun worker: ask the kernel to SIGKILL this process when its parent (the
    torchrun agent) dies. torchrun starts each worker in a session of its own, so killing the
    stage's process group (or the agent with SIGKILL) would otherwise leave the workers
    training on in the work dir, racing with a rerun of the stage."""
    prctl = _prctl()
    if prctl is not None and in_worker():
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() == 1:  # the agent was gone already
            os._exit(128 + signal.SIGKILL)


def init_worker() -> None:
    """Join the process group of a multi-process run (no-op otherwise or when joined)."""
    if not is_distributed():
        return
    import torch
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return
    if torch.cuda.is_available():
        from mmengine.dist import init_dist
        init_dist("pytorch", backend="nccl")  # also torch.cuda.set_device(LOCAL_RANK)
    else:
        dist.init_process_group(backend="gloo")


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def finish() -> None:
    """Leave the process group at the end of a multi-process run."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _buffer_sync_switch() -> str:
    import inspect

    from torch.nn.parallel import DistributedDataParallel
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    return "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"


def configure(cfg, work_dir) -> None:
    """Turn a single-process training config into the config of one worker."""
    import torch
    cfg.launcher = "pytorch"
    dist_cfg = dict(cfg.env_cfg.get("dist_cfg") or {})
    dist_cfg["backend"] = backend()
    cfg.env_cfg.dist_cfg = dist_cfg
    wrapper = dict(type="MMDistributedDataParallel",
                   find_unused_parameters=cfg.model.get("type") == "FeatureDistiller")
    # mmengine's default: buffers (BN statistics) are not re-broadcast from rank 0 at every
    # forward; torch 2.14 renamed that switch (mmengine already syncs everything at init).
    wrapper[_buffer_sync_switch()] = False
    if not torch.cuda.is_available():
        wrapper["device_ids"] = None  # a CPU module: DDP refuses device ids
    cfg.model_wrapper_cfg = wrapper
    collect = os.path.join(str(work_dir), COLLECT_DIR)
    for key in ("val_evaluator", "test_evaluator"):
        evaluator = cfg.get(key)
        if evaluator is not None and evaluator.get("type") == "SARCocoMetric":
            evaluator.collect_dir = collect
