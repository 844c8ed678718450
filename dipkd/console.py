"""What a training stage shows on the terminal: one line when it starts, one when it ends and,
on a terminal, a live epoch / iteration bar while it trains. Everything else the stage's
process writes (mmengine's environment report, its config, hook order, weight-init lines,
deprecation warnings, our own ``[dipkd]`` notes) goes to the run's log file
(:attr:`dipkd.config.params.RunSpec.log_path`), which the test step also logs to MLflow as an
artifact. An error still shows its one line, followed by the log file's path.

``DIPKD_VERBOSE=1`` (``dipkd repro -v``) turns the capture off: the full log comes back to
the console and the progress bar goes away (mmengine's own lines show the progress).

The capture is done on the file descriptors (``os.dup2`` of 1 and 2), so it also takes what C
extensions and torchrun's workers (which inherit the descriptors) write.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

VERBOSE_ENV = "DIPKD_VERBOSE"
STAGE_LOGS = Path("runs") / "logs"   # the full output of what is not one run's (stages, servers)

_terminal: TextIO | None = None        # the console while a stage's output is captured
_terminal_err: TextIO | None = None    # and its stderr


def verbose() -> bool:
    """True when ``DIPKD_VERBOSE`` asks for the full log on the console."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def terminal() -> TextIO:
    """Where the stage's own lines go: the console, also while the rest is captured."""
    return _terminal if _terminal is not None else sys.stdout


def say(line: str) -> None:
    """One line on the console."""
    out = terminal()
    out.write(line + "\n")
    out.flush()


def progress_bar_wanted() -> bool:  # the bar: dipkd.progress.ProgressBarHook
    """A live bar only where someone watches: captured output and a console stderr that is a
    terminal (``dipkd repro`` reads the stages' stdout through a pipe, stderr stays the
    terminal)."""
    return _terminal_err is not None and _terminal_err.isatty()


def progress_stream() -> TextIO:
    """Where the live bar is drawn: the console's stderr."""
    return _terminal_err if _terminal_err is not None else sys.stderr


@contextmanager
def captured(log_path: Path | None):
    """Run the block with stdout and stderr appended to ``log_path``; the console stays
    reachable through :func:`terminal`. A failure inside prints one line and the log's path
    on the console (the traceback is in the log) and exits with the failure's code.
    Nothing is captured when ``log_path`` is None, when verbose, or when a capture is already
    on (a torchrun worker inherits its launcher's)."""
    global _terminal, _terminal_err
    if log_path is None or verbose() or _terminal is not None:
        yield
        return
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    console = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    console_err = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    with open(log_path, "a", buffering=1) as log:
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}\n")
        log.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        _terminal, _terminal_err = console, console_err
        try:
            yield
        except SystemExit as exc:
            if exc.code not in (0, None):
                _restore(saved)
                console_err.write(f"  full log: {log_path}\n")
            raise
        except KeyboardInterrupt:      # Ctrl-C stays Ctrl-C (exit 130 where it is handled)
            raise
        except BaseException as exc:   # the traceback to the log, one line to the console
            sys.stderr.flush()
            traceback.print_exc(file=log)
            _restore(saved)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            console_err.write(f"error: {type(exc).__name__}: {first}\n  full log: {log_path}\n")
            raise SystemExit(1) from None
        finally:
            _restore(saved)
            _terminal = _terminal_err = None
            console.close()
            console_err.close()
            for fd in saved:
                os.close(fd)


def _restore(saved) -> None:
    """Point stdout / stderr back at the console (idempotent)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)


def error(message: str) -> None:
    """An error's one line on the console's stderr, also while captured (the caller exits;
    :func:`captured` then adds the log's path)."""
    out = _terminal_err if _terminal_err is not None else sys.stderr
    out.write(message + "\n")
    out.flush()
