"""The CPU RoIAlign of :mod:`dipkd.models.roi_align_cpu` against mmcv's own kernel, inside the
training step it serves (issue 23), in one process: for each profile and run kind (student,
DIPKD; Faster R-CNN on ssdd), two copies of the same model and optimizer take turns on the
same batches, one with mmcv's kernel (``DIPKD_MMCV_ROI_ALIGN=1``), one with ours; the median
step time (the process's CPU time) of each, their ratio, and whether the two copies' weights
are still equal to the bit after every step.

    OMP_NUM_THREADS=1 python benchmarks/roi_align_step.py [--profiles smoke study] \
        [--kinds student dipkd] [--steps 6] [--out reports/roi_align_step.md]
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
from step_profile import (_batches, _config, _spec, _step_fn, compare_rows,  # noqa: E402
                          comparison_parser, models_alike)

from dipkd import rng_state  # noqa: E402
from dipkd.models.roi_align_cpu import OFF_ENV  # noqa: E402


def _same_weights(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                  b.state_dict().values()))


def compare(params, kind: str, steps: int) -> dict:
    cfg = _config(params, _spec(params, kind))
    torch.use_deterministic_algorithms(True)
    models = models_alike(cfg, ("mmcv", "ours"))
    assert _same_weights(models["mmcv"], models["ours"])
    step = {name: _step_fn(cfg, m) for name, m in models.items()}
    times = {name: [] for name in models}
    equal = True
    for i, batch in enumerate(_batches(cfg, steps + 1)):
        rng = rng_state.capture()
        for name in ("mmcv", "ours"):
            rng_state.restore(rng)               # the same proposals sampled in both
            os.environ[OFF_ENV] = "1" if name == "mmcv" else "0"
            t0 = time.process_time()
            step[name](copy.deepcopy(batch))
            if i >= 1:                            # one warm-up step (numba compiles)
                times[name].append(time.process_time() - t0)
        equal &= _same_weights(models["mmcv"], models["ours"])
    os.environ.pop(OFF_ENV, None)
    mmcv, ours = statistics.median(times["mmcv"]), statistics.median(times["ours"])
    return {"mmcv": mmcv, "ours": ours, "ratio": mmcv / ours, "equal": equal}


def main() -> None:
    args = comparison_parser(__doc__).parse_args()
    from dipkd.machine import cpu_model
    rows = compare_rows(args, compare, lambda profile, kind, r: (
        f"| {profile} | {kind} | {r['mmcv']:.3f} | {r['ours']:.3f} | {r['ratio']:.2f}x | "
        f"{'yes' if r['equal'] else 'NO'} |"))
    text = (f"{time.strftime('%Y-%m-%d')} on {cpu_model()}, {torch.get_num_threads()} "
            f"thread(s), torch {torch.__version__}; median CPU time of {args.steps} steps "
            "each, the two copies taking turns in one process.\n\n"
            "| profile | run | step, mmcv's RoIAlign (s) | step, ours (s) | faster | "
            "weights equal after every step |\n|---|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n")
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
