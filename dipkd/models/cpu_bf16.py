"""``train.cpu_bf16`` (off by default): a CPU training step computes its convolutions and
linear layers in bfloat16, everything else in float32.

Where a CPU training step's time goes (``reports/benchmarks.md``, issue 23): after the CPU
RoIAlign, about 40% convolutions and 36% the RoI head's fully connected layers, all of it
oneDNN/BLAS float32 arithmetic that no reordering can speed up without changing its bits. On
a CPU with AVX512-BF16 (the project's 2-core AMD EPYC) the same products in bfloat16 run
2.7x (a 256-channel 3x3 convolution) to 4.4x (the RoI head's 384 x 12544 x 1024 product)
faster on one thread. Since bfloat16 changes every trained weight, this is an option, off by
default; every committed number is float32.

What runs in bfloat16: the forward of the detector parts named in :data:`PARTS` (backbone,
neck, RPN head, RoI box head, a one-stage dense head), of the student and, in a
distillation, of the frozen teacher, under ``torch.autocast("cpu", dtype=torch.bfloat16)``
(PyTorch's CPU autocast policy: convolutions and matrix products in bfloat16, reductions and
losses in float32). Each part's outputs are cast back to float32, so mmcv's ops (NMS,
RoIAlign: float32 only on CPU), the detection losses and the KD losses (wavelets, KL
divergences, masks) see float32 as before. The parameters, their gradients and the
optimizer stay float32 (autocast casts copies), and no loss scaling is needed (bfloat16 has
float32's exponent range). Only training steps: :class:`CpuBf16Hook` switches the parts on
in ``before_train_iter`` and off in ``after_train_iter``, so validation, the final
validation that is the stage's test, and every later evaluation of the exported model run in
float32. On a CUDA device the hook does nothing but say so (mmengine's ``AmpOptimWrapper`` is
the GPU's tool).
"""
from __future__ import annotations

import functools

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

HOOK_TYPE = "DipkdCpuBf16Hook"
# the parts whose forward runs in bfloat16 (those a detector has), relative to the detector
PARTS = ("backbone", "neck", "rpn_head", "roi_head.bbox_head", "bbox_head")


def to_float(value):
    """``value`` with every bfloat16 tensor in it (nested tuples, lists, dicts) as float32."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype == torch.bfloat16 else value
    if isinstance(value, (list, tuple)):
        items = [to_float(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, dict):
        return type(value)((k, to_float(v)) for k, v in value.items())
    return value


class Switch:
    """Whether the wrapped parts compute in bfloat16 now."""

    def __init__(self):
        self.on = False


def wrap_parts(model, switch: Switch) -> list[str]:
    """Wrap the forward of every part of :data:`PARTS` that the model's detectors (a
    distiller's student and teacher, or the model itself) have: bfloat16 autocast while
    ``switch.on``, outputs cast back to float32. Returns the wrapped parts' names
    (``student.backbone``, ...)."""
    detectors = ([("student.", model.student), ("teacher.", model.teacher)]
                 if hasattr(model, "student") else [("", model)])
    wrapped = []
    for prefix, detector in detectors:
        for name in PARTS:
            try:
                part = detector.get_submodule(name)
            except AttributeError:          # a part this detector has not (bbox_head in a
                continue                    # two-stage one, rpn_head in a one-stage one)
            if getattr(part.forward, "_dipkd_bf16", False):
                continue
            part.forward = _bf16_forward(part.forward, switch)
            wrapped.append(prefix + name)
    return wrapped


def _bf16_forward(forward, switch: Switch):
    @functools.wraps(forward)
    def run(*args, **kwargs):
        if not switch.on:
            return forward(*args, **kwargs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = forward(*args, **kwargs)
        return to_float(out)
    run._dipkd_bf16 = True
    return run


@HOOKS.register_module(name=HOOK_TYPE)
class CpuBf16Hook(Hook):
    """Wraps the model's parts before training (CPU only) and switches bfloat16 on for each
    training iteration (module docstring)."""

    priority = "VERY_HIGH"      # on before any other hook's before_train_iter, off after all

    def __init__(self):
        self.switch = Switch()

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        device = next(model.parameters()).device
        if device.type != "cpu":
            runner.logger.warning(f"train.cpu_bf16 is for CPU training; on {device} it does "
                                  f"nothing (mmengine's AmpOptimWrapper is the GPU's tool)")
            return
        parts = wrap_parts(model, self.switch)
        runner.logger.info(f"cpu_bf16: bfloat16 autocast in the training steps of "
                           f"{', '.join(parts)}")

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.switch.on = True

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.switch.on = False
