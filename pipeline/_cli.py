"""Shared argument handling for the stage scripts: clear one-line errors, no tracebacks for
bad input."""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from dipkd import console, device_slots, launch
from dipkd.code_deps import record_loaded_modules
from dipkd.checkpoint import CorruptCheckpointError, UnsafeCheckpointError
from dipkd.config.params import (DISTILLED, ROLES, ParamsError, distill_spec, load_params,
                                 parse_modules, requested_processes, run_spec)
from dipkd.datasets.coco_layout import validate_layout
from dipkd.models.pretrained import PretrainedWeightsError


STAGE_LOGS = console.STAGE_LOGS     # the full output of the stages that are not one run's


def run(main, description: str, *args_spec, scale_out: bool = False, then=None,
        console_lines=None, quiet: bool = False) -> None:
    """Parse the stage's arguments, load params.yaml and call ``main(params, args)``, then
    ``then(params, args)`` if given.

    ``console_lines(params, args)`` (the training stages) returns ``(log file, title)``: the
    stage then shows only ``title`` when it starts and ``title  <seconds> s  <what then
    returned>`` when it ends, everything else going to the log file (:mod:`dipkd.console`;
    ``DIPKD_VERBOSE=1`` shows it all). ``quiet=True`` (the other stages that run models:
    tables, figures, efficiency) captures their output into ``runs/logs/<script>.log`` the
    same way; what they want shown they write with :func:`dipkd.console.say`.

    ``scale_out=True`` (the training stages): with ``compute.gpus: N > 1`` the stage is not
    run here but re-executed in N processes under torchrun (:mod:`dipkd.launch`), after the
    names and the dataset are checked, so bad input still gives a one-line error; a failure
    exits with torchrun's code. Inside the workers (and with N <= 1) ``main`` runs as usual;
    ``then`` runs once, in this process, after ``main`` succeeded in every worker (the
    training stages' test of the exported model).
    """
    args = parser(description, *args_spec).parse_args()
    record_loaded_modules(Path(__file__).resolve().parents[1])   # tests only (code_deps)
    if scale_out and launch.in_worker():
        launch.die_with_launcher()
    if not launch.in_worker():      # torchrun's workers inherit their launcher's devices
        device_slots.acquire()      # a parallel repro's worker slot (dipkd.parallel_repro)
    with one_line_errors():
        params = load_params(args.params)
        log_file, title = (None, None)
        if console_lines is not None and not launch.in_worker():
            log_file, title = console_lines(params, args)
            if scale_out:               # bad input: its one line, before any log is opened
                _check_training_inputs(params, args)
            console.say(title)
        elif quiet:
            log_file = STAGE_LOGS / f"{main.__module__.rpartition('.')[2]}.log"
    start = time.monotonic()
    with console.captured(log_file), one_line_errors():
        result = _main_then(main, then, params, args, scale_out)
    if title is not None:
        console.say(f"{title}  {time.monotonic() - start:.0f} s"
                    + (f"  {result}" if result else ""))


@contextmanager
def one_line_errors():
    """Bad input (params, names, files, checkpoints) ends the stage with one line and exit
    code 2, no traceback (on the console also while the output is captured)."""
    try:
        yield
    except (ParamsError, FileNotFoundError, ValueError, PretrainedWeightsError,
            CorruptCheckpointError, UnsafeCheckpointError) as exc:
        console.error(f"error: {exc}")
        sys.exit(2)


def _main_then(main, then, params, args, scale_out: bool):
    """``main`` here or in torchrun's workers, then ``then`` once in this process; returns
    what ``then`` returned."""
    if scale_out:
        processes = requested_processes(params)
        if launch.needs_launch(processes):
            _check_training_inputs(params, args)
            launch.check_devices(processes)
            code = launch.relaunch(processes)
            if code or then is None:
                sys.exit(code)
            return then(params, args)
    main(params, args)
    if then is not None and not launch.in_worker():
        return then(params, args)
    return None


def parser(description: str, *args_spec) -> argparse.ArgumentParser:
    """The stage's argument parser: ``--params`` and the given ``(names, kwargs)`` specs."""
    out = argparse.ArgumentParser(description=description)
    out.add_argument("--params", default="params.yaml")
    for names, kwargs in args_spec:
        out.add_argument(*names, **kwargs)
    return out


def _check_training_inputs(params, args) -> None:
    """Before launching workers: the run's names (:func:`run_of`) and the dataset layout."""
    validate_layout(run_of(params, args).dataset.root)


def run_of(params, args):
    """The spec of the run :data:`RUN_ARGS` name (a teacher's seed is ``teacher_seed``, as
    dvc.yaml passes it)."""
    if args.role == DISTILLED:
        return distill_spec(params, args.method or "dipkd", args.dataset, args.detector,
                            args.seed, variant_overrides(args))
    if args.method or args.modules or args.set:
        raise ValueError(f"--method, --modules and --set are for --role {DISTILLED}, "
                         f"not --role {args.role}")
    return run_spec(params, args.role, args.dataset, args.detector, args.seed)


ROLE = (("--role",), dict(required=True, choices=(*ROLES, DISTILLED)))
METHOD = (("--method",), dict(default=None, help="the KD method of --role distilled "
                                                 "(default dipkd)"))
DATASET = (("--dataset",), dict(required=True))
DETECTOR = (("--detector",), dict(required=True))
SEED = (("--seed",), dict(type=int, default=None,
                          help="one of params.yaml's seeds (default: the first)"))
# A DIPKD variant run (Tables 3-5): other modules on and/or overridden method params.
MODULES = (("--modules",), dict(default=None, help="Table 3 modules on, e.g. sns_rit"))
SET = (("--set",), dict(action="append", default=[], metavar="KEY=VALUE",
                        help="override one of the method's params (e.g. tau=0.75)"))
RUN_ARGS = (ROLE, METHOD, DATASET, DETECTOR, SEED, MODULES, SET)   # one run, :func:`run_of`


def variant_overrides(args) -> dict:
    """The method-param overrides of ``--modules`` / ``--set`` (values kept as given: the
    run's name uses them as written, as DVC writes them into stage names and paths)."""
    overrides = parse_modules(args.modules) if args.modules else {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ParamsError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key] = value
    return overrides
