"""Spatial and channel attention of a feature map (DIPKD Eq. 3-6, as in FGD)."""
from __future__ import annotations

import torch


def spatial_attention(feat: torch.Tensor, tau: float) -> torch.Tensor:
    """A^S = H*W * softmax_{i,j}(V^S / tau), V^S_{ij} = mean_k |F_{kij}| (Eq. 3, 5).

    ``feat`` (N, C, H, W) -> (N, 1, H, W); each map sums to H*W (mean 1)."""
    n, _, h, w = feat.shape
    v = feat.abs().mean(dim=1).reshape(n, -1)
    return (h * w * torch.softmax(v / tau, dim=1)).reshape(n, 1, h, w)


def channel_attention(feat: torch.Tensor, tau: float) -> torch.Tensor:
    """A^C = C * softmax_k(V^C / tau), V^C_k = mean_{i,j} |F_{kij}| (Eq. 4, 6).

    ``feat`` (N, C, H, W) -> (N, C, 1, 1); each vector sums to C (mean 1)."""
    n, c = feat.shape[:2]
    v = feat.abs().mean(dim=(2, 3))
    return (c * torch.softmax(v / tau, dim=1)).reshape(n, c, 1, 1)
