"""Every DVC training stage (``train_teacher``, ``train_student``, ``distill``,
``distill_noinherit``, ``baseline``, ``ablation``, ``tau``, ``mask_rate``): one run, its role
a key. ``--role teacher|student`` trains a detector alone (the "stu" rows of Table 1 are the
student); ``--role distilled`` trains the student beside the frozen teacher (the one of
``teacher_seed``, shared by every seed) with the KD method ``--method`` (default DIPKD; a
DIPKD variant with ``--modules``/``--set``). Then the exported model is tested on the test
split (:func:`dipkd.evaluation.run.evaluate`: the metrics JSON, the detections, the MLflow
``test/*`` metrics; the validation after the last epoch is that test,
:mod:`dipkd.evaluation.final_validation`) and the work dir's checkpoints are dropped.

The test runs in the training stage, so a stage's outputs are its model, curves, metrics and
detections together: a failed test leaves the work dir's checkpoints, and the stage run again
resumes at the last epoch and only tests (nothing is trained twice). ``python -m
pipeline.evaluate`` tests a model again without training (a colleague's model, say).
"""
import torch

from dipkd.config.params import DISTILLED, run_spec
from dipkd.evaluation.run import evaluate
from dipkd.kd.methods import display_name
from dipkd.mmdet_config import build_distill_config
from dipkd.training import prune_work_dir, train
from pipeline._cli import RUN_ARGS, run, run_of


def main(params, args):
    """Train and export (in every torchrun worker with ``compute.gpus > 1``)."""
    spec = run_of(params, args)
    if spec.role != DISTILLED:
        train(spec)
        return
    teacher = run_spec(params, "teacher", args.dataset, args.detector)   # the teacher_seed one
    if not teacher.model_path.is_file():
        raise FileNotFoundError(f"{teacher.model_path}: teacher checkpoint missing; run "
                                f"train_teacher@{teacher.key} first")
    cfg = build_distill_config(spec, teacher, teacher.model_path,
                               deterministic=not torch.cuda.is_available())
    tags = {k: spec.method_params[k] for k in ("sns", "kld", "rit", "tau", "mask_rate")
            if k in spec.method_params}
    if spec.variant:
        tags["variant"] = spec.variant
    train(spec, cfg=cfg, extra_tags=tags)


def test(params, args) -> str:
    """Test the exported model, then drop the work dir's checkpoints (once, in the launching
    process). Returns the result for the stage's last console line."""
    spec = run_of(params, args)
    metrics = evaluate(spec, final_validation=True)    # the validation after the last epoch
    prune_work_dir(spec.work_dir)
    return f"mAP {metrics['mAP']:.3f}"


def console_lines(params, args):
    """The run's log file and the stage's console title, e.g.
    ``DIPKD  ssdd-faster_rcnn-seed0  2 epochs``."""
    spec = run_of(params, args)
    who = display_name(spec.method if spec.role == DISTILLED else spec.role, params)
    if spec.variant:
        who += f" {spec.variant}"
    return spec.log_path, f"{who}  {spec.run_key}  {spec.schedule.epochs} epochs"


def cli():
    run(main, __doc__, *RUN_ARGS, scale_out=True, then=test, console_lines=console_lines)


if __name__ == "__main__":
    cli()
