"""RoIAlign on the CPU, faster and to the bit what mmcv's own CPU kernel computes.

mmcv's CPU RoIAlign (``mmcv/ops/csrc/pytorch/cpu/roi_align.cpp``, from Detectron2/Caffe2) is
single-threaded and, in its backward, recomputes the bilinear weights of every sample point
once per channel; on the CPU profiles it was 15-24% of a Faster R-CNN training step
(``reports/benchmarks.md``). Here, for ``pool_mode='avg'`` (mmdet's default):

- **forward**: torchvision's ``roi_align`` (the same Detectron2 arithmetic: identical outputs);
- **backward**: :func:`_backward_kernel` (numba), which walks RoI -> bin -> sample point as
  mmcv does, computes each point's four weights once, and applies them to all channels at once
  in channels-last order. Each element of the input gradient receives the same float32 terms
  in the same order as in mmcv's loop (RoI, then bin, then sample point, then the four
  corners), each term computed the same way (``grad * w / count`` in float32), so the sums are
  identical, bit for bit (``tests/test_roi_align_cpu.py`` compares them with mmcv's kernel).

:func:`install` routes mmcv's ``RoIAlign`` module through it for CPU tensors (``avg`` pooling,
not ``use_torchvision``, not while TorchScript traces); CUDA and every other case stay
mmcv's. ``DIPKD_MMCV_ROI_ALIGN=1``
turns it off.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch.autograd import Function

OFF_ENV = "DIPKD_MMCV_ROI_ALIGN"


def _kernel():
    import numba

    f32 = np.float32

    @numba.njit(cache=True, nogil=True)
    def backward(grad_out, rois, height, width, spatial_scale, sampling_ratio, aligned,
                 grad_in):
        """``grad_out``: (R, PH, PW, C) float32; ``rois``: (R, 5) float32; ``grad_in``: (N,
        H, W, C) float32 zeros, accumulated in place (mmcv's ROIAlignBackward, avg mode)."""
        n_rois, pooled_h, pooled_w, channels = grad_out.shape
        offset = f32(0.5) if aligned else f32(0.0)
        for n in range(n_rois):
            b = int(rois[n, 0])
            roi_start_w = rois[n, 1] * spatial_scale - offset
            roi_start_h = rois[n, 2] * spatial_scale - offset
            roi_end_w = rois[n, 3] * spatial_scale - offset
            roi_end_h = rois[n, 4] * spatial_scale - offset
            roi_width = roi_end_w - roi_start_w
            roi_height = roi_end_h - roi_start_h
            if not aligned:
                roi_width = max(roi_width, f32(1.0))
                roi_height = max(roi_height, f32(1.0))
            bin_h = roi_height / f32(pooled_h)
            bin_w = roi_width / f32(pooled_w)
            if sampling_ratio > 0:
                grid_h = sampling_ratio
                grid_w = sampling_ratio
            else:
                grid_h = int(np.ceil(roi_height / f32(pooled_h)))
                grid_w = int(np.ceil(roi_width / f32(pooled_w)))
            count = f32(grid_h * grid_w)
            for ph in range(pooled_h):
                for pw in range(pooled_w):
                    g = grad_out[n, ph, pw]
                    for iy in range(grid_h):
                        y = roi_start_h + f32(ph) * bin_h + \
                            f32(iy + 0.5) * bin_h / f32(grid_h)
                        for ix in range(grid_w):
                            x = roi_start_w + f32(pw) * bin_w + \
                                f32(ix + 0.5) * bin_w / f32(grid_w)
                            if y < -1.0 or y > height or x < -1.0 or x > width:
                                continue
                            yy = y if y > 0 else f32(0.0)
                            xx = x if x > 0 else f32(0.0)
                            y_low = int(yy)
                            x_low = int(xx)
                            if y_low >= height - 1:
                                y_low = y_high = height - 1
                                yy = f32(y_low)
                            else:
                                y_high = y_low + 1
                            if x_low >= width - 1:
                                x_low = x_high = width - 1
                                xx = f32(x_low)
                            else:
                                x_high = x_low + 1
                            ly = yy - f32(y_low)
                            lx = xx - f32(x_low)
                            hy = f32(1.0) - ly
                            hx = f32(1.0) - lx
                            w1, w2, w3, w4 = hy * hx, hy * lx, ly * hx, ly * lx
                            t1 = grad_in[b, y_low, x_low]
                            t2 = grad_in[b, y_low, x_high]
                            t3 = grad_in[b, y_high, x_low]
                            t4 = grad_in[b, y_high, x_high]
                            for c in range(channels):
                                t1[c] += g[c] * w1 / count
                                t2[c] += g[c] * w2 / count
                                t3[c] += g[c] * w3 / count
                                t4[c] += g[c] * w4 / count
        return grad_in

    return backward


_BACKWARD = None


def _backward(grad_output: torch.Tensor, rois: torch.Tensor, input_shape, spatial_scale: float,
              sampling_ratio: int, aligned: bool) -> torch.Tensor:
    global _BACKWARD
    if _BACKWARD is None:
        _BACKWARD = _kernel()
    n, c, h, w = input_shape
    grad_in = np.zeros((n, h, w, c), dtype=np.float32)
    g = grad_output.detach().permute(0, 2, 3, 1).contiguous().numpy()
    r = rois.detach().contiguous().numpy().astype(np.float32, copy=False)
    _BACKWARD(g, r, h, w, np.float32(spatial_scale), int(sampling_ratio), bool(aligned),
              grad_in)
    return torch.from_numpy(grad_in).permute(0, 3, 1, 2).contiguous()


class CPURoIAlignFunction(Function):
    """``avg`` RoIAlign of float32 CPU tensors: torchvision's forward, :func:`_backward`."""

    @staticmethod
    def forward(ctx, input, rois, output_size, spatial_scale, sampling_ratio, aligned):
        from torchvision.ops import roi_align
        ctx.save_for_backward(rois)
        ctx.meta = (tuple(input.shape), spatial_scale, sampling_ratio, aligned)
        return roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)

    @staticmethod
    def backward(ctx, grad_output):
        (rois,) = ctx.saved_tensors
        shape, spatial_scale, sampling_ratio, aligned = ctx.meta
        grad = _backward(grad_output, rois, shape, spatial_scale, sampling_ratio, aligned)
        return grad, None, None, None, None, None


def applies(module, input: torch.Tensor) -> bool:
    """Whether :class:`CPURoIAlignFunction` computes ``module``'s RoIAlign of ``input``: not
    while TorchScript traces the model (the FLOP count, :mod:`dipkd.efficiency`, an export),
    which records mmcv's op as before."""
    return (input.device.type == "cpu" and input.dtype == torch.float32
            and not torch.jit.is_tracing() and not torch.jit.is_scripting()
            and module.pool_mode == "avg" and not module.use_torchvision
            and os.environ.get(OFF_ENV) != "1")


def install() -> None:
    """Route mmcv's ``RoIAlign`` module through :class:`CPURoIAlignFunction` where
    :func:`applies` (idempotent)."""
    from mmcv.ops.roi_align import RoIAlign
    if getattr(RoIAlign.forward, "_dipkd", False):
        return
    original = RoIAlign.forward

    def forward(self, input, rois):
        if applies(self, input):
            return CPURoIAlignFunction.apply(input, rois, self.output_size,
                                             self.spatial_scale, self.sampling_ratio,
                                             self.aligned)
        return original(self, input, rois)

    forward._dipkd = True
    RoIAlign.forward = forward
