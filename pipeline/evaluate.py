"""DVC stage ``evaluate@<role>-<dataset>-<detector>``: COCO metrics of a trained model."""
from dipkd.config.params import run_spec
from dipkd.evaluate import evaluate
from pipeline._cli import DATASET, DETECTOR, run


def main(params, args):
    evaluate(run_spec(params, args.role, args.dataset, args.detector))


if __name__ == "__main__":
    run(main, __doc__, (("--role",), dict(required=True)), DATASET, DETECTOR)
