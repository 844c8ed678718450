"""Warm stage processes for ``dipkd repro``: every stage forked from one process that has
already imported torch, mmdet, mmcv's ops, MLflow and the pipeline.

A stage of ``dvc.yaml`` is ``python -m pipeline.<script> ...``: a fresh interpreter that
spends seconds importing the same libraries before it does anything (on the 2-core CPU machine
about a fifth of a smoke stage). ``dipkd repro`` starts one :func:`serve` process for the
duration of the repro and hands its socket to ``dvc repro`` in :data:`SOCKET_ENV`; the
package ``pipeline`` (``pipeline/__init__.py``, run first by ``python -m pipeline.<script>``)
then calls :func:`delegate`, which hands the command line, working directory, environment
and the three standard streams (their file descriptors, ``SCM_RIGHTS``) to the server. The
server forks; the child takes the streams, directory and environment, runs the script as
``__main__`` (:func:`runpy.run_module`) and exits with its code, which the server sends back
to the waiting ``python`` process, which exits with it. What DVC sees is unchanged: the same
command, output, exit code and files.

The same results: the server imports modules and nothing else (no torch operation, no
thread pool, no file or database opened), so a child starts as a fresh interpreter would
after its imports; the Runner seeds every generator itself. Thread settings come from the
stage's environment (``OMP_NUM_THREADS``, applied in the child). The child is in the server's
session, not the terminal's: Ctrl-C reaches the waiting ``python`` (in DVC's process group),
which passes SIGINT/SIGTERM on to the child; if that process dies, the child is ended.

A stage is run the ordinary way (no server) when the socket is absent or refuses it: another
interpreter, another working directory than the server's (a DVC queue's temporary copy, a
study's worktree: their code may differ from what the server imported), a command line with
interpreter options, or the module-recording mode of the tests (:mod:`dipkd.code_deps`).
``DIPKD_WARM_STAGES=0`` turns the server off in ``dipkd repro``.
"""
from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .code_deps import RECORD_VAR
from .stage_client import SOCKET_ENV, recv_msg

OFF_ENV = "DIPKD_WARM_STAGES"          # "0": dipkd repro starts no server
PRELOAD = ("torch", "torchvision", "cv2", "pycocotools.cocoeval", "mmengine.runner",
           "mmcv.ops", "mmdet.models", "mmdet.datasets", "mmdet.evaluation", "mlflow",
           "mlflow.store.tracking.sqlalchemy_store", "dipkd.mmdet_plugins",
           "dipkd.training", "dipkd.evaluation.run", "pandas", "matplotlib",
           "pipeline._cli")


def preload() -> None:
    """Import what every stage imports (modules only: nothing is run)."""
    import importlib
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)


def _accepts(request: dict, root: str) -> bool:
    return (request.get("executable") == sys.executable
            and os.path.realpath(request.get("cwd", "")) == root
            and isinstance(request.get("module"), str)
            and request["module"].startswith("pipeline."))


def _child(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """In the forked child: become the stage, run it and end with its exit code."""
    import threading
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.pop(SOCKET_ENV, None)      # a stage that starts python itself runs it plainly
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        import torch
        torch.set_num_threads(int(threads))
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT
                      else signal.SIG_DFL)

    def relay():     # signals from the waiting process; its end ends the stage
        while True:
            try:
                data = conn.recv(1)
            except OSError:
                data = b""
            if not data:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            os.kill(os.getpid(), data[0])
    threading.Thread(target=relay, daemon=True, name="stage-signal-relay").start()
    sys.argv = [request["module"], *request["args"]]
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    sys.stdin = open(0, "r", closefd=False)
    _exit_now(_run_stage(request["module"]))


def _run_stage(module: str) -> int:
    """Run ``module`` as ``__main__``; its exit code as python would give it (an uncaught
    KeyboardInterrupt: the traceback, then death by SIGINT)."""
    import runpy
    import traceback
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except KeyboardInterrupt:
        traceback.print_exc()
        _exit_now(0, signal.SIGINT)
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    except BaseException:            # noqa: B036  (as python: the traceback, exit code 1)
        traceback.print_exc()
        return 1
    return 0


def _exit_now(code: int, signum: int | None = None) -> None:
    """End the forked stage as python's exit does (its threads joined, exit handlers run,
    streams flushed) but without tearing down the modules it shares with the server: that
    teardown touches every object the server imported, each touch a copy-on-write page
    copy, and made a served stage slower than a fresh one (measured)."""
    import atexit
    import threading
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()                   # wait for non-daemon threads, as python's exit does
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if signum is not None:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    os._exit(code)


def _log(message: str) -> None:
    print(f"[stage-server] {message}", file=sys.stderr, flush=True)


def serve(path: str) -> int:
    """Serve stages on the Unix socket ``path`` until SIGTERM (a forked child runs its stage
    and ends in :func:`_exit_now`, never returning here)."""
    root = os.path.realpath(os.getcwd())
    signal.signal(signal.SIGINT, signal.SIG_IGN)        # Ctrl-C is the stages' business
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    preload()
    import gc
    gc.freeze()     # the imported objects out of the collector's reach: fewer page copies
    print("ready", flush=True)
    children: dict[int, socket.socket] = {}
    names: dict[int, str] = {}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    while not stop:
        try:
            ready, _, _ = select.select([listener], [], [], 0.2)
        except InterruptedError:
            ready = []
        for pid, conn in list(children.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                _log(f"{names.pop(pid)}: pid {pid} exit {code}")
                try:
                    conn.sendall(struct.pack("!i", code))
                except OSError:
                    pass
                conn.close()
                del children[pid]
        if not ready:
            continue
        conn, _ = listener.accept()
        try:
            request, fds = recv_msg(conn)
        except (OSError, ConnectionError, ValueError):
            conn.close()
            continue
        if len(fds) != 3 or not _accepts(request, root):
            for fd in fds:
                os.close(fd)
            _log(f"refused {request.get('module')} in {request.get('cwd')}")
            conn.sendall(b"NOPE")
            conn.close()
            continue
        conn.sendall(b"OKAY")
        pid = os.fork()
        if pid == 0:
            listener.close()
            for other in children.values():
                other.close()
            return _child(conn, request, fds)
        for fd in fds:
            os.close(fd)
        children[pid] = conn
        names[pid] = " ".join(["python -m", request["module"], *request["args"]])
        _log(f"{names[pid]}: pid {pid}")
    for pid in children:                 # stopped with stages still running: end them
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    listener.close()
    os.unlink(path)
    return 0


@contextmanager
def running(root: Path, env: dict, log: Path):
    """A stage server for the stages that ``dvc repro`` runs in ``root`` with ``env``: yields
    the environment to run it with (``env`` plus :data:`SOCKET_ENV`), or ``env`` itself when
    :data:`OFF_ENV` is ``0`` or the server did not start (the stages then start as usual).
    The server's own output goes to ``log``; it is stopped when the block ends."""
    if env.get(OFF_ENV) == "0" or env.get(RECORD_VAR):   # recording: every stage plainly
        yield env
        return
    tmp = tempfile.mkdtemp(prefix="dipkd-stages-")
    path = os.path.join(tmp, "socket")
    log.parent.mkdir(parents=True, exist_ok=True)
    server_env = {k: v for k, v in env.items() if k != SOCKET_ENV}
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "dipkd.stage_server", "--socket", path],
                                cwd=root, env=server_env, stdout=subprocess.PIPE, stderr=err,
                                stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        ready = proc.stdout.readline().strip() == "ready"
        yield {**env, SOCKET_ENV: path} if ready else env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(description="Serve dipkd's pipeline stages from one "
                                                 "warm process (dipkd repro starts it).")
    parser.add_argument("--socket", required=True)
    args = parser.parse_args(argv)
    return serve(args.socket)


if __name__ == "__main__":
    sys.exit(main())
