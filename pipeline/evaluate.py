"""DVC stages ``evaluate@<role>-<dataset>-<detector>`` and ``evaluate_distilled@...``: COCO
metrics of a trained model (teacher, student, or a distilled student with ``--method``)."""
from dipkd.config.params import DISTILLED, distill_spec, run_spec
from dipkd.evaluate import evaluate
from pipeline._cli import DATASET, DETECTOR, run


def main(params, args):
    if args.role == DISTILLED:
        spec = distill_spec(params, args.method, args.dataset, args.detector)
    else:
        spec = run_spec(params, args.role, args.dataset, args.detector)
    evaluate(spec)


if __name__ == "__main__":
    run(main, __doc__, (("--role",), dict(required=True)),
        (("--method",), dict(default="dipkd")), DATASET, DETECTOR)
