"""DVC stages ``distill``, ``baseline``, ``ablation``, ``tau``, ``mask_rate``: train the
student beside the frozen teacher (the one of ``teacher_seed``, shared by every seed) with a KD method (default DIPKD; a DIPKD
variant with ``--modules``/``--set``), export the student."""
import torch

from dipkd.mmdet_config import build_distill_config
from dipkd.config.params import distill_spec, run_spec
from dipkd.training import train
from pipeline._cli import DATASET, DETECTOR, SEED, SET, MODULES, run, variant_overrides


def main(params, args):
    spec = distill_spec(params, args.method, args.dataset, args.detector, args.seed,
                        variant_overrides(args))
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


if __name__ == "__main__":
    run(main, __doc__, (("--method",), dict(default="dipkd")), DATASET, DETECTOR, SEED,
        MODULES, SET, scale_out=True)
