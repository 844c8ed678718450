"""The environment: versions, the device, and mmcv's compiled ops on the device.

- ``environment``: torch, CUDA, cuDNN, the GPUs; FAIL when the requested device cannot run a
  tensor op (every device check after it is then a SKIP);
- ``mmcv nms``: ``mmcv.ops.nms`` on the device keeps the same boxes as on the CPU, and the
  CPU's keeps those of ``torchvision.ops.nms`` (an independent implementation);
- ``mmcv RoIAlign``: forward and backward of ``mmcv.ops.RoIAlign`` (Faster R-CNN's RoI
  extractor) on the device against the CPU, and the CPU's against ``torchvision.ops.roi_align``.
"""
from __future__ import annotations

from .core import Check, CheckFailed, Context, rel_diff, require_close

OPS_TOL = 1e-4     # float32, different summation orders


def versions() -> dict:
    """torch / CUDA / cuDNN / mmcv / mmdet / mmengine versions (``-`` where absent)."""
    import torch
    found = {"torch": torch.__version__, "cuda": torch.version.cuda or "-",
             "cudnn": cudnn_version(torch.backends.cudnn.version())}
    for name in ("mmcv", "mmdet", "mmengine"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            found[name] = "-"
    return found


def cudnn_version(number: int | None) -> str:
    """cuDNN's version number as text: 90100 -> 9.1.0 (cuDNN 9), 8906 -> 8.9.6 (cuDNN 8)."""
    if not number:
        return "-"
    major, rest = divmod(number, 10000) if number >= 10000 else divmod(number, 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def device_label(device) -> str:
    """``cuda:0 (NVIDIA H200, 139.8 GiB, sm_90)``, or the device's name."""
    import torch
    if device.type == "cuda" and torch.cuda.is_available() \
            and device.index < torch.cuda.device_count():
        return f"{device} ({gpus()[device.index]})"
    return str(device)


def gpus() -> list[str]:
    """``NAME (memory GiB)`` of each visible CUDA device."""
    import torch
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        prop = torch.cuda.get_device_properties(i)
        out.append(f"{prop.name} ({prop.total_memory / 2**30:.1f} GiB, "
                   f"sm_{prop.major}{prop.minor})")
    return out


def device_problem(device) -> str | None:
    """Why ``device`` cannot run tensor ops here (None when it can)."""
    import torch
    if device.type == "cpu":
        return None
    if device.type != "cuda":
        return f"device type {device.type!r} is not supported (cpu or cuda:N)"
    if not torch.cuda.is_available():
        return (f"{device} requested but torch.cuda.is_available() is False "
                f"(torch {torch.__version__}: no driver, no GPU, or a CPU build)")
    if device.index >= torch.cuda.device_count():
        return f"{device} requested but only {torch.cuda.device_count()} GPU(s) are visible"
    try:
        (torch.ones(2, device=device) * 2).sum().item()
    except Exception as exc:  # noqa: BLE001
        return f"a tensor op on {device} failed: {str(exc).splitlines()[0]}"
    return None


def check_environment(ctx: Context) -> str:
    """Versions and GPUs; the device must run a tensor op."""
    v = versions()
    seen = gpus()
    import torch
    detail = (f"torch {v['torch']}, CUDA {v['cuda']}, cuDNN {v['cudnn']}; "
              f"GPUs: {'; '.join(seen) if seen else 'none visible'}; "
              f"torch CPU threads: {torch.get_num_threads()}")
    ctx.device_error = device_problem(ctx.device)
    if ctx.device_error:
        raise CheckFailed(f"{ctx.device_error}; {detail}")
    return detail


def mmcv_build() -> str:
    """``mmcv X, ops compiled with CUDA Y`` (``CPU only``), or a CheckFailed when mmcv has no
    compiled ops at all."""
    import mmcv
    try:
        from mmcv import ops
    except Exception as exc:  # noqa: BLE001  (mmcv-lite, a broken _ext)
        raise CheckFailed(f"mmcv {mmcv.__version__} has no compiled ops ({str(exc)[:80]}); "
                          "rerun make setup (scripts/setup.sh builds mmcv with ops)") from None
    cuda = ops.get_compiling_cuda_version()
    built = "CPU only" if cuda == "not available" else f"CUDA {cuda}"
    return f"mmcv {mmcv.__version__}, ops built for {built}"


def _require_cuda_ops(ctx: Context, build: str) -> None:
    if ctx.on_cuda and build.endswith("CPU only"):
        raise CheckFailed(f"{build}: no CUDA ops; rerun make setup on this GPU machine")


def _boxes(n: int, seed: int):
    """``n`` random boxes (x1, y1, x2, y2) in a 200 x 200 image and distinct scores."""
    import torch
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 160
    wh = torch.rand(n, 2, generator=g) * 40 + 4
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g)


def check_nms(ctx: Context) -> str:
    """mmcv's nms on the device keeps what the CPU keeps, and the CPU what torchvision keeps."""
    import torch
    import torchvision
    build = mmcv_build()
    _require_cuda_ops(ctx, build)
    from mmcv.ops import nms
    boxes, scores = _boxes(400, seed=0)
    _, keep_cpu = nms(boxes, scores, 0.5)
    keep_tv = torchvision.ops.nms(boxes, scores, 0.5)
    if not torch.equal(keep_cpu.sort().values, keep_tv.sort().values):
        raise CheckFailed(f"{build}: CPU nms keeps {len(keep_cpu)} boxes, torchvision "
                          f"{len(keep_tv)}")
    _, keep_dev = nms(boxes.to(ctx.device), scores.to(ctx.device), 0.5)
    if not torch.equal(keep_dev.cpu().sort().values, keep_cpu.sort().values):
        raise CheckFailed(f"{build}: nms on {ctx.device} keeps {len(keep_dev)} boxes, "
                          f"on the CPU {len(keep_cpu)}")
    where = "CPU = torchvision" if ctx.device.type == "cpu" else f"{ctx.device} = CPU = torchvision"
    return f"{build}; {len(keep_cpu)} of 400 boxes kept at IoU 0.5, the same on {where}"


def _roi_inputs(seed: int):
    """A (2, 16, 40, 56) feature map of stride 4 and 24 RoIs over both images."""
    import torch
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(2, 16, 40, 56, generator=g)
    boxes, _ = _boxes(24, seed + 1)
    index = torch.arange(24).remainder(2).float()[:, None]
    return feat, torch.cat([index, boxes], 1), torch.randn(24, 16, 7, 7, generator=g)


def _roi_align(op, feat, rois, weight, device):
    """Output and input gradient of ``op`` on ``device`` (loss = sum(out * weight))."""
    x = feat.to(device, copy=True).requires_grad_(True)
    out = op(x, rois.to(device))
    (out * weight.to(device)).sum().backward()
    return out.detach(), x.grad


def check_roi_align(ctx: Context) -> str:
    """mmcv's RoIAlign (as Faster R-CNN's RoI head builds it) forward and backward on the
    device against the CPU, and the CPU's against torchvision's roi_align."""
    import torchvision
    build = mmcv_build()
    _require_cuda_ops(ctx, build)
    from mmcv.ops import RoIAlign
    op = RoIAlign(output_size=7, spatial_scale=0.25, sampling_ratio=0, aligned=True)

    def tv(x, rois):
        return torchvision.ops.roi_align(x, rois, 7, spatial_scale=0.25, sampling_ratio=0,
                                         aligned=True)
    feat, rois, weight = _roi_inputs(seed=3)
    out_cpu, grad_cpu = _roi_align(op, feat, rois, weight, "cpu")
    out_tv, grad_tv = _roi_align(tv, feat, rois, weight, "cpu")
    tv_err = require_close({"forward": rel_diff(out_cpu, out_tv),
                            "backward": rel_diff(grad_cpu, grad_tv)},
                           OPS_TOL, f"{build}: CPU RoIAlign vs torchvision")
    detail = (f"{build}; 24 RoIs 7x7, forward and backward: CPU = torchvision "
              f"(max rel. diff {tv_err:.1e})")
    if ctx.device.type == "cpu":
        return detail
    out_dev, grad_dev = _roi_align(op, feat, rois, weight, ctx.device)
    err = require_close({"forward": rel_diff(out_dev, out_cpu),
                         "backward": rel_diff(grad_dev, grad_cpu)},
                        OPS_TOL, f"{build}: RoIAlign on {ctx.device} vs CPU")
    return f"{detail}, {ctx.device} = CPU (max rel. diff {err:.1e})"


def checks() -> list[Check]:
    return [Check("environment", check_environment, needs_device=False),
            Check("mmcv nms", check_nms),
            Check("mmcv RoIAlign fwd+bwd", check_roi_align)]
