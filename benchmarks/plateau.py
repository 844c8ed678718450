"""Where a profile's runs stop improving (issue 26): the validation curve of a run trained at
a constant learning rate for many epochs, and the first epoch from which two successive
evaluations differ by less than ``--tolerance`` mAP points (1 by default), the length of the
study's long regime.

Each role (``student``, ``teacher``) is trained as its stage trains it
(:func:`dipkd.training.train`, the profile's data, model and batch) in a scratch workspace,
except for its schedule: ``--epochs`` epochs, the lr constant after warm-up (the only
milestone at the last epoch), a validation every ``--val-interval`` epochs. The long regime
then takes the plateau epoch ``E`` with the paper's lr steps scaled to it (16 and 20 of 24:
``round(2E/3)``, ``round(5E/6)``), and its own curves show whether the students are flat at
the end.

    python benchmarks/plateau.py --profile study --roles student teacher --epochs 30 \
        --val-interval 2 --out reports/studies/plateau

With ``--milestones`` the lr steps x0.1 at those epochs instead (the long regime's schedule),
and a validation every epoch shows whether the run is flat at its end:

    python benchmarks/plateau.py --profile study --epochs 16 --milestones 11 13 \
        --val-interval 1 --out reports/studies/plateau-steps

writes ``curves.json`` (per role: epoch, mAP, loss), ``curves.png`` and ``README.md`` (the
rule, the plateau epoch per role, the machine, the wall time) into ``--out``; roles measured
by separate processes into one ``--out`` are merged there (one thread each on two cores is
faster than one run after the other with two).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from step_profile import scratch_workspace  # noqa: E402


def constant_lr(params: dict, profile: str, epochs: int, val_interval: int,
                milestones: list[int] | None = None) -> dict:
    """``params`` with every schedule entry of ``profile`` (the teacher's too) at ``epochs``
    epochs, its only lr step at the last one (or at ``milestones``), validated every
    ``val_interval`` epochs."""
    prof = params["profiles"][profile]
    for per_dataset in prof["schedule"].values():
        for entry in per_dataset.values():
            entry.update(epochs=epochs, milestones=list(milestones or [epochs]))
            entry.pop("teacher", None)
    prof["train"]["val_interval"] = val_interval
    return params


def plateau_epoch(epochs: list[int], maps: list[float], tolerance: float,
                  stable: bool = True) -> int | None:
    """The first evaluated epoch whose mAP differs from the previous evaluation's by less
    than ``tolerance`` (mAP in [0, 1], tolerance in points); with ``stable``, only one from
    which every later pair does too. None when there is none."""
    points = [(e, m) for e, m in zip(epochs, maps) if m is not None]
    close = [abs(points[j][1] - points[j - 1][1]) * 100 < tolerance
             for j in range(1, len(points))]
    for i in range(len(close)):
        if close[i] and (not stable or all(close[i:])):
            return points[i + 1][0]
    return None


def train_curve(params: dict, role: str) -> dict:
    from dipkd.config.params import run_spec
    from dipkd.training import train
    spec = run_spec(params, role, "ssdd", params["detectors"][0])
    t0 = time.perf_counter()
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        train(spec)
    rows = json.loads(Path(spec.curves_path).read_text())
    return {"epoch": [r["epoch"] for r in rows], "mAP": [r.get("mAP") for r in rows],
            "loss": [r.get("loss") for r in rows], "seconds": time.perf_counter() - t0}


def plot(curves: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for role, c in curves.items():
        pts = [(e, m * 100) for e, m in zip(c["epoch"], c["mAP"]) if m is not None]
        ax.plot(*zip(*pts), marker="o", label=role)
        if c.get("plateau"):
            ax.axvline(c["plateau"], ls=":", color=ax.lines[-1].get_color())
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation mAP (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="study")
    parser.add_argument("--roles", nargs="+", default=["student"],
                        choices=["student", "teacher"])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--val-interval", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=1.0, help="mAP points")
    parser.add_argument("--milestones", type=int, nargs="+", default=None,
                        help="epochs where the lr steps x0.1 (default: constant lr)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import torch
    from dipkd.config.params import load_params
    from dipkd.machine import cpu_model
    params = load_params(str(REPO / "params.yaml"))
    params["profile"] = args.profile
    if args.milestones and not all(0 < m <= args.epochs for m in args.milestones):
        parser.error(f"--milestones must lie in 1..{args.epochs}")
    constant_lr(params, args.profile, args.epochs, args.val_interval, args.milestones)
    curves = {}
    with scratch_workspace(params, args.profile):
        for role in args.roles:
            c = train_curve(params, role)
            c["plateau"] = plateau_epoch(c["epoch"], c["mAP"], args.tolerance)
            c["first_close"] = plateau_epoch(c["epoch"], c["mAP"], args.tolerance, False)
            curves[role] = c
            print(f"[plateau] {role}: plateau at epoch {c['plateau']} "
                  f"({c['seconds'] / 60:.1f} min)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / ".lock", "w") as lock:     # roles measured by parallel processes
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = args.out / "curves.json"
        if merged.exists():
            curves = {**json.loads(merged.read_text()), **curves}
        merged.write_text(json.dumps(curves, indent=1))
        plot(curves, args.out / "curves.png")
        write_readme(args, curves, cpu_model(), torch.get_num_threads())
    (args.out / ".lock").unlink(missing_ok=True)


def write_readme(args, curves: dict, cpu: str, threads: int) -> None:
    lines = [f"# Plateau of the `{args.profile}` profile", "",
             f"- measured {time.strftime('%Y-%m-%d')} on {cpu} ({os.cpu_count()} cores, "
             f"{threads} torch thread(s) per run), Python {platform.python_version()}",
             f"- `python benchmarks/plateau.py --profile {args.profile} --roles "
             f"{' '.join(curves)} --epochs {args.epochs} --val-interval "
             f"{args.val_interval} --tolerance {args.tolerance:g}"
             + (f" --milestones {' '.join(map(str, args.milestones))}" if args.milestones else "")
             + f" --out {args.out}`",
             f"- each run: the profile's data, model and batch on ssdd; {args.epochs} epochs "
             + (f"with the lr stepped x0.1 at epochs {', '.join(map(str, args.milestones))}"
                if args.milestones else "at a constant lr")
             + f" after warm-up; validation every {args.val_interval} epochs",
             f"- plateau: the first evaluation from which every two successive evaluations "
             f"differ by less than {args.tolerance:g} mAP point; first close: the first "
             f"evaluation within {args.tolerance:g} point of the one before", "",
             "| role | plateau epoch | first close | mAP there (%) | last mAP (%) | wall (min) |",
             "|---|---|---|---|---|---|"]
    for role, c in curves.items():
        at = dict(zip(c["epoch"], c["mAP"])).get(c["plateau"])
        last = [m for m in c["mAP"] if m is not None][-1]
        lines.append(f"| {role} | {c['plateau'] or 'none'} | {c.get('first_close') or 'none'} | "
                     f"{'' if at is None else f'{at * 100:.1f}'} | {last * 100:.1f} | "
                     f"{c['seconds'] / 60:.1f} |")
    lines += ["", "Validation mAP per epoch:", "",
              "| epoch | " + " | ".join(curves) + " |", "|---|" + "---|" * len(curves)]
    for i, epoch in enumerate(next(iter(curves.values()))["epoch"]):
        cells = [c["mAP"][i] for c in curves.values()]
        if all(m is None for m in cells):
            continue
        lines.append(f"| {epoch} | " + " | ".join("" if m is None else f"{m * 100:.1f}"
                                                 for m in cells) + " |")
    (args.out / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
