"""DVC stage ``efficiency``: reports/efficiency.{md,csv}, the parameters, FLOPs (at the
paper's input sizes) and per-image latency of teacher and student of each detector, next to
the teacher's, student's and DIPKD student's test mAP (:mod:`dipkd.efficiency`)."""
from dipkd import console
from dipkd.efficiency import run_report
from pipeline._cli import run


def main(params, args):
    md, csv_path = run_report(params, device=args.device)
    print(md.read_text())                     # on the console with DIPKD_VERBOSE=1
    console.say(f"[dipkd] wrote {md} and {csv_path}")


if __name__ == "__main__":
    run(main, __doc__, (("--device",), dict(
        default="auto", choices=("auto", "cpu", "cuda", "none"),
        help="latency on: auto = the CPU, and CUDA when present; none = no latency")),
        quiet=True)
