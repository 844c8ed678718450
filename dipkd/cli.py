"""The ``dipkd`` command (``[project.scripts]``; also ``python -m dipkd.cli``).

    dipkd infer MODEL IMAGE_OR_DIR... --out DIR [--score-thr 0.3] [--overlap 0.2] ...
    dipkd compare [--experiment NAME] [--filter "tags.tables LIKE '%table3%'"] [--metrics ...]
    dipkd efficiency [ARGS...]          (the arguments of dipkd.efficiency, --help included)
    dipkd repro [-v] [--at-once N | --jobs N [--keep-experiments]] [TARGET...]
    dipkd repro --executor slurm [--jobs N] [--slurm KEY=VALUE ...] [TARGET...]
    dipkd doctor [--device cuda:0|cpu] [--profile paper] [--out reports/doctor.md]

``infer``: :mod:`dipkd.inference.infer`. ``compare``: the table of :mod:`pipeline.compare`
(the same function, :func:`compare`, and the same options, :data:`COMPARE_ARGUMENTS`).
``efficiency``: every argument after it goes to ``dipkd.efficiency.main``. ``repro``:
:mod:`dipkd.local_repro` (``--at-once N`` stages at a time: :mod:`dipkd.concurrent_repro`),
:mod:`dipkd.parallel_repro` (``--jobs N``), :mod:`dipkd.slurm.repro` (``--executor slurm``).

Errors are one line on stderr: exit code 2 for bad input (a missing or unreadable model, bad
options, a params file that does not load), 1 when some images of ``infer`` could not be read
(the others are processed). Heavy modules (torch, mmdet, mlflow) are imported inside the
handlers, so ``--help`` is quick.
"""
from __future__ import annotations

import argparse
import os
import sys

INFER_EPILOG = """\
examples:
  dipkd infer models/distilled/ssdd/faster_rcnn/run.pth scene.tif --out out/
  dipkd infer model.pth images/ big_scene.png --out out/ --score-thr 0.5 --overlap 0.25

MODEL is an exported checkpoint (models/<role>/.../<run>.pth, dipkd.export): its mmdet
config is read from the checkpoint (or the <run>.py beside it). Images larger than the
model's training scale (the Resize scale of its test pipeline) are cut into overlapping
tiles of that size at native resolution (--tile-size W H to choose another size, e.g. the
training images' own size when training enlarged them); the tiles' detections are merged
class by class: --merge nmm (default) joins the partial boxes of a ship cut by tile borders
into one enclosing box (greedy non-maximum merging, as SAHI: boxes whose intersection
over the smaller box is >= --merge-threshold), --merge nms keeps the best box of each
overlapping pair (IoU >= --nms-iou) and so keeps partial boxes.
Inputs: png, jpg, tif/tiff, bmp files or directories of them; 8-bit and 16-bit grayscale
(16-bit: 0.5-99.5 percentile stretch to 8 bits), RGB, RGBA (alpha dropped).
Outputs in --out: detections.json (COCO results list: image_id, file_name, bbox [x,y,w,h],
score, category_id), images.json (the images the ids refer to, failures, settings) and
<image stem>.png with the boxes drawn.
Exit code: 0; 1 if an image could not be read (one line names it, the others go on);
2 for a missing/unreadable model or bad options."""

# The options of `dipkd compare` and `python -m pipeline.compare` (pipeline._cli.run format).
COMPARE_ARGUMENTS = (
    (("--experiment",), dict(default=None,
                             help="MLflow experiment (default: the active profile's, "
                                  "<mlflow.experiment>/<profile> of params.yaml, else "
                                  "dipkd-repro/smoke)")),
    (("--filter",), dict(default="", help="an MLflow search filter, e.g. "
                                          "\"tags.tables LIKE '%%table3%%'\"")),
    (("--metrics",), dict(nargs="+", default=["mAP", "AP50", "mAR"],
                          help="test metrics to show, mean and std over seeds "
                               "(default: %(default)s)")),
)


def compare(params: dict, args) -> None:
    """Print the table of the evaluated runs in the MLflow store (``MLFLOW_TRACKING_URI`` or
    the repository's ``mlflow.db``): final test metrics per configuration, mean +- std over
    seeds (:func:`dipkd.tracking.compare.compare_table`). ``ValueError`` for an unknown
    experiment."""
    from dipkd.config.params import experiment_name
    from dipkd.tracking.compare import compare_table, runs_frame

    experiment = args.experiment or (experiment_name(params) if params else "dipkd-repro/smoke")
    table = compare_table(runs_frame(experiment, args.filter), metrics=args.metrics)
    if table.empty:
        print(f"no evaluated runs in experiment {experiment!r}"
              + (f" matching {args.filter!r}" if args.filter else ""))
        return
    print(table.to_markdown(index=False, floatfmt=".1f", missingval="-"))


def build_parser() -> argparse.ArgumentParser:
    from dipkd.inference.tiling import DEFAULT_MERGE, DEFAULT_MERGE_THRESHOLD, MERGE_METHODS

    parser = argparse.ArgumentParser(
        prog="dipkd",
        description="DIPKD reproduction: run exported SAR ship detectors on images and large "
                    "scenes (infer), compare the runs in the MLflow store (compare), measure "
                    "teacher/student efficiency (efficiency).",
        epilog="`dipkd COMMAND --help` describes each command.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    infer = sub.add_parser(
        "infer", help="detect ships in images/large scenes: COCO JSON and annotated PNGs",
        description="Detect ships with an exported model in images and large SAR scenes\n"
                    "(tiled at the model's scale, tiles merged); write COCO-style JSON and\n"
                    "PNGs with the boxes drawn.",
        epilog=INFER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    infer.add_argument("model", metavar="MODEL", help="exported model checkpoint (.pth)")
    infer.add_argument("inputs", metavar="IMAGE_OR_DIR", nargs="+",
                       help="image files and/or directories of images")
    infer.add_argument("--out", required=True, metavar="DIR",
                       help="output directory (created if needed)")
    infer.add_argument("--score-thr", type=float, default=0.3, metavar="S",
                       help="keep (JSON) and draw (PNG) detections with score >= S "
                            "(default: %(default)s)")
    infer.add_argument("--overlap", type=float, default=0.2, metavar="R",
                       help="overlap of neighbouring tiles, fraction of the tile size, in "
                            "[0, 1) (default: %(default)s)")
    infer.add_argument("--merge", choices=MERGE_METHODS, default=DEFAULT_MERGE,
                       help="how the tiles' detections are merged: nmm (greedy non-maximum "
                            "merging, one box per cut ship) or nms (default: %(default)s)")
    infer.add_argument("--merge-threshold", type=float, default=DEFAULT_MERGE_THRESHOLD,
                       metavar="IOS",
                       help="--merge nmm: merge boxes whose intersection over the smaller "
                            "box is >= IOS (default: %(default)s)")
    infer.add_argument("--nms-iou", type=float, default=0.5, metavar="IOU",
                       help="--merge nms: IoU threshold of the class-wise NMS "
                            "(default: %(default)s)")
    infer.add_argument("--tile-size", type=int, nargs=2, default=None, metavar=("W", "H"),
                       help="tile size in scene pixels (default: the model's training scale; "
                            "images that fit it are run whole)")
    infer.add_argument("--device", default="cpu",
                       help="cpu or cuda[:N] (default: %(default)s)")
    infer.add_argument("--batch-size", type=int, default=1, metavar="N",
                       help="tiles per forward pass (default: %(default)s)")
    infer.set_defaults(handler=_infer)

    comp = sub.add_parser(
        "compare", help="table of the runs in the MLflow store (python -m pipeline.compare)",
        description="Print a table of the evaluated runs in the MLflow store "
                    "(MLFLOW_TRACKING_URI or the repository's mlflow.db): final test metrics "
                    "per configuration, mean +- std over seeds.",
        epilog="example: dipkd compare --filter \"tags.tables LIKE '%table3%'\" "
               "--metrics mAP APs APm APl")
    comp.add_argument("--params", default=None,
                      help="params file for the default experiment (default: params.yaml "
                           "when present)")
    for names, kwargs in COMPARE_ARGUMENTS:
        comp.add_argument(*names, **kwargs)
    comp.set_defaults(handler=_compare)

    rep = sub.add_parser(
        "repro", help="the whole pipeline: one line per stage (make repro), N stages at "
                      "a time on N GPUs (or CPU workers) through DVC's queue (--jobs N), or "
                      "one SLURM job per run (--executor slurm)",
        description="Run `dvc repro` of this repository. Without --jobs: in this "
                    "workspace, --at-once N stages at a time (default 2 without a GPU), "
                    "with one progress line per stage and each run's full log in its log "
                    "file (dipkd/local_repro.py; -v shows everything). "
                    "With --jobs N: up to N runs at once: "
                    "independent stages are queued as DVC experiments (dvc exp run --queue), "
                    "run by `dvc queue start -j N`, and restored in the workspace from DVC's "
                    "run-cache; then the tables are built. Each run takes a worker slot and "
                    "its own GPU(s) (compute.gpus per run), shown in its log and in the MLflow "
                    "tags gpu/worker_slot. Needs a git commit (DVC experiments start from one). "
                    "With --executor slurm: one SLURM batch job per run, each after the jobs "
                    "it needs (--dependency=afterok), resources from params.yaml's slurm: block "
                    "and --slurm KEY=VALUE, MLflow runs through a tracking server, then the "
                    "workspace's dvc repro restores every run from the run-cache and builds the "
                    "tables (dipkd/slurm/; docs/gpus.md).",
        epilog="examples: `dipkd repro` (make repro); `dipkd repro -v tables`; "
               "`dipkd repro --jobs 8` (make repro-parallel JOBS=8); "
               "`dipkd repro --jobs 4 tables` (the tables and their runs, not the figures); "
               "`dipkd repro --executor slurm --slurm partition=gpu --slurm time=12:00:00` "
               "(make repro-slurm)")
    rep.add_argument("targets", metavar="TARGET", nargs="*",
                     help="stages to build, with what they need (as `dvc repro TARGET`; a "
                          "foreach group name covers its members); default: all")
    rep.add_argument("--jobs", "-j", type=int, default=None,
                     help="runs at once through DVC's queue: one per GPU (per compute.gpus "
                          "GPUs), or CPU workers; default: one stage at a time, no queue. "
                          "With --executor slurm: at most N jobs in SLURM's queue at a time "
                          "(default: all at once)")
    rep.add_argument("--at-once", type=int, default=None, metavar="N",
                     help="without --jobs: N stages at a time in this workspace, each with "
                          "cores/N threads (dipkd/concurrent_repro.py); default: 2 on a "
                          "machine without CUDA and with 2+ cores, else 1")
    rep.add_argument("--executor", choices=("local", "slurm"), default="local",
                     help="local: this machine (default); slurm: one SLURM job per run")
    rep.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                     help="--executor slurm: override a key of params.yaml's slurm: block for "
                          "this repro (partition, account, gres, cpus, mem, time, extra, "
                          "stages.<group>.<key>; VALUE as YAML, e.g. gres=null); repeatable")
    rep.add_argument("--verbose", "-v", action="store_true",
                     help="every line of DVC and of the stages (DIPKD_VERBOSE=1)")
    rep.add_argument("--keep-experiments", action="store_true",
                     help="keep the queued DVC experiments (dvc exp show) afterwards")
    rep.add_argument("--poll", type=float, default=None, help=argparse.SUPPRESS)
    rep.set_defaults(handler=_repro)

    doc = sub.add_parser(
        "doctor", help="check on this device everything a training run touches (a few "
                       "minutes): one PASS/FAIL/SKIP line each, a markdown report",
        description="Exercise on the given device what a training run touches: versions and "
                    "mmcv ops, SNS and every KD loss against the CPU, one training step of "
                    "every run of the profile, ImageNet weights, the datasets. Exit code 0 "
                    "only when nothing failed (dipkd/doctor/).")
    from dipkd.doctor.command import add_arguments as _doctor_arguments
    _doctor_arguments(doc)
    doc.set_defaults(handler=_doctor)

    # parsed by dipkd.efficiency itself (see main): listed here for `dipkd --help`
    sub.add_parser("efficiency", add_help=False,
                   help="parameters, FLOPs and latency of teacher and student "
                        "(`dipkd efficiency --help`)")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("dipkd-repro")
    except PackageNotFoundError:
        return "unknown"


def _error(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _infer(args) -> int:
    from dipkd.inference.infer import InferError, run
    try:
        return run(args.model, args.inputs, args.out, score_thr=args.score_thr,
                   overlap=args.overlap, nms_iou=args.nms_iou, device=args.device,
                   batch_size=args.batch_size, tile_size=args.tile_size, merge=args.merge,
                   merge_threshold=args.merge_threshold)
    except InferError as exc:
        return _error(str(exc))


def _compare(args) -> int:
    import os

    from dipkd.config.params import ParamsError, load_params
    try:
        if args.params is None:
            params = load_params("params.yaml") if os.path.isfile("params.yaml") else {}
        else:
            params = load_params(args.params)
        compare(params, args)
    except (ParamsError, FileNotFoundError, ValueError) as exc:
        return _error(str(exc))
    return 0


def _repro(args) -> int:
    from pathlib import Path

    from dipkd.config.params import ParamsError
    from dipkd.parallel_repro import ParallelReproError, repro
    if args.at_once is not None and (args.jobs is not None or args.executor == "slurm"):
        return _error("--at-once N is for the local executor without --jobs (which runs "
                      "through DVC's queue or SLURM)")
    if args.at_once is not None and args.at_once < 1:
        return _error(f"--at-once {args.at_once}: must be at least 1")
    if args.executor == "slurm":
        return _repro_slurm(args)
    if args.slurm:
        return _error("--slurm KEY=VALUE needs --executor slurm")
    if args.jobs is None:
        from dipkd import local_repro
        try:
            return local_repro.repro(Path.cwd(), args.targets, verbose=args.verbose,
                                     at_once=args.at_once)
        except ParallelReproError as exc:       # an unknown target
            return _error(str(exc), 1)
        except KeyboardInterrupt:
            return 130

    if args.verbose:
        os.environ["DIPKD_VERBOSE"] = "1"      # the queued stages inherit it
    try:
        repro(Path.cwd(), args.jobs, args.targets, keep_experiments=args.keep_experiments,
              poll=5.0 if args.poll is None else args.poll)
    except (ParallelReproError, ParamsError) as exc:
        return _error(str(exc), 1)
    except KeyboardInterrupt:
        return 130
    return 0


def _repro_slurm(args) -> int:
    """``dipkd repro --executor slurm``: :mod:`dipkd.slurm.repro`. Exit code 1 with one line
    when a job failed or the repro cannot start, 130 on Ctrl-C (its jobs cancelled)."""
    from pathlib import Path

    from dipkd.config.params import ParamsError
    from dipkd.slurm.repro import SlurmReproError, repro
    if args.keep_experiments:
        return _error("--keep-experiments is for DVC's queue (--jobs N without --executor)")
    try:
        repro(Path.cwd(), args.targets, jobs=args.jobs, overrides=args.slurm,
              poll=10.0 if args.poll is None else args.poll, verbose=args.verbose)
    except (SlurmReproError, ParamsError) as exc:
        return _error(str(exc), 1)
    except KeyboardInterrupt:
        return 130
    return 0


def _doctor(args) -> int:
    from dipkd.doctor import run_doctor
    return run_doctor(args)


def _efficiency(argv: list[str]) -> int:
    try:
        from dipkd.efficiency import main as efficiency_main
    except ModuleNotFoundError as exc:
        if exc.name not in ("dipkd.efficiency", "dipkd"):
            raise
        return _error("dipkd efficiency is not available in this installation "
                      "(no module dipkd.efficiency)")
    argv0 = sys.argv[0]
    sys.argv[0] = "dipkd efficiency"      # its argparse usage line
    try:
        code = efficiency_main(argv)
    finally:
        sys.argv[0] = argv0
    return int(code or 0)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dipkd`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "efficiency":
        return _efficiency(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
