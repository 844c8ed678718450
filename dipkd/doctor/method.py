"""The method on the device: SNS and every registered KD loss against the CPU's numbers.

- ``SNS``: Selective Noise Suppression (the teacher's attention, Eq. 3-6, times the feature,
  then the wavelet denoising f_wld) with ``methods.dipkd``'s settings on four FPN-sized maps,
  two of them with odd sides. The device's forward (autograd on, the torch path) and its
  no-grad forward are compared with the CPU's no-grad forward, which is the fused numba
  kernel (:mod:`dipkd.kd.haar_kernel`) for the default Haar/std denoiser; the device's input
  gradient with the CPU's (torch path). On the CPU itself the forward comparison is the torch
  path against the fused kernel.
- ``KD <method>`` for every registered KD method (:func:`dipkd.kd.methods.kd_methods`), built
  from its ``methods.<name>`` entry exactly as a distillation run builds it
  (:func:`dipkd.mmdet_config.build_distill_config`, ``baseline_detector``): the same seeded
  weights copied to the device, the same inputs (student and teacher FPN features of the
  distilled levels at a 136x96 input, odd sides from P3 on; the dense head's scores and box
  deltas, its anchor generator and box coder; GT boxes), the same random masks (every
  ``torch.rand``/``torch.randn`` draw comes from one seeded CPU stream and is moved to the
  device). Reference: the CPU's pass with autograd (terms; gradients of the student's
  features and scores and of the loss's own parameters). The device's pass with autograd
  must give the same terms and gradients, and its no-grad pass the same terms, within
  :data:`TOL`. On the CPU the first is the reference itself and is not repeated; the second
  compares the CPU's no-grad pass (DIPKD: the fused wavelet kernel) with its autograd pass.

On CUDA TF32 is off during these comparisons (cuDNN convolutions default to TF32 on Ampere
and later, about 1e-3 relative error): they test the code, not the precision mode.
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager

from .core import Check, CheckFailed, Context, rel_diff, require_close

TOL = 1e-4                          # relative to each tensor's largest value (float32)
SNS_MAPS = ((38, 50), (19, 25), (10, 13), (5, 7))   # (H, W); odd sides on the last three
SNS_SHAPE = (2, 256)                # batch, channels
KD_INPUT = (96, 136)                # batch input (H, W): FPN maps 24x34, 12x17 .. 2x3
KD_BOXES = ([[10.0, 12.0, 60.0, 50.0], [90.0, 50.0, 130.0, 90.0], [100.0, 10.0, 112.0, 18.0]],
            [[30.0, 20.0, 90.0, 80.0]])


@contextmanager
def exact_float32(device):
    """TF32 off for CUDA matmuls and convolutions inside the block (restored after)."""
    import torch
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@contextmanager
def same_random(seed: int):
    """Inside the block ``torch.rand``/``torch.randn`` draw from one CPU generator seeded with
    ``seed`` (whatever generator the caller passes) and move the result to the requested
    device: the random masks of MGD, DIPKD and IFKD are then the same on every device."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    real = {name: getattr(torch, name) for name in ("rand", "randn")}

    def seeded(draw):
        def call(*size, generator=None, device=None, **kwargs):
            out = draw(*size, generator=gen, **kwargs)
            return out if device is None else out.to(device)
        return call
    for name, draw in real.items():
        setattr(torch, name, seeded(draw))
    try:
        yield
    finally:
        for name, draw in real.items():
            setattr(torch, name, draw)


def _randn(shape, gen):
    import torch
    return torch.randn(*shape, generator=gen)


# ---------------------------------------------------------------------------------- SNS

def sns_module(params: dict):
    """The SNS of ``methods.dipkd`` (tau and the wavelet settings)."""
    from ..kd.sns import SelectiveNoiseSuppression
    m = params["methods"]["dipkd"]
    return SelectiveNoiseSuppression(m.get("tau", 0.5), m.get("wavelet", "db1"),
                                     m.get("wavelet_levels", 3), m.get("threshold", "std"),
                                     m.get("threshold_scale", 0.5), m.get("odd_size", "resize"))


def sns_pass(sns, student, teacher, upstream, device, grad: bool):
    """(output, A^S, A^C, input gradient or None) of SNS on ``device``: the student's feature
    weighted by the teacher's attention, denoised; backward of sum(output * upstream)."""
    import torch
    x = student.to(device, copy=True).requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        out, a_s, a_c = sns(x, attention_source=teacher.to(device), return_attention=True)
    if not grad:
        return out, a_s, a_c, None
    (out * upstream.to(device)).sum().backward()
    return out.detach(), a_s, a_c, x.grad


def sns_diffs(sns, shape, device, seed: int) -> tuple[dict, bool]:
    """The relative differences of one map's SNS on ``device`` from the CPU's, and whether the
    CPU reference was the fused kernel."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    s, t, g = (_randn(shape, gen) for _ in range(3))
    fused = sns.denoise._fused_kernel_takes(s)
    ref = sns_pass(sns, s, t, g, "cpu", grad=False)          # fused kernel when it takes it
    ref_grad = sns_pass(sns, s, t, g, "cpu", grad=True)      # the torch path
    dev = sns_pass(sns, s, t, g, device, grad=True)
    dev_nograd = sns_pass(sns, s, t, g, device, grad=False)
    hw = "x".join(map(str, shape[-2:]))
    if not torch.isfinite(dev[3]).all():
        raise CheckFailed(f"SNS {hw}: the input gradient on {device} is not finite")
    return {f"{hw} forward": rel_diff(dev[0], ref[0]),
            f"{hw} no-grad forward": rel_diff(dev_nograd[0], ref[0]),
            f"{hw} A^S": rel_diff(dev[1], ref[1]), f"{hw} A^C": rel_diff(dev[2], ref[2]),
            f"{hw} backward": rel_diff(dev[3], ref_grad[3])}, fused


def check_sns(ctx: Context) -> str:
    """SNS forward and backward on the device against the CPU's numbers (see the module)."""
    sns = sns_module(ctx.params)
    diffs, fused = {}, True
    with exact_float32(ctx.device):
        for k, hw in enumerate(SNS_MAPS):
            found, took = sns_diffs(sns, SNS_SHAPE + hw, ctx.device, seed=10 + k)
            diffs.update(found)
            fused = fused and took
    ref = "the fused numba kernel" if fused else "the CPU torch path"
    err = require_close(diffs, TOL, f"SNS on {ctx.device} vs {ref}")
    maps = ", ".join("x".join(map(str, hw)) for hw in SNS_MAPS)
    if ctx.device.type == "cpu":
        return (f"maps {maps}: forward, torch path (autograd) = {ref}, backward finite; "
                f"max rel. diff {err:.1e}")
    return (f"maps {maps}: forward on {ctx.device} (autograd and no-grad) = {ref}, "
            f"backward = CPU autograd; max rel. diff {err:.1e}")


# ---------------------------------------------------------------------------- KD losses

def registered_methods() -> list[str]:
    """Every registered KD method (:func:`dipkd.kd.methods.kd_methods`), sorted."""
    from ..kd.methods import kd_methods
    return sorted(kd_methods())


def kd_config(params: dict, method: str) -> tuple[dict, dict, list[int]]:
    """(the ``kd_loss`` config, the student's model dict, the distilled FPN levels) of
    ``method`` as a distillation run on ``baseline_detector`` builds them; a registered
    method without a ``methods`` entry gets its class defaults."""
    from ..config.params import distill_spec, run_spec
    from ..kd.methods import kd_methods
    from ..mmdet_config import build_distill_config
    params = copy.deepcopy(params)
    detector = params.get("baseline_detector", params["detectors"][0])
    dataset = params["datasets"][0]
    params.setdefault("methods", {}).setdefault(method, {"type": kd_methods()[method].__name__})
    cfg = build_distill_config(distill_spec(params, method, dataset, detector),
                               run_spec(params, "teacher", dataset, detector), None)
    model = cfg.model.to_dict()
    levels = model["fpn_levels"] if model["fpn_levels"] is not None else list(range(5))
    return model["kd_loss"], model["student"], list(levels)


def dense_head_cfg(model: dict) -> dict:
    """The config of the model's dense head (Faster R-CNN's RPN, RetinaNet's head)."""
    return model.get("rpn_head") or model["bbox_head"]


def build_kd_loss(cfg: dict, seed: int):
    """The KD loss of ``cfg`` on the CPU with seeded initial weights."""
    import torch
    from mmdet.registry import MODELS
    torch.manual_seed(seed)
    loss = MODELS.build(copy.deepcopy(cfg))
    if hasattr(loss, "init_weights"):
        loss.init_weights()
    return loss


def device_copy(module, device):
    """The CPU module's weights on ``device`` (a deep copy; the CPU module is kept)."""
    return copy.deepcopy(module).to(device)


def kd_inputs(student_model: dict, levels: list[int], seed: int) -> dict:
    """CPU inputs of one KD loss call on the distilled ``levels`` of a :data:`KD_INPUT` batch
    of 2: student/teacher features (256 channels), dense-head scores and box deltas."""
    import torch
    from ..mmdet_config import dense_score_channels
    head = dense_head_cfg(student_model)
    strides = head["anchor_generator"]["strides"]
    sizes = [tuple(math.ceil(side / strides[lv]) for side in KD_INPUT) for lv in levels]
    scores = dense_score_channels(student_model)
    deltas = 4 * scores // int(head.get("num_classes", 1))
    gen = torch.Generator().manual_seed(seed)

    def maps(channels, scale=1.0):
        return [scale * _randn((2, channels, *hw), gen) for hw in sizes]
    return dict(student_feats=maps(256), teacher_feats=maps(256),
                student_cls_scores=maps(scores), teacher_cls_scores=maps(scores),
                student_bbox_preds=maps(deltas, 0.1), teacher_bbox_preds=maps(deltas, 0.1))


def data_samples(device):
    """One ``DetDataSample`` per image of the :data:`KD_INPUT` batch, GT boxes on ``device``."""
    import torch
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    out = []
    for boxes in KD_BOXES:
        s = DetDataSample()
        s.set_metainfo(dict(img_shape=KD_INPUT, pad_shape=KD_INPUT, ori_shape=KD_INPUT,
                            batch_input_shape=KD_INPUT, scale_factor=(1.0, 1.0)))
        b = torch.tensor(boxes, device=device)
        s.gt_instances = InstanceData(bboxes=b, labels=torch.zeros(len(b), dtype=torch.long,
                                                                   device=device))
        out.append(s)
    return out


def head_tools(student_model: dict):
    """The dense head's anchor generator and box coder, as the distiller passes them."""
    from mmdet.registry import TASK_UTILS
    head = dense_head_cfg(student_model)
    return (TASK_UTILS.build(copy.deepcopy(head["anchor_generator"])),
            TASK_UTILS.build(copy.deepcopy(head["bbox_coder"])))


def kd_pass(loss, inputs: dict, student_model: dict, levels, device, grad: bool, seed: int):
    """(loss terms, gradients) of one call of ``loss`` on ``device`` with the distiller's
    arguments; gradients (student features and scores, the loss's parameters) of the summed
    terms when ``grad``."""
    import torch
    moved = {k: [x.to(device, copy=True) for x in v] for k, v in inputs.items()}
    wants = ("student_feats", "student_cls_scores", "student_bbox_preds")
    for key in wants:
        for x in moved[key]:
            x.requires_grad_(grad)
    if not getattr(loss, "needs_teacher_head", False):
        moved["teacher_cls_scores"] = moved["teacher_bbox_preds"] = None
    if not getattr(loss, "needs_teacher_features", True):
        moved["teacher_feats"] = None
    prior_generator, bbox_coder = head_tools(student_model)
    loss.zero_grad(set_to_none=True)
    with same_random(seed), torch.set_grad_enabled(grad):
        terms = loss(data_samples=data_samples(device), batch_input_shape=KD_INPUT,
                     prior_generator=prior_generator, bbox_coder=bbox_coder,
                     fpn_levels=list(levels), **moved)
    grads = {}
    if grad and terms:                   # a control without KD terms has nothing to train
        total = sum(terms.values())
        if not total.requires_grad:
            raise CheckFailed("the loss does not depend on the student's inputs")
        total.backward()
        for key in wants:
            for level, x in zip(levels, moved[key]):
                if x.grad is not None:
                    grads[f"d/d{key}[{level}]"] = x.grad
        grads.update({f"d/d{n}": p.grad for n, p in loss.named_parameters()
                      if p.grad is not None})
    return {k: v.detach() for k, v in terms.items()}, grads


def kd_diffs(cfg: dict, student_model: dict, levels: list[int], device,
             seed: int) -> tuple[dict, dict]:
    """(relative differences from the CPU's autograd pass: the device's autograd pass, terms
    and gradients, skipped when the device is the CPU; the device's no-grad pass, terms,
    which on the CPU takes the fused wavelet kernel; the CPU's terms)."""
    import torch
    loss_cpu = build_kd_loss(cfg, seed)
    loss_dev = device_copy(loss_cpu, device)
    inputs = kd_inputs(student_model, levels, seed)
    ref, ref_grads = kd_pass(loss_cpu, inputs, student_model, levels, "cpu", True, seed)
    bad = [k for k, v in {**ref, **ref_grads}.items() if not torch.isfinite(v).all()]
    if bad:
        raise CheckFailed(f"{', '.join(bad[:3])} not finite on the CPU")
    passes = {"no-grad": kd_pass(loss_dev, inputs, student_model, levels, device, False, seed)}
    if device.type != "cpu":
        passes["autograd"] = kd_pass(loss_dev, inputs, student_model, levels, device, True,
                                     seed)
    diffs = {}
    for name, (terms, grads) in passes.items():
        bad = [k for k, v in terms.items() if not torch.isfinite(v).all()]
        if bad:
            raise CheckFailed(f"{', '.join(bad)} not finite on {device} ({name})")
        if set(terms) != set(ref) or (name == "autograd" and set(grads) != set(ref_grads)):
            raise CheckFailed(f"on {device} ({name}) the loss gives terms {sorted(terms)} "
                              f"and {len(grads)} gradients, on the CPU {sorted(ref)} and "
                              f"{len(ref_grads)}")
        diffs.update({f"{k} ({device} {name})": rel_diff(terms[k], ref[k]) for k in ref})
        diffs.update({f"{k} ({device} {name})": rel_diff(grads[k], ref_grads[k])
                      for k in grads})
    return diffs, ref


def kd_check(method: str) -> Check:
    """The ``KD <method>`` check (see the module docstring)."""
    def run(ctx: Context) -> str:
        cfg, student, levels = kd_config(ctx.params, method)
        with exact_float32(ctx.device):
            diffs, ref = kd_diffs(cfg, student, levels, ctx.device, seed=20)
        err = require_close(diffs, TOL, f"{method} on {ctx.device}")
        values = ", ".join(f"{k}={v.item():.4g}" for k, v in ref.items()) or "no KD terms"
        same = ("no-grad terms = CPU autograd" if ctx.device.type == "cpu"
                else "terms and gradients (autograd and no-grad) = CPU autograd")
        return f"levels {levels}: {values}; on {ctx.device}: {same}, max rel. diff {err:.1e}"
    return Check(f"KD {method}", run)


def sns_checks() -> list[Check]:
    return [Check("SNS fwd+bwd", check_sns)]


def kd_checks() -> list[Check]:
    """One check per registered KD method."""
    return [kd_check(m) for m in registered_methods()]
