"""``dipkd doctor`` (also ``python -m dipkd.doctor``): the checks in order, one console line
each, the markdown report in ``--out`` and its full log (mmengine's and the libraries' own
output) beside it as ``<out>.log``. Exit code 0 when no check FAILED, 1 when one did, 2 for
bad input (params file, profile, device, check group)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .core import FAIL, Context, run_all

GROUPS = ("env", "sns", "kd", "train", "weights", "data")
CPU_NOTE = ("Run on the CPU: the CUDA path (mmcv's CUDA ops, SNS and the KD losses on a GPU, "
            "device memory and batch 8) was not exercised; run `dipkd doctor --device cuda:0` "
            "on the GPU machine.")


CODE_ROOT = Path(__file__).resolve().parents[2]     # the repository the doctor's code is in


class DoctorError(ValueError):
    """Bad input: one line, exit code 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The doctor's options (shared by ``dipkd doctor`` and ``python -m dipkd.doctor``)."""
    parser.add_argument("--device", default=None,
                        help="cpu or cuda[:N] (default: cuda:0 when CUDA is available, "
                             "else cpu)")
    parser.add_argument("--profile", default=None,
                        help="the profile of params.yaml whose sizes and settings are "
                             "checked (default: paper on CUDA, smoke on the CPU)")
    parser.add_argument("--out", default="reports/doctor.md",
                        help="markdown report (default: %(default)s; full log beside it)")
    parser.add_argument("--params", default="params.yaml",
                        help="params file; datasets are read from data/<name> beside it "
                             "(default: %(default)s)")
    parser.add_argument("--checks", default=",".join(GROUPS),
                        help=f"comma-separated groups to run, of {', '.join(GROUPS)} "
                             "(default: all)")


def resolve_device(name: str | None):
    """The torch device of ``--device`` (``cuda`` = ``cuda:0``); default cuda:0 when CUDA
    is available, else cpu."""
    import torch
    if name is None:
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DoctorError(f"--device {name!r}: expected cpu or cuda[:N]") from None
    if device.type not in ("cpu", "cuda"):
        raise DoctorError(f"--device {name!r}: expected cpu or cuda[:N]")
    return torch.device("cuda", 0) if device.type == "cuda" and device.index is None \
        else device


def load(params_path: str, profile: str | None, device) -> dict:
    """params.yaml with the profile to check set and validated."""
    from ..config.params import ParamsError, load_params, validate
    try:
        params = load_params(params_path)
        params["profile"] = profile or ("paper" if device.type == "cuda" else "smoke")
        validate(params)
    except ParamsError as exc:
        raise DoctorError(str(exc)) from None
    return params


def groups(text: str) -> list[str]:
    """The check groups of ``--checks``."""
    chosen = [g.strip() for g in text.split(",") if g.strip()]
    unknown = [g for g in chosen if g not in GROUPS]
    if unknown or not chosen:
        raise DoctorError(f"--checks {text!r}: groups are {', '.join(GROUPS)}")
    return chosen


def plan(params: dict, chosen: list[str]) -> list:
    """The checks of the chosen groups, in the order of :data:`GROUPS`."""
    from . import data, environment, method, train_step, weights
    found = []
    for group in GROUPS:
        if group not in chosen:
            continue
        found += {"env": environment.checks,
                  "sns": method.sns_checks,
                  "kd": method.kd_checks,
                  "train": lambda: train_step.checks(params),
                  "weights": lambda: weights.checks(params),
                  "data": lambda: data.checks(params)}[group]()
    return found


def register() -> None:
    """mmdet's modules and dipkd's (KD losses, distiller) in the registries."""
    from mmdet.utils import register_all_modules

    from .. import mmdet_plugins  # noqa: F401
    register_all_modules()


def run_doctor(args) -> int:
    """Run the checks of ``args``; 0 when nothing failed, 1 otherwise (2: bad input)."""
    from .. import console
    from . import report
    from .environment import device_label, device_problem, versions
    try:
        device = resolve_device(args.device)
        params = load(args.params, args.profile, device)
        chosen = groups(args.checks)
    except DoctorError as exc:
        console.error(f"error: {exc}")
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ctx = Context(params, device, Path(args.params).resolve().parent,
                  device_error=device_problem(device))
    console.say(f"dipkd doctor: device {device}, profile {params['profile']}, "
                f"checks {','.join(chosen)} (full log: {out.with_suffix('.log')})")
    with console.captured(out.with_suffix(".log")):
        register()
        results = run_all(plan(params, chosen), ctx,
                          lambda r: console.say(report.console_line(r)))
    total = report.summary(results, time.perf_counter() - start)
    note = CPU_NOTE if device.type == "cpu" else ""
    head = report.header(device_label(device), params["profile"], versions(), CODE_ROOT)
    out.write_text(report.markdown(results, head, total, note))
    console.say(f"dipkd doctor: {total}; report {out}" + (f"\n{note}" if note else ""))
    return 1 if any(r.status == FAIL for r in results) else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m dipkd.doctor``."""
    parser = argparse.ArgumentParser(prog="dipkd doctor", description=__doc__)
    add_arguments(parser)
    return run_doctor(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
