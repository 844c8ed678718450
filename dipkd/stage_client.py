"""The stage's side of the warm stage server (:mod:`dipkd.stage_server`): what
``pipeline/__init__.py`` runs before any stage script, kept apart from the server (and free of
heavy imports) because every stage imports it: editing the server reruns no stage.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

from .code_deps import RECORD_VAR

SOCKET_ENV = "DIPKD_STAGE_SERVER"      # the server's socket path, in the stages' environment
_HEADER = struct.Struct("!I")          # the length of the JSON request


def send_msg(sock: socket.socket, payload: dict, fds=()) -> None:
    data = json.dumps(payload).encode()
    sock.sendall(_HEADER.pack(len(data)))
    socket.send_fds(sock, [data], list(fds)) if fds else sock.sendall(data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("stage server: connection closed")
        buf += chunk
    return buf


def recv_msg(sock: socket.socket) -> tuple[dict, list[int]]:
    (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    data, fds, _flags, _addr = socket.recv_fds(sock, size, 3)
    while len(data) < size:
        data += _recv_exact(sock, size - len(data))
    return json.loads(data), list(fds)


def module_command(orig_argv) -> tuple[str, list[str]] | None:
    """``(module, args)`` of ``python -m module args...``, or None for any other form
    (interpreter options, ``-c``, a script path)."""
    if len(orig_argv) >= 3 and orig_argv[1] == "-m":
        return orig_argv[2], list(orig_argv[3:])
    return None


def delegate() -> None:
    """Run this ``python -m pipeline.<script>`` in the warm server and exit with its code (or
    die of the signal it died of); return (run here, as usual) when there is no server or
    it refuses."""
    path = os.environ.get(SOCKET_ENV)
    command = module_command(getattr(sys, "orig_argv", []))
    if not path or command is None or os.environ.get(RECORD_VAR):
        return
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        send_msg(sock, {"module": command[0], "args": command[1], "cwd": os.getcwd(),
                         "env": dict(os.environ), "executable": sys.executable},
                  fds=(0, 1, 2))
        reply = _recv_exact(sock, 4)
    except OSError:
        sock.close()
        return
    if reply == b"NOPE":
        sock.close()
        return

    def forward(signum, _frame):
        try:
            sock.sendall(bytes([signum]))
        except OSError:
            pass
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    try:
        (code,) = struct.unpack("!i", _recv_exact(sock, 4))
    except (OSError, ConnectionError):
        code = 1
    if code < 0:                     # the stage died of a signal: so does this process
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code if code >= 0 else 128 - code)


