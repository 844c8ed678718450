"""DVC stage ``distill@<dataset>-<detector>``: train the student beside the frozen teacher
with a KD method (default DIPKD), export the student."""
import torch

from dipkd.config.mmdet_config import build_distill_config
from dipkd.config.params import distill_spec, run_spec
from dipkd.training import train
from pipeline._cli import DATASET, DETECTOR, run


def main(params, args):
    spec = distill_spec(params, args.method, args.dataset, args.detector)
    teacher = run_spec(params, "teacher", args.dataset, args.detector)
    if not teacher.model_path.is_file():
        raise FileNotFoundError(f"{teacher.model_path}: teacher checkpoint missing; run "
                                f"train_teacher@{teacher.key} first")
    cfg = build_distill_config(spec, teacher, teacher.model_path,
                               deterministic=not torch.cuda.is_available())
    switches = {k: spec.method_params[k] for k in ("sns", "kld", "rit")
                if k in spec.method_params}
    train(spec, cfg=cfg, extra_tags=switches)


if __name__ == "__main__":
    run(main, __doc__, (("--method",), dict(default="dipkd")), DATASET, DETECTOR)
