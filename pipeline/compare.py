"""Print a table of the runs in the MLflow store (``MLFLOW_TRACKING_URI`` or the repository's
``mlflow.db``): final test metrics per configuration, mean +- std over seeds.

    python -m pipeline.compare                                   # every evaluated run
    python -m pipeline.compare --filter "tags.tables LIKE '%table3%'" --metrics mAP APs APm APl
"""
# The same command as `dipkd compare`: one function and one set of options (dipkd.cli).
from dipkd.cli import COMPARE_ARGUMENTS, compare as main
from pipeline._cli import run

if __name__ == "__main__":
    run(main, __doc__, *COMPARE_ARGUMENTS)
