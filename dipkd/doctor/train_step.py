"""One training iteration of every run the profile trains, on the device.

For each detector of ``detectors``: its teacher, its student and its DIPKD run; for each
method of ``baselines`` its run on ``baseline_detector`` (the pipeline's matrix, one dataset
per detector: the one with the largest ``schedule.<detector>.<dataset>.scale``, the worst
case for time and memory). Each model is built from the config its training stage builds
(:func:`dipkd.mmdet_config.build_config` / :func:`~dipkd.mmdet_config.build_distill_config`,
the distillers' teacher randomly initialised: a step does not need a trained one; the
backbones' ImageNet ``init_cfg`` dropped, that file is the ``ImageNet`` check's), moved to
the device with its optimizer (``optim_wrapper`` of the config), and runs mmengine's
``train_step`` (data preprocessing, forward, losses, backward, SGD step) on a batch of
``train.batch_size`` random images of exactly the schedule's scale (the largest a ``Resize``
with ``keep_ratio`` produces) with a few GT boxes each.

Reported: the losses are finite and the step changed the student's weights; the step's time
(on CUDA the second step, after a warm-up one) and peak memory: ``torch.cuda.max_memory_
allocated`` on CUDA; on the CPU the whole process's peak resident set size during the step
(``VmHWM`` after a reset through ``/proc/self/clear_refs``; ``n/a`` where Linux refuses).
On CUDA a fresh model of each run then steps at batch 8 (the paper's "8 per GPU"; the
profile's own step when its batch is 8) and the ``train batch 8 fits`` line says whether
every run fits; on the CPU that line is a SKIP.
"""
from __future__ import annotations

import math
import re
import time
from pathlib import Path

from .core import Check, CheckFailed, CheckSkipped, Context, one_line

PAPER_BATCH = 8
BOX_FRACTIONS = ((0.10, 0.15, 0.30, 0.35), (0.55, 0.50, 0.70, 0.80), (0.40, 0.05, 0.46, 0.12))


def largest_dataset(params: dict, detector: str) -> str:
    """The dataset whose schedule scale for ``detector`` has the most pixels."""
    sched = params["profiles"][params["profile"]]["schedule"][detector]
    return max(params["datasets"], key=lambda ds: math.prod(sched[ds]["scale"]))


def planned_runs(params: dict) -> list[tuple[str, str, str]]:
    """(role or method, detector, dataset) of every run a step is taken for."""
    runs = []
    for det in params["detectors"]:
        ds = largest_dataset(params, det)
        runs += [("teacher", det, ds), ("student", det, ds)]
        if "dipkd" in params.get("methods", {}):
            runs.append(("dipkd", det, ds))
    det = params.get("baseline_detector", params["detectors"][0])
    runs += [(m, det, largest_dataset(params, det)) for m in params.get("baselines", [])
             if m != "dipkd"]
    return runs


def without_imagenet_init(model: dict) -> dict:
    """``model`` with every ResNet's ``Pretrained`` init_cfg dropped (frozen stages and BN
    mode kept): a step must not download weights."""
    if isinstance(model, dict):
        if model.get("type") == "ResNet":
            model.pop("init_cfg", None)
        for value in model.values():
            without_imagenet_init(value)
    return model


def run_config(params: dict, what: str, detector: str, dataset: str):
    """The mmengine config of a run, as its training stage builds it."""
    from ..config.params import distill_spec, run_spec
    from ..mmdet_config import build_config, build_distill_config
    if what in ("teacher", "student"):
        return build_config(run_spec(params, what, dataset, detector))
    return build_distill_config(distill_spec(params, what, dataset, detector),
                                run_spec(params, "teacher", dataset, detector), None)


def build_model(cfg, device):
    """(model, optimizer wrapper) of ``cfg`` on ``device``, initialised as training does."""
    from mmdet.registry import MODELS
    from mmengine.config import ConfigDict
    from mmengine.optim import build_optim_wrapper
    model = MODELS.build(ConfigDict(without_imagenet_init(cfg.model.to_dict())))
    model.init_weights()
    model.to(device).train()
    return model, build_optim_wrapper(model, cfg.optim_wrapper)


def fake_batch(batch: int, scale: tuple[int, int], seed: int) -> dict:
    """``batch`` random uint8 images of ``scale`` (w, h) with three GT boxes each, as the
    training pipeline packs them (``inputs``, ``data_samples``)."""
    import torch
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    w, h = scale
    gen = torch.Generator().manual_seed(seed)
    boxes = torch.tensor(BOX_FRACTIONS) * torch.tensor([w, h, w, h])
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen))
        s = DetDataSample()
        s.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(bboxes=boxes.clone(),
                                      labels=torch.zeros(len(boxes), dtype=torch.long))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def trained_weights(model):
    """The parameter the step must change: the student's first FPN output conv."""
    student = getattr(model, "student", model)
    return student.neck.fpn_convs[0].conv.weight


def timed_step(model, optim, batch: dict, device) -> tuple[dict, float, str]:
    """(losses, seconds, peak memory) of one ``train_step``."""
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss = reset_peak_rss()
    start = time.perf_counter()
    losses = model.train_step(batch, optim)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = f"peak {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    else:
        peak = f"peak RSS {peak_rss() / 2**30:.2f} GiB (process)" if rss else "peak RSS n/a"
    return losses, time.perf_counter() - start, peak


def reset_peak_rss() -> bool:
    """Reset the process's peak resident set size (Linux ``clear_refs`` 5); False where the
    kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return peak_rss() > 0
    except OSError:
        return False


def peak_rss() -> int:
    """The process's peak resident set size since the last reset, in bytes (``VmHWM``)."""
    match = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match.group(1)) * 1024 if match else 0


def step(cfg, device, batch_size: int, scale, steps: int) -> tuple[dict, float, str]:
    """Build the model and take ``steps`` steps; the last one's losses, time and peak. The
    losses must be finite and the student's weights must change."""
    import gc

    import torch
    gc.collect()                      # the previous run's model (hooks make cycles)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    model, optim = build_model(cfg, device)
    before = trained_weights(model).detach().clone()
    for k in range(steps):
        losses, seconds, peak = timed_step(model, optim, fake_batch(batch_size, scale, k),
                                           device)
    bad = [k for k, v in losses.items() if not torch.isfinite(torch.as_tensor(v)).all()]
    if bad:
        raise CheckFailed(f"losses not finite: {', '.join(bad)}")
    if torch.equal(before, trained_weights(model).detach()):
        raise CheckFailed("the optimizer step left the student's weights unchanged")
    return losses, seconds, peak


def batch8(ctx: Context, name: str, cfg, scale, batch_size: int, peak: str) -> None:
    """Record in ``ctx.batch8`` whether the run fits at batch 8 on CUDA (a fresh model)."""
    import torch
    if not ctx.on_cuda:
        return
    if batch_size == PAPER_BATCH:
        ctx.batch8.append((name, True, peak))
        return
    try:
        _, _, peak8 = step(cfg, ctx.device, PAPER_BATCH, scale, steps=1)
        ctx.batch8.append((name, True, peak8))
    except torch.cuda.OutOfMemoryError as exc:
        ctx.batch8.append((name, False, one_line(exc)[:80]))


def train_check(what: str, detector: str, dataset: str) -> Check:
    """The ``train <what> <detector>`` check: one step at the profile's batch and scale."""
    name = f"train {what} {detector}"

    def run(ctx: Context) -> str:
        import torch
        cfg = run_config(ctx.params, what, detector, dataset)
        scale = train_scale(cfg)
        batch_size = int(cfg.train_dataloader.batch_size)
        steps = 2 if ctx.on_cuda else 1
        try:
            losses, seconds, peak = step(cfg, ctx.device, batch_size, scale, steps)
        except torch.cuda.OutOfMemoryError as exc:
            if batch_size <= PAPER_BATCH:      # then batch 8 does not fit either
                ctx.batch8.append((name, False, f"out of memory at batch {batch_size}"))
            raise CheckFailed(f"out of memory at batch {batch_size}: {one_line(exc)[:120]}")
        batch8(ctx, name, cfg, scale, batch_size, peak)
        w, h = scale
        return (f"{dataset} {w}x{h}, batch {batch_size}: loss {float(losses['loss']):.3f}, "
                f"{seconds:.2f} s/step, {peak}")
    return Check(name, run)


def train_scale(cfg) -> tuple[int, int]:
    """The (w, h) of the training pipeline's Resize."""
    for t in cfg.train_dataloader.dataset.pipeline:
        if t["type"] == "Resize":
            return tuple(t["scale"])
    raise CheckFailed("the training pipeline has no Resize")


def check_batch8(ctx: Context) -> str:
    """Every run stepped at batch 8 on CUDA (a SKIP on the CPU)."""
    if not ctx.on_cuda:
        raise CheckSkipped("CPU: no device memory to fill (CUDA only)")
    if not ctx.batch8:
        raise CheckSkipped("no training step ran")
    failed = [f"{n} ({d})" for n, fits, d in ctx.batch8 if not fits]
    if failed:
        raise CheckFailed(f"out of memory at batch {PAPER_BATCH}: {'; '.join(failed)}")
    worst = max(ctx.batch8, key=lambda r: float(r[2].split()[1]))
    return (f"all {len(ctx.batch8)} runs fit at batch {PAPER_BATCH}; largest: {worst[0]}, "
            f"{worst[2]}")


def checks(params: dict) -> list[Check]:
    """One check per planned run, then the batch-8 summary."""
    return [train_check(*run) for run in planned_runs(params)] + [
        Check(f"train batch {PAPER_BATCH} fits", check_batch8)]
