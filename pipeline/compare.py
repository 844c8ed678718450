"""Print a table of the runs in the MLflow store (``MLFLOW_TRACKING_URI`` or the repository's
``mlflow.db``): final test metrics per configuration, mean +- std over seeds.

    python -m pipeline.compare                                   # every evaluated run
    python -m pipeline.compare --filter "tags.tables LIKE '%table3%'" --metrics mAP APs APm APl
"""
from dipkd.tracking.compare import compare_table, runs_frame
from pipeline._cli import run


def main(params, args):
    experiment = args.experiment or params.get("mlflow", {}).get("experiment", "dipkd-repro")
    table = compare_table(runs_frame(experiment, args.filter), metrics=args.metrics)
    if table.empty:
        print(f"no evaluated runs in experiment {experiment!r}"
              + (f" matching {args.filter!r}" if args.filter else ""))
        return
    print(table.to_markdown(index=False, floatfmt=".1f", missingval="-"))


if __name__ == "__main__":
    run(main, __doc__, (("--experiment",), dict(default=None)),
        (("--filter",), dict(default="", help="an MLflow search filter")),
        (("--metrics",), dict(nargs="+", default=["mAP", "AP50", "mAR"])))
