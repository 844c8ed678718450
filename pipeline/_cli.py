"""Shared argument handling for the stage scripts: clear one-line errors, no tracebacks for
bad input."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dipkd import device_slots, launch
from dipkd.code_deps import record_loaded_modules
from dipkd.checkpoint import CorruptCheckpointError, UnsafeCheckpointError
from dipkd.config.params import (ParamsError, load_params, parse_modules, requested_processes,
                                 run_spec)
from dipkd.datasets.coco_layout import validate_layout
from dipkd.models.pretrained import PretrainedWeightsError


def run(main, description: str, *args_spec, scale_out: bool = False) -> None:
    """Parse the stage's arguments, load params.yaml and call ``main(params, args)``.

    ``scale_out=True`` (the training stages): with ``compute.gpus: N > 1`` the stage is not
    run here but re-executed in N processes under torchrun (:mod:`dipkd.launch`), after the
    names and the dataset are checked, so bad input still gives a one-line error; the exit
    code is torchrun's. Inside the workers (and with N <= 1) ``main`` runs as usual.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml")
    for names, kwargs in args_spec:
        parser.add_argument(*names, **kwargs)
    args = parser.parse_args()
    record_loaded_modules(Path(__file__).resolve().parents[1])   # tests only (code_deps)
    if scale_out and launch.in_worker():
        launch.die_with_launcher()
    if not launch.in_worker():      # torchrun's workers inherit their launcher's devices
        device_slots.acquire()      # a parallel repro's worker slot (dipkd.parallel_repro)
    try:
        params = load_params(args.params)
        if scale_out:
            processes = requested_processes(params)
            if launch.needs_launch(processes):
                _check_training_inputs(params, args)
                launch.check_devices(processes)
                sys.exit(launch.relaunch(processes))
        main(params, args)
    except (ParamsError, FileNotFoundError, ValueError, PretrainedWeightsError,
            CorruptCheckpointError, UnsafeCheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def _check_training_inputs(params, args) -> None:
    """Before launching workers: the dataset/detector(/seed) names and the dataset layout."""
    spec = run_spec(params, "student", args.dataset, args.detector, getattr(args, "seed", None))
    validate_layout(spec.dataset.root)


DATASET = (("--dataset",), dict(required=True))
DETECTOR = (("--detector",), dict(required=True))
SEED = (("--seed",), dict(type=int, default=None,
                          help="one of params.yaml's seeds (default: the first)"))
# A DIPKD variant run (Tables 3-5): switch combination and/or overridden method params.
MODULES = (("--modules",), dict(default=None, help="Table 3 modules on, e.g. sns_rit"))
SET = (("--set",), dict(action="append", default=[], metavar="KEY=VALUE",
                        help="override one of the method's params (e.g. tau=0.75)"))


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
