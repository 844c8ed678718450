"""DVC stage ``figures``: the paper's Figures 3-5 (speckle metrics of the teacher's features,
feature heat maps, detections) from the trained checkpoints, into reports/figures/."""
from pathlib import Path

from dipkd import console
from dipkd.reports.figures import make_figures
from pipeline._cli import SEED, run


def main(params, args):
    out = make_figures(params, dataset=args.dataset, methods=args.methods,
                       num_images=args.num_images, speckle_images=args.speckle_images,
                       level=args.level, score_thr=args.score_thr, fft_keep=args.fft_keep,
                       out_dir=Path(args.out_dir), seed=args.seed)
    summ = out["fig3_numbers"]["summary"]
    console.say("[dipkd] Figure 3 (mean over {} images): ".format(out["fig3_numbers"]["images"])
                + "; ".join(f"{v}: ENL {summ[v]['enl']['mean']:.3g}, SSI^-1 "
                            f"{summ[v]['ssi_inv']['mean']:.3g}, SMPI^-1 "
                            f"{summ[v]['smpi_inv']['mean']:.3g}" for v in summ))
    console.say("[dipkd] wrote " + ", ".join(str(out[key]) for key in ("fig3", "fig4", "fig5")))


if __name__ == "__main__":
    run(main, __doc__,
        (("--dataset",), dict(default=None, help="default: the first of params 'datasets'")),
        SEED,
        (("--methods",), dict(nargs="+", default=None,
                              help="columns of Figures 4-5 (student, teacher or KD methods); "
                                   "default: params' figures.methods that the matrix trains")),
        (("--num-images",), dict(type=int, default=4, help="rows of Figures 4-5")),
        (("--speckle-images",), dict(type=int, default=16,
                                     help="test images averaged in Figure 3")),
        (("--level",), dict(type=int, default=0, help="FPN level (0 = finest)")),
        (("--score-thr",), dict(type=float, default=0.3, help="Figure 5 score threshold")),
        (("--fft-keep",), dict(type=float, default=0.25,
                               help="fraction of the spectrum the FFT baseline keeps")),
        (("--out-dir",), dict(default="reports/figures")), quiet=True)
