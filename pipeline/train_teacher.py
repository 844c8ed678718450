"""DVC stage ``train_teacher@<dataset>-<detector>-<seed>``: train the ResNet50 teacher."""
from dipkd.config.params import run_spec
from dipkd.training import train
from pipeline._cli import DATASET, DETECTOR, SEED, run


def main(params, args):
    train(run_spec(params, "teacher", args.dataset, args.detector, args.seed))


if __name__ == "__main__":
    run(main, __doc__, DATASET, DETECTOR, SEED, scale_out=True)
