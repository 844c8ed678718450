"""``make study``: run a committed study definition through DVC and write its report.

A study is params.yaml with the overrides of a definition file (``studies/<name>.yaml``:
profile, seeds, datasets, detectors, baselines, ablation lists, compare pairs). It runs in a
git worktree (``.studies/<name>/``, with a DVC cache outside the clone shared by every study,
:func:`study_cache`, so finished stages are restored from the run-cache instead of trained
again) of the current commit, or of the
definition's ``commit`` (then with that commit's params.yaml under the overrides): a study
that runs in several parts pins its code, so that later commits do not retrain what its
earlier parts finished. It runs ``dvc repro train_teacher`` (so that another study that
shares the teachers finds them in the run-cache once they exist), then ``dvc repro tables``
(``--at-once N``: N stages at a time, :mod:`dipkd.concurrent_repro`);
a part killed mid-training resumes
from the last epoch checkpoint in the kept worktree. The wall time is summed over the parts
(:class:`Parts`),
and its MLflow runs go to this repository's store with the tag ``study=<name>``. The report
goes to ``reports/studies/<name>/``:

- ``README.md``: date, commit, machine, wall time, the ship sizes trained on beside SSDD's
  (:func:`dipkd.datasets.ship_sizes.size_section`), the tables, the paper's effects against
  the study's resolution (:mod:`dipkd.reports.resolution`) and what each KD term did in
  training (:mod:`dipkd.reports.kd_grad_summary`, from the runs' MLflow metrics);
- ``table{1..5}.{md,csv}`` as the tables stage wrote them (with Δ vs student and its CI),
  and ``compare.{md,csv}``: the paired comparisons of the study's ``compare`` pairs;
- ``curves.png`` + ``curves.json``: validation mAP and training loss per epoch of every run
  (the figure: one line per run group, the mean over its seeds, the band their range; the
  definition's ``reference_curves``, ``{label: path of another measurement's curves.json}``,
  drawn dashed beside them);
- ``params.yaml``: the exact params the study ran with.

Nothing is written into ``reports/studies/<name>/`` unless the whole run succeeded.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TABLE_FORMATS = ("md", "csv")    # of each table in reports/tables/, copied into the report


def _run(cmd, cwd, env=None) -> None:
    print(f"[study] $ {' '.join(map(str, cmd))}", flush=True)
    subprocess.run(cmd, cwd=cwd, env=env, check=True)


def _run_at_once(worktree: Path, env: dict, at_once: int) -> None:
    """``dvc repro tables`` with ``at_once`` stages at a time (every DVC line shown, marked
    with its stage)."""
    from dipkd.concurrent_repro import run
    from dipkd.parallel_repro import restrict_to, stage_graph
    print(f"[study] dvc repro tables, {at_once} stages at a time", flush=True)
    code = run(worktree, restrict_to(stage_graph(worktree), ["tables"]), env, at_once,
               sys.stdout, verbose=True)
    if code != 0:
        raise subprocess.CalledProcessError(code, f"dvc repro tables (--at-once {at_once})")


def _git(*args, cwd=ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def prepare_worktree(name: str, params: dict, worktree: Path, commit: str = "HEAD") -> None:
    """A detached worktree of ``commit`` at ``worktree`` with the study's params.yaml, using
    the studies' DVC cache (:func:`study_cache`). An existing worktree of the same commit is
    kept (with the work dirs of a stage that a killed part left half-trained: it resumes from
    its last epoch checkpoint); another is replaced."""
    sha = _git("rev-parse", f"{commit}^{{commit}}")
    if worktree.exists():
        current = subprocess.run(["git", "rev-parse", "HEAD"], cwd=worktree,
                                 capture_output=True, text=True).stdout.strip()
        if current != sha:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT,
                           capture_output=True)
            shutil.rmtree(worktree, ignore_errors=True)
    if not worktree.exists():
        worktree.parent.mkdir(parents=True, exist_ok=True)
        _run(["git", "worktree", "add", "--detach", str(worktree), sha], ROOT)
    (worktree / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    from dipkd.dvc_locks import clear_torn_rwlock
    if clear_torn_rwlock(worktree):     # the last part was killed while DVC wrote it
        print(f"[study] removed {worktree}/.dvc/tmp/rwlock, torn by a killed part", flush=True)
    _run(["dvc", "cache", "dir", "--local", str(study_cache())], worktree)


def study_cache() -> Path:
    """The DVC cache (and run-cache) of every study: outside the clone, like setup's wheel
    cache (``$DIPKD_STUDY_CACHE``, default ``~/.cache/dipkd-repro/dvc-cache``), so that the
    parts of a study run in later sessions, or from another clone on the same machine,
    restore what earlier parts trained."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / \
        "dipkd-repro" / "dvc-cache"
    path = Path(os.environ.get("DIPKD_STUDY_CACHE") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


class Parts:
    """The study's wall time over the parts it ran in (``.studies/<name>.parts.json``: start
    and last-seen time of each ``make study`` run, the last seen refreshed every minute, so a
    part killed at the end of a session still counts up to its last minute).

    A part may also carry ``paused_s`` (seconds) and ``paused_why``: time the study's
    processes were stopped (SIGSTOP, e.g. to measure something else on an idle machine), which
    is not counted; whoever stops a study writes them into its part."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.parts = json.loads(path.read_text()) if path.is_file() else []
        self.parts.append({"start": time.time(), "seen": time.time()})
        self._save()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._thread.start()

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.parts, indent=1))
        os.replace(tmp, self.path)

    def _tick(self) -> None:
        while not self._stop.wait(60):
            self.parts[-1]["seen"] = time.time()
            self._save()

    def close(self) -> tuple[float, int]:
        """Stop counting; the total wall time (s, pauses not counted) and the number of
        parts."""
        self._stop.set()
        self.parts[-1]["seen"] = time.time()
        self._save()
        return (sum(p["seen"] - p["start"] - p.get("paused_s", 0) for p in self.parts),
                len(self.parts))

    def paused(self) -> list[tuple[float, str]]:
        """``(seconds, why)`` of every pause recorded in the parts."""
        return [(p["paused_s"], p.get("paused_why", "")) for p in self.parts
                if p.get("paused_s")]


def curves(worktree: Path) -> dict:
    """``{run: {"epoch": [...], "mAP": [...], "loss": [...]}}`` from the training stages'
    ``plots/<role>/<run>.json`` (see :mod:`dipkd.tracking.curves`)."""
    out = {}
    for path in sorted((worktree / "plots").rglob("*.json")):
        rows = json.loads(path.read_text())   # dipkd.tracking.curves: a list of epochs
        name = str(path.relative_to(worktree / "plots").with_suffix(""))
        out[name] = {k: [r.get(k) for r in rows] for k in ("epoch", "mAP", "loss")}
    return out


def curve_groups(data: dict) -> dict:
    """``curves`` grouped over seeds: ``{group: {key: {epoch: [value per seed]}}}``, the group
    a run's name without its ``-seed<N>`` (``distilled/dipkd/ssdd-faster_rcnn``)."""
    out: dict = {}
    for name, c in data.items():
        group = re.sub(r"-seed\d+$", "", name)
        for key in ("mAP", "loss"):
            cells = out.setdefault(group, {}).setdefault(key, {})
            for epoch, value in zip(c["epoch"], c[key]):
                if epoch is not None and value is not None:
                    cells.setdefault(epoch, []).append(value)
    return out


def reference_runs(reference: dict) -> dict:
    """The definition's ``reference_curves`` (``{label: a curves.json of another measurement,
    relative to the repository}``) as ``{label: (path, {"epoch": [...], "mAP": [...]})}``,
    each file's first run: a curve drawn beside the study's own (the plateau measurement that
    chose the long regime's epochs)."""
    out = {}
    for label, rel in reference.items():
        path = ROOT / rel
        if not path.is_file():
            raise FileNotFoundError(f"reference_curves: {rel}: no such file")
        out[label] = (rel, next(iter(json.loads(path.read_text()).values())))
    return out


def plot_curves(data: dict, path: Path, reference: dict | None = None) -> None:
    """One line per run group: the mean over its seeds, the band their minimum to maximum;
    each reference curve (``{label: (path, curve)}``, :func:`reference_runs`) dashed in
    black shades."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax in axes:
        ax.set_prop_cycle(color=plt.cm.tab20.colors)      # a colour for each of 20 groups
    for group, keys in sorted(curve_groups(data).items()):
        for ax, key in zip(axes, ("mAP", "loss")):
            cells = sorted(keys[key].items())
            if not cells:
                continue
            epochs = [e for e, _ in cells]
            line, = ax.plot(epochs, [sum(v) / len(v) for _, v in cells], marker="o", ms=3,
                            lw=1, label=group)
            if any(len(v) > 1 for _, v in cells):
                ax.fill_between(epochs, [min(v) for _, v in cells], [max(v) for _, v in cells],
                                color=line.get_color(), alpha=0.15, lw=0)
    for i, (label, (_, c)) in enumerate((reference or {}).items()):
        pts = [(e, v) for e, v in zip(c["epoch"], c["mAP"]) if v is not None]
        axes[0].plot(*zip(*pts), ls="--", marker=".", ms=3, lw=1, color=str(0.1 + 0.3 * i),
                     label=label)
    axes[0].set(title="validation mAP (mean over seeds; band: min to max)", xlabel="epoch")
    axes[1].set(title="training loss (mean per epoch)", xlabel="epoch")
    axes[0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def kd_terms_section(name: str) -> str:
    """The study's KD-term gradient ratios from its MLflow runs
    (:mod:`dipkd.reports.kd_grad_summary`)."""
    import mlflow

    from dipkd.reports.kd_grad_summary import section
    from dipkd.tracking.mlflow_runs import tracking_uri
    client = mlflow.tracking.MlflowClient(tracking_uri=tracking_uri())
    return section(client, [e.experiment_id for e in client.search_experiments()], name)


def _pauses(paused) -> str:
    """The README's note on the pauses not counted in the wall time."""
    if not paused:
        return ""
    why = "; ".join(dict.fromkeys(w for _, w in paused if w))
    return (f"; not counted: {sum(s for s, _ in paused) / 60:.1f} min in {len(paused)} "
            f"pause(s){': ' + why if why else ''}")


def write_report(name: str, worktree: Path, params: dict, out_dir: Path, wall: float,
                 commit: str, parts: int = 1, paused: list = (),
                 reference: dict | None = None) -> None:
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    from dipkd.reports.common import TABLES_DIR
    from dipkd.reports.tables import TABLES
    for table in TABLES:
        for ext in TABLE_FORMATS:
            shutil.copy2(worktree / TABLES_DIR / f"{table.name}.{ext}", tmp)
    data = curves(worktree)
    (tmp / "curves.json").write_text(json.dumps(data, indent=1))
    reference = reference or {}
    plot_curves(data, tmp / "curves.png", reference)
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    import torch

    from dipkd.machine import cpu_model
    head = (f"# Study `{name}`\n\n"
            f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n"
            f"- commit: `{commit}`\n"
            f"- machine: {cpu_model()}, {os.cpu_count()} cores, "
            f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}"
            f"; torch {torch.__version__}, Python {platform.python_version()}\n"
            f"- wall time: {wall / 60:.1f} min over {parts} part(s) (`make study "
            f"STUDY={name}`, each run of it restoring from DVC's run-cache what an earlier "
            f"part finished{_pauses(paused)})\n"
            f"- exact params: `params.yaml` here; training curves: `curves.png`/`curves.json`\n"
            + "".join(f"- reference curve, dashed in `curves.png`: {label} (`{rel}`)\n"
                      for label, (rel, _) in reference.items()) +
            f"- MLflow: runs tagged `study={name}` (`tags.study = '{name}'`)\n\n")
    tables = "\n".join((tmp / f"{table.name}.md").read_text() for table in TABLES)
    from dipkd.datasets.ship_sizes import size_section
    from dipkd.reports.resolution import section as resolution_section
    (tmp / "README.md").write_text(head + size_section(params, worktree / "data") + tables
                                   + "\n" + resolution_section(params, tmp)
                                   + kd_terms_section(name))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="study", help="studies/<name>.yaml")
    parser.add_argument("--definition", type=Path, default=None,
                        help="the overrides file (default: studies/<name>.yaml)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "studies")
    parser.add_argument("--worktree", type=Path, default=None,
                        help="where to run (default: .studies/<name>)")
    parser.add_argument("--at-once", type=int, default=1, metavar="N",
                        help="train N runs at a time (dipkd.concurrent_repro; with "
                             "OMP_NUM_THREADS set, each keeps that many threads, so the runs' "
                             "numbers do not depend on N)")
    args = parser.parse_args(argv)
    definition = args.definition or ROOT / "studies" / f"{args.name}.yaml"
    if not definition.is_file():
        print(f"error: {definition}: study definition not found", file=sys.stderr)
        return 2
    overrides = yaml.safe_load(definition.read_text()) or {}
    commit = _git("rev-parse", f"{overrides.pop('commit', 'HEAD')}^{{commit}}")
    try:                        # {label: curves.json path} -> {label: (path, its curve)}
        reference = reference_runs(overrides.pop("reference_curves", None) or {})
    except (FileNotFoundError, ValueError, StopIteration) as exc:
        print(f"error: {definition}: {exc or 'reference_curves: an empty curves file'}",
              file=sys.stderr)
        return 2
    base = yaml.safe_load(_git("show", f"{commit}:params.yaml"))
    sys.path.insert(0, str(ROOT))
    from dipkd.config.params import merged, validate
    params = merged(base, overrides)
    from dipkd.reports.pairs import check_pairs
    try:
        validate(params)
        check_pairs(params)     # `compare` names runs of this study: known before it trains
    except ValueError as exc:   # a ParamsError, or a `compare` pair this study cannot run
        print(f"error: {definition}: {exc}", file=sys.stderr)
        return 2
    worktree = args.worktree or ROOT / ".studies" / args.name
    parts = Parts(worktree.with_name(f"{worktree.name}.parts.json"))
    prepare_worktree(args.name, params, worktree, commit)
    env = dict(os.environ, DIPKD_STUDY=args.name, DIPKD_STORE_ROOT=str(ROOT))
    from dipkd import stage_server     # warm stages, served from the worktree's own code
    with stage_server.running(worktree, env, worktree / "runs" / "logs" /
                              "stage_server.log") as env:
        # the teachers first: a study started beside this one (another regime, the same
        # teacher) then finds them in the run-cache instead of training its own copy
        _run(["dvc", "repro", "train_teacher"], worktree, env)
        if args.at_once > 1:
            _run_at_once(worktree, env, args.at_once)
        else:
            _run(["dvc", "repro", "tables"], worktree, env)
    wall, count = parts.close()
    write_report(args.name, worktree, params, args.out / args.name, wall, commit, count,
                 parts.paused(), reference)
    print(f"[study] report: {args.out / args.name}/README.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
