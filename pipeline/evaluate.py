"""Test a trained model again, without training: COCO metrics, detections and the MLflow
``test/*`` metrics of the run the arguments name (the same arguments as
``pipeline.train``; a colleague's model put at that run's path is logged as a new MLflow run).
The training stages test their own model (``pipeline/train.py``); no stage calls this."""
from dipkd.evaluation.run import evaluate
from pipeline._cli import RUN_ARGS, run, run_of


def main(params, args):
    evaluate(run_of(params, args))


if __name__ == "__main__":
    run(main, __doc__, *RUN_ARGS)
