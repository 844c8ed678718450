"""DVC stages ``evaluate*@...``: COCO metrics of a trained model (teacher, student, or a
distilled student with ``--method``, and ``--modules``/``--set`` for a DIPKD variant)."""
from dipkd.config.params import DISTILLED, distill_spec, run_spec
from dipkd.evaluation.run import evaluate
from pipeline._cli import DATASET, DETECTOR, SEED, SET, MODULES, run, variant_overrides


def main(params, args):
    if args.role == DISTILLED:
        spec = distill_spec(params, args.method, args.dataset, args.detector, args.seed,
                            variant_overrides(args))
    else:
        spec = run_spec(params, args.role, args.dataset, args.detector, args.seed)
    evaluate(spec)


if __name__ == "__main__":
    run(main, __doc__, (("--role",), dict(required=True)),
        (("--method",), dict(default="dipkd")), DATASET, DETECTOR, SEED, MODULES, SET)
