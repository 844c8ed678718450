"""``train.cpu_bf16`` (:mod:`dipkd.models.cpu_bf16`) inside the training step, against the
float32 step of today and the one before issue 23, in one process: for each profile and run
kind (student, DIPKD; Faster R-CNN on ssdd), three copies of the same model and optimizer
take turns on the same batches and random state: mmcv's RoIAlign in float32 (the step when
issue 23 was filed, ``DIPKD_MMCV_ROI_ALIGN=1``), the default (our CPU RoIAlign, float32) and
the option (our RoIAlign, bfloat16 convolutions and products). The median step time (the
process's CPU time) of each, the ratios, and the largest relative difference between the
option's total loss and the default's over the steps (the default and mmcv's copy keep equal
weights: benchmarks/roi_align_step.py).

    OMP_NUM_THREADS=1 python benchmarks/cpu_bf16_step.py [--profiles smoke study] \
        [--kinds student dipkd] [--steps 6] [--out reports/cpu_bf16_step.md]
"""
from __future__ import annotations

import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_profile import (_batches, _config, _spec, compare_rows,  # noqa: E402
                          comparison_parser, models_alike)

from dipkd.models.cpu_bf16 import Switch, wrap_parts  # noqa: E402
from dipkd import rng_state  # noqa: E402
from dipkd.models.roi_align_cpu import OFF_ENV  # noqa: E402

COPIES = ("before", "float32", "bf16")     # mmcv's RoIAlign fp32, ours fp32, ours bf16


def compare(params, kind: str, steps: int) -> dict:
    from mmengine.optim import build_optim_wrapper
    cfg = _config(params, _spec(params, kind))
    torch.use_deterministic_algorithms(True)
    models = models_alike(cfg, COPIES)
    wrappers = {name: build_optim_wrapper(m, cfg.optim_wrapper) for name, m in models.items()}
    switches = {"bf16": Switch()}
    wrap_parts(models["bf16"], switches["bf16"])
    times = {name: [] for name in COPIES}
    losses = {name: [] for name in COPIES}
    for i, batch in enumerate(_batches(cfg, steps + 1)):
        rng = rng_state.capture()
        for name in COPIES:
            rng_state.restore(rng)              # the same proposals sampled in each
            os.environ[OFF_ENV] = "1" if name == "before" else "0"
            model, switch = models[name], switches.get(name)
            t0 = time.process_time()
            if switch:
                switch.on = True
            data = model.data_preprocessor(copy.deepcopy(batch), True)
            total, _ = model.parse_losses(model(**data, mode="loss"))
            if switch:
                switch.on = False
            wrappers[name].update_params(total)
            if i >= 1:                           # one warm-up step (numba compiles)
                times[name].append(time.process_time() - t0)
            losses[name].append(float(total))
    os.environ.pop(OFF_ENV, None)
    med = {name: statistics.median(times[name]) for name in COPIES}
    drift = max(abs(b - f) / abs(f) for b, f in zip(losses["bf16"], losses["float32"]))
    return {**med, "drift": drift}


def main() -> None:
    args = comparison_parser(__doc__).parse_args()
    from dipkd.machine import cpu_model
    rows = compare_rows(args, compare, lambda profile, kind, r: (
        f"| {profile} | {kind} | {r['before']:.3f} | {r['float32']:.3f} | {r['bf16']:.3f} | "
        f"{r['before'] / r['float32']:.2f}x | {r['before'] / r['bf16']:.2f}x | "
        f"{100 * r['drift']:.1f}% |"))
    text = (f"{time.strftime('%Y-%m-%d')} on {cpu_model()}, {torch.get_num_threads()} "
            f"thread(s), torch {torch.__version__}; median CPU time of {args.steps} steps "
            "each, the three copies taking turns in one process.\n\n"
            "| profile | run | step before issue 23 (s) | step today, float32 (s) | step, "
            "cpu_bf16 (s) | today vs before | cpu_bf16 vs before | largest loss difference "
            "bf16 vs float32 |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
