"""Benchmarks of the DIPKD pieces, measured in one run (ratios matter, not seconds).

1. Wavelet denoising (f_wld of Eq. 7): our ``WaveletDenoiser`` without a graph (on CPU the
   fused numba kernel of ``dipkd/kd/haar_kernel.py``) and its torch-ops path
   (``fused_cpu=False``, the ops the differentiable call runs) vs the PyWavelets/numpy path,
   on FPN-shaped features of a 512x512 input (batch 2, 256 channels, 5 levels).
   Goal: >= 10x faster on CPU.
2. One distiller training step with DIPKD vs the same distiller with plain Eq. 2 MSE KD
   (FitNet), on the same batch, for each detector; the two distillers alone in memory, as
   in a training run. Goal: DIPKD costs at most 10% more per step.
3. The same step for every KD method of Table 2 (``fitnet`` + ``baselines`` of params.yaml),
   relative to FitNet, all built in one process.

    python benchmarks/bench_kd.py [--out reports/benchmarks.md] [--repeats 5]
                                  [--detectors faster_rcnn retinanet]
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import time
from pathlib import Path

import torch


def _interleaved_medians(fns: dict, repeats: int) -> dict:
    """Median seconds of each callable, measured in rounds in which every one takes its turn:
    an untimed call, then a timed one. Taking turns spreads a drift of the machine's speed
    over all of them instead of whichever ran last; the untimed call first brings the
    callable's own memory back into the caches, as in a training run where the same model
    steps again and again, so no method pays for the one that ran before it."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            fn()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_wavelet(repeats: int = 5) -> dict:
    from dipkd.kd.wavelet import WaveletDenoiser, denoise_reference_numpy
    feats = [torch.randn(2, 256, s, s) for s in (128, 64, 32, 16, 8)]
    arrays = [f.numpy() for f in feats]

    def run(den):
        def levels():
            with torch.no_grad():
                return [den(f) for f in feats]
        return levels
    t = _interleaved_medians({"kernel": run(WaveletDenoiser()),
                              "torch": run(WaveletDenoiser(fused_cpu=False)),
                              "numpy": lambda: [denoise_reference_numpy(a) for a in arrays]},
                             repeats)
    return {"kernel_s": t["kernel"], "torch_s": t["torch"], "numpy_s": t["numpy"],
            "speedup": t["numpy"] / t["kernel"], "torch_speedup": t["numpy"] / t["torch"]}


def _distiller(method: str, detector: str):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import ConfigDict

    from dipkd import mmdet_plugins  # noqa: F401
    from dipkd.config.params import load_params, run_spec
    from dipkd.models.detectors import detector_cfg
    register_all_modules()
    params = load_params("params.yaml")
    spec = run_spec(params, "student", "ssdd", detector)
    from dipkd.mmdet_config import distiller_cfg
    student = detector_cfg(detector, 18, False, spec.model)
    teacher = detector_cfg(detector, 50, False, spec.model)
    model = MODELS.build(ConfigDict(distiller_cfg(student, teacher, method,
                                                  params["methods"][method])))
    model.init_weights()
    return model.train()


def _batch(size: int):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    torch.manual_seed(0)
    inputs = torch.randn(2, 3, size, size)
    samples = []
    for boxes in ([[20, 30, 60, 50], [100, 100, 180, 140]], [[40, 40, 70, 90]]):
        s = DetDataSample()
        s.set_metainfo(dict(img_shape=(size, size), pad_shape=(size, size),
                            batch_input_shape=(size, size), ori_shape=(size, size),
                            scale_factor=(1.0, 1.0)))
        b = torch.tensor(boxes, dtype=torch.float32)
        s.gt_instances = InstanceData(bboxes=b, labels=torch.zeros(len(b), dtype=torch.long))
        samples.append(s)
    return inputs, samples


def bench_step(repeats: int = 5, detector: str = "faster_rcnn", size: int = 256,
               methods: list[str] | None = None) -> dict:
    """Median seconds of one training step of the distiller per KD method (params.yaml's
    ``methods.<name>`` settings), all on the same batch in this process, the methods taking
    turns step by step (:func:`_interleaved_medians`)."""
    from dipkd.config.params import load_params
    from dipkd.kd_terms import summed
    params = load_params("params.yaml")
    methods = methods or ["fitnet", *params["baselines"], "dipkd"]
    inputs, samples = _batch(size)
    steps = {}
    for name in methods:
        model = _distiller(name, detector)
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step(model=model, opt=opt):
            losses = model.loss(inputs, samples)
            total = sum(summed(v) for k, v in losses.items() if "loss" in k)
            opt.zero_grad()
            total.backward()
            opt.step()
        steps[name] = step
    torch.manual_seed(0)
    results = _interleaved_medians(steps, repeats)
    for name, sec in results.items():
        print(f"[bench] {name}: {sec:.3f} s per step", flush=True)
    return results


def _step_row(detector: str, size: int, step: dict) -> str:
    overhead = step["dipkd"] / step["fitnet"] - 1.0
    return (f"| distiller train step, {detector} R50->R18, batch 2 at {size}x{size} | DIPKD "
            f"{step['dipkd']:.3f} s | Eq. 2 MSE {step['fitnet']:.3f} s | "
            f"{100 * overhead:+.1f}% per step | <= +10% |")


def _machine() -> str:
    """When and where this runs: the date, the CPU model and the versions that set the speed."""
    import numba

    from dipkd.machine import cpu_model
    return (f"{datetime.date.today().isoformat()}, {cpu_model()}, "
            f"{torch.get_num_threads()} threads, "
            f"torch {torch.__version__}, numba {numba.__version__}")


def report(wave: dict, step: dict, detector: str, size: int,
           pairs: dict | None = None) -> str:
    """Markdown of the measurements. ``step``: seconds per step of every method on
    ``detector``, measured together; ``pairs`` maps a detector to ``{"fitnet": s,
    "dipkd": s}`` measured as a pair (the DIPKD table's rows; without it, the row comes from
    ``step``)."""
    lines = [
        "## DIPKD benchmarks",
        "",
        f"Measured in one run on this machine ({_machine()}; CPU), the "
        "compared variants taking turns (an untimed call, then a timed one, each turn); "
        "compare the ratios, not the seconds.",
        "",
        "| benchmark | ours | reference | ratio | goal |",
        "|---|---|---|---|---|",
        "| wavelet denoise, batch 2 x 256 ch, FPN levels of 512x512 | WaveletDenoiser, fused "
        f"CPU kernel {wave['kernel_s']:.3f} s | PyWavelets/numpy {wave['numpy_s']:.3f} s | "
        f"{wave['speedup']:.1f}x faster | >= 10x |",
        "| the same, torch ops (the differentiable path's, no graph) | torch "
        f"{wave['torch_s']:.3f} s | PyWavelets/numpy {wave['numpy_s']:.3f} s | "
        f"{wave['torch_speedup']:.1f}x faster | |",
        *[_step_row(det, size, times) for det, times in (pairs or {detector: step}).items()],
        "",
        f"## Training step per KD method ({detector} R50->R18, batch 2 at {size}x{size})",
        "",
        "All methods built in one process and taking turns (ten distillers in memory; the "
        "DIPKD rows above are measured as a pair, as in a training run).",
        "",
        "| method | s per step | relative to FitNet |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {sec:.3f} | {sec / step['fitnet']:.2f}x |" for name, sec in step.items()]
    return "\n".join(lines + [""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--detectors", nargs="+", default=["faster_rcnn", "retinanet"],
                        help="DIPKD vs Eq. 2 on each; every method on the first")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    wave = bench_wavelet(args.repeats)
    # DIPKD against Eq. 2 as a pair in the process, as in a training run (one distiller);
    # then every method, all built in one process, for the relative table
    pairs = {det: bench_step(args.repeats, det, args.size, methods=["fitnet", "dipkd"])
             for det in args.detectors}
    step = bench_step(args.repeats, args.detectors[0], args.size)
    text = report(wave, step, args.detectors[0], args.size, pairs)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("# Benchmarks\n\n" + text)


if __name__ == "__main__":
    main()
