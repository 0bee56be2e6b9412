"""Feature maps of the fast-weight cores (positive maps applied to queries and keys).

Each maps ``x [..., d]`` to positive features ``[..., d']``; ``sum_norm`` divides them by their sum.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def elu_p1(x: torch.Tensor) -> torch.Tensor:
    """ELU + 1: a positive feature map, [..., d] -> [..., d]."""
    return F.elu(x) + 1.0


def dpfp(x: torch.Tensor, nu: int = 1) -> torch.Tensor:
    """Deterministic parameter-free projection (Schlag et al. 2021): [..., d] -> [..., 2·d·nu]."""
    x = torch.cat([F.relu(x), F.relu(-x)], dim=-1)
    rolled = torch.cat([x.roll(shifts=j, dims=-1) for j in range(1, nu + 1)], dim=-1)
    return x.repeat_interleave(nu, dim=-1) * rolled if nu > 1 else x * rolled


def sum_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Divide by the sum over the last dimension (feature maps are positive)."""
    return x / (x.sum(-1, keepdim=True) + eps)
