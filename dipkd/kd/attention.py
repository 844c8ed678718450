"""Spatial and channel attention of a feature map (DIPKD Eq. 3-6, as in FGD)."""
from __future__ import annotations

import torch


def _spatial_from_abs(absf: torch.Tensor, tau: float) -> torch.Tensor:
    n, _, h, w = absf.shape
    v = absf.mean(dim=1).reshape(n, -1)
    return (h * w * torch.softmax(v / tau, dim=1)).reshape(n, 1, h, w)


def _channel_from_abs(absf: torch.Tensor, tau: float) -> torch.Tensor:
    n, c = absf.shape[:2]
    v = absf.mean(dim=(2, 3))
    return (c * torch.softmax(v / tau, dim=1)).reshape(n, c, 1, 1)


def spatial_attention(feat: torch.Tensor, tau: float) -> torch.Tensor:
    """A^S = H*W * softmax_{i,j}(V^S / tau), V^S_{ij} = mean_k |F_{kij}| (Eq. 3, 5).

    ``feat`` (N, C, H, W) -> (N, 1, H, W); each map sums to H*W (mean 1)."""
    return _spatial_from_abs(feat.abs(), tau)


def channel_attention(feat: torch.Tensor, tau: float) -> torch.Tensor:
    """A^C = C * softmax_k(V^C / tau), V^C_k = mean_{i,j} |F_{kij}| (Eq. 4, 6).

    ``feat`` (N, C, H, W) -> (N, C, 1, 1); each vector sums to C (mean 1)."""
    return _channel_from_abs(feat.abs(), tau)


def attention_maps(feat: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(A^S, A^C) of Eq. 5-6 from one pass of |F| (what :func:`spatial_attention` and
    :func:`channel_attention` return, without computing |F| twice)."""
    absf = feat.abs()
    return _spatial_from_abs(absf, tau), _channel_from_abs(absf, tau)
