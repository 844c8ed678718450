"""An MLflow tracking server for the duration of a repro whose stages run on other machines
(``dipkd repro --executor slurm``).

SQLite must not be written from many nodes at once (its locks are not safe on a network
filesystem), so the jobs never open ``mlflow.db``: they talk to a tracking server. Either the
user's (``MLFLOW_TRACKING_URI``, used as it is), or the one :func:`tracking_server` starts on
this machine: ``mlflow server`` backed by the repository's own store (``mlflow.db``, the same
file a local ``dvc repro`` writes, :mod:`dipkd.tracking.mlflow_runs`), listening on all
interfaces at a free port, reachable from the nodes as ``http://<this host>:<port>``. The
server is the store's only writer while it runs; it is stopped (its whole process group)
when the block ends, also on an error or Ctrl-C.

Artifacts are not proxied (``--no-serve-artifacts``): the jobs write them directly into the
experiment's artifact location, ``mlartifacts/`` beside the store, on the shared
filesystem. The experiment is created in the store before the server starts
(:func:`dipkd.tracking.mlflow_runs.ensure_experiment`), so it gets that location, as in a
local run. The server accepts requests addressed to this host's name (``--allowed-hosts``).
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

STARTUP_TIMEOUT = 180.0    # s: a first start migrates the store's schema (slow on busy cores)


class TrackingServerError(RuntimeError):
    """The tracking server did not start (one line, naming its log)."""


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def server_command(store: Path, port: int, host: str) -> list[str]:
    """``mlflow server`` on the store ``store/mlflow.db`` and its artifacts
    ``store/mlartifacts``, for clients that address it as ``host``."""
    from .mlflow_runs import BUSY_TIMEOUT
    allowed = [host, f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"]
    return [sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}?timeout={BUSY_TIMEOUT}",
            "--default-artifact-root", (store / "mlartifacts").as_uri(),
            "--no-serve-artifacts", "--host", "0.0.0.0", "--port", str(port),
            "--workers", "1", "--allowed-hosts", ",".join(allowed)]


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server's process group: SIGTERM, then SIGKILL after 15 s."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def tracking_server(store: Path, log: Path, *, host: str | None = None,
                    port: int | None = None,
                    timeout: float = STARTUP_TIMEOUT) -> Iterator[str]:
    """Run ``mlflow server`` on ``store`` (its output in ``log``) while the block runs;
    yields the URI the jobs use. ``TrackingServerError`` if it does not answer within
    ``timeout`` s."""
    host = host or socket.gethostname()
    port = port or free_port()
    uri = f"http://{host}:{port}"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # the runs are only logged to: no job-execution workers (uvicorn plus 8 huey processes
    # by default in MLflow 3)
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    with open(log, "ab") as out:
        proc = subprocess.Popen(server_command(store, port, host), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(uri):
            if proc.poll() is not None:
                raise TrackingServerError(f"mlflow server exited ({proc.returncode}) before "
                                          f"it answered; see {log}")
            if time.monotonic() > deadline:
                raise TrackingServerError(f"mlflow server did not answer at {uri} within "
                                          f"{timeout:.0f} s; see {log}")
            time.sleep(0.5)
        yield uri
    finally:
        _stop(proc)
