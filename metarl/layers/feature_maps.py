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
    """Deterministic parameter-free projection (Schlag, Irie & Schmidhuber 2021), [..., d] -> [..., 2·d·nu]::

        x' = [relu(x), relu(-x)]                                  [..., 2d]
        dpfp(x) = [x' ⊙ roll(x', 1), x' ⊙ roll(x', 2), ..., x' ⊙ roll(x', nu)]

    with ``roll(v, j)[i] = v[(i - j) mod 2d]`` (``torch.roll``). As ``mul_roll_repeat`` in IDSIA/recurrent-fwp
    (``language_modeling/src/model_main.py``, ``DPFPMultiHeadAttn``): the j-th block multiplies x' itself,
    not a repeated copy of each of its entries.
    """
    if nu < 1:
        raise ValueError(f"dpfp: nu must be >= 1, got {nu}")
    x = torch.cat([F.relu(x), F.relu(-x)], dim=-1)
    return torch.cat([x * x.roll(shifts=j, dims=-1) for j in range(1, nu + 1)], dim=-1)


def sum_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Divide by the sum over the last dimension (feature maps are positive)."""
    return x / (x.sum(-1, keepdim=True) + eps)
