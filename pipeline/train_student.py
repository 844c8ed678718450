"""DVC stage ``train_student@<dataset>-<detector>-<seed>``: train the ResNet18 student without KD
(the "stu" baseline rows of Table 1)."""
from dipkd.config.params import run_spec
from dipkd.training import train
from pipeline._cli import DATASET, DETECTOR, SEED, run


def main(params, args):
    train(run_spec(params, "student", args.dataset, args.detector, args.seed))


if __name__ == "__main__":
    run(main, __doc__, DATASET, DETECTOR, SEED, scale_out=True)
