"""Vector quantisers: straight-through VQ (gradient-trained codebook), EMA-VQ, and the Kohonen self-organising
map (KSOM) of Irie, Csordás & Schmidhuber ("Topological Neural Discrete Representation Learning à la Kohonen").

Every quantiser maps ``x [..., D]`` to a :class:`QuantizerOutput`: the nearest code of each vector (``codes``
[...]), the quantised vectors with the straight-through gradient (``quantized`` [..., D]: the value of the
code, the gradient of the identity), the loss to add to the model's (``loss``, with its parts in
``losses``) and batch statistics (``stats``: perplexity, dead codes).

The codebook updates, for a batch of vectors x_i with nearest codes c_i (during training only)::

    vq     codebook loss |sg(x) - e_c|² + beta |x - sg(e_c)|²     (van den Oord et al. 2017; e trained by SGD)
    ema    n_k = #{i: c_i = k}                                     (writes to code k)
    ksom   n_k = Σ_i h_t(k, c_i)                                   (the winner's grid neighbours are written too)
           N_k <- γ N_k + (1 - γ) n_k                              (running count; starts at ``initial_count``)
           N_k <- (N_k + ε) / (Σ_j N_j + K ε) · Σ_j N_j            (Laplace smoothing, stored)
           m_k <- γ m_k + (1 - γ) Σ_i h_t(k, c_i) x_i              (running sum; starts at the initial codebook)
           e_k <- m_k / N_k

with the commitment loss beta |x - sg(e_c)|² as the only loss of ema / ksom. ``ema`` is ``ksom`` with the
empty neighbourhood h_t(k, j) = [k = j] (a test checks the two step for step). Neighbourhoods on the grid
(grid distance d(k, j), t = the number of training updates so far, ``shrink`` the reference's
``count_unit``), each with h_t(k, k) = 1:

    none        h = 0 off the diagonal
    hard        h = [d < 1.5] / (1 + t · shrink)                  (the grid neighbours, diagonals included as in the
                                                                   reference, with a weight that decays)
    gaussian    h = exp(-d · (1 + t · shrink) / base)             (the reference's form: exponential in d, its
                                                                   width base / (1 + t·shrink) shrinking over time)

The SOM's writes are computed from the batch's per-code counts and sums (Σ_i h_t(k, c_i) x_i = Σ_j h_t(k, j)
Σ_{i: c_i = j} x_i), so the neighbourhood touches K rows, not every input: ``hard`` adds w_t times each code's
grid neighbours' statistics (a gather over at most 2 or 8 neighbours), ``gaussian`` is one K x K matmul (with the weights
below float's normal range set to 0: subnormal weights made it up to 20x slower); the step count is read on
the device (no host read of it per update). A test checks both against h_t @ (n, Σ x).

The initial count N (``initial_count``) matters: the reference's N = 0 with the running sum started at the
codebook makes a code that gets no write in the first updates jump to about e_k / ε, far from every input,
so EMA loses it for good; the neighbours' writes of the SOM keep such codes alive (a test shows both).

Read (not copied): IDSIA/kohonen-vae ``layers/som_vector_quantizer.py`` (``HardSOM``, ``Grid``, the
neighbourhoods); the formulas above are its update, the grid distance the Euclidean distance of grid
coordinates as there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["QuantizerOutput", "VectorQuantizer", "EMAQuantizer", "KohonenQuantizer", "QUANTIZERS",
           "NEIGHBOURHOODS", "make_quantizer", "grid_shape", "grid_coordinates", "neighbourhood_matrix",
           "codebook_stats", "topography_score", "nearest_codes"]

NEIGHBOURHOODS = ("none", "hard", "gaussian")


@dataclass
class QuantizerOutput:
    """quantized [..., D] (straight-through), codes long [...], loss (scalar: what to add to the model's loss),
    losses {part: scalar tensor}, stats {name: float} of the batch (perplexity, dead_codes, used_codes)."""

    quantized: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    losses: Dict[str, torch.Tensor] = field(default_factory=dict)
    stats: Dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ the grid
def grid_shape(num_codes: int, dim: int, shape: Optional[Sequence[int]] = None) -> Tuple[int, ...]:
    """The grid's side lengths: ``shape`` when given (its product must be ``num_codes``), else the most
    square factorisation of ``num_codes`` into ``dim`` factors (1-D: (K,); 2-D, K = 512: (32, 16))."""
    if shape is not None and len(shape) > 0:
        shape = tuple(int(s) for s in shape)
        if math.prod(shape) != num_codes or len(shape) != dim:
            raise ValueError(f"grid shape {shape} must have {dim} sides whose product is num_codes={num_codes}")
        return shape
    if dim not in (1, 2):
        raise ValueError(f"grid_dim must be 1 or 2, got {dim}")
    if dim == 1:
        return (num_codes,)
    side = int(math.isqrt(num_codes))
    while num_codes % side:
        side -= 1
    return (num_codes // side, side)


def grid_coordinates(shape: Sequence[int]) -> torch.Tensor:
    """float [K, len(shape)]: the grid position of each code (code k in row-major order)."""
    axes = [torch.arange(s, dtype=torch.float32) for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(shape))


def neighbourhood_matrix(kind: str, distances: torch.Tensor, step: float, shrink: float,
                         base: float = 10.0) -> torch.Tensor:
    """h_t [K, K] (symmetric, diagonal 1) for grid distances [K, K] after ``step`` training updates."""
    eye = torch.eye(len(distances), dtype=distances.dtype, device=distances.device)
    if kind == "none":
        return eye
    if kind == "hard":
        h = (distances < 1.5).to(distances.dtype) / (1.0 + step * shrink)
    elif kind == "gaussian":
        h = torch.exp(-distances * ((1.0 + step * shrink) / base))
    else:
        raise ValueError(f"neighbourhood {kind!r} is not known; choose one of: {', '.join(NEIGHBOURHOODS)}")
    return torch.where(eye > 0, eye, h)


# ------------------------------------------------------------------------------------------------ statistics
def nearest_codes(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """flat [M, D], codebook [K, D] -> long [M]: the index of the nearest code (squared Euclidean distance)."""
    distances = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.t() + codebook.pow(2).sum(1)
    return distances.argmin(1)


def codebook_stats(counts: torch.Tensor) -> Dict[str, float]:
    """counts [K] (uses of each code) -> perplexity exp(H(p)) of the code distribution p = counts / Σ counts,
    dead_codes (codes never used), used_codes."""
    counts = counts.float()
    p = counts / counts.sum().clamp_min(1e-12)
    perplexity = torch.exp(-(p * torch.log(p + 1e-10)).sum()).item()
    dead = int((counts == 0).sum().item())
    return {"perplexity": perplexity, "dead_codes": float(dead), "used_codes": float(len(counts) - dead)}


def topography_score(codebook: torch.Tensor, coordinates: torch.Tensor, codes: Optional[torch.Tensor] = None) -> float:
    """Mean distance between codes that are grid neighbours (grid distance 1) over the mean distance between
    all pairs of distinct codes. About 1 for a codebook with no relation to its grid, small for a topographic
    one. ``codes`` (optional, long): restrict both means to these codes (e.g. the live ones)."""
    if codes is not None:
        codebook, coordinates = codebook[codes], coordinates[codes]
    K = len(codebook)
    if K < 2:
        return float("nan")
    vector = torch.cdist(codebook.float(), codebook.float())
    grid = torch.cdist(coordinates.float(), coordinates.float())
    off_diagonal = ~torch.eye(K, dtype=torch.bool, device=codebook.device)
    neighbours = (grid - 1).abs() < 1e-6
    if not neighbours.any():
        return float("nan")
    return (vector[neighbours].mean() / vector[off_diagonal].mean().clamp_min(1e-12)).item()


# ------------------------------------------------------------------------------------------------ quantisers
class _Quantizer(nn.Module):
    """Shared parts: the grid (for the topography score of every quantiser), the step counter, lookup."""

    def __init__(self, num_codes: int, dim: int, commitment_cost: float, grid_dim: int,
                 grid: Optional[Sequence[int]], init_std: float):
        super().__init__()
        if num_codes < 1 or dim < 1:
            raise ValueError(f"num_codes and dim must be positive, got {num_codes}, {dim}")
        self.num_codes, self.dim, self.commitment_cost = num_codes, dim, commitment_cost
        self.grid_shape = grid_shape(num_codes, grid_dim, grid)
        coordinates = grid_coordinates(self.grid_shape)
        self.register_buffer("coordinates", coordinates, persistent=False)
        self.register_buffer("grid_distances", torch.cdist(coordinates, coordinates), persistent=False)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # training updates so far
        self.init_std = init_std

    @property
    def codebook(self) -> torch.Tensor:
        raise NotImplementedError

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """codes long [...] -> their vectors [..., D]."""
        return F.embedding(codes, self.codebook)

    def topography(self) -> float:
        return topography_score(self.codebook.detach(), self.coordinates)

    def _output(self, x: torch.Tensor, codes: torch.Tensor, quantized: torch.Tensor,
                losses: Dict[str, torch.Tensor]) -> QuantizerOutput:
        counts = torch.bincount(codes.reshape(-1), minlength=self.num_codes)
        stats = codebook_stats(counts)
        straight_through = x + (quantized - x).detach()
        return QuantizerOutput(straight_through, codes, sum(losses.values()), losses, stats)


class VectorQuantizer(_Quantizer):
    """Straight-through VQ of van den Oord et al. (2017): the codebook (a parameter) is trained by the codebook
    loss |sg(x) - e_c|², the encoder by the commitment loss beta |x - sg(e_c)|²."""

    def __init__(self, num_codes: int, dim: int, commitment_cost: float = 0.25, grid_dim: int = 1,
                 grid: Optional[Sequence[int]] = None, init_std: float = 1.0):
        super().__init__(num_codes, dim, commitment_cost, grid_dim, grid, init_std)
        self.weight = nn.Parameter(torch.randn(num_codes, dim) * init_std)

    @property
    def codebook(self) -> torch.Tensor:
        return self.weight

    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        flat = x.reshape(-1, self.dim)
        with torch.no_grad():
            codes = nearest_codes(flat.detach(), self.weight)
        quantized = self.weight[codes].view_as(x)
        if self.training:
            self.step += 1
        losses = {"codebook": F.mse_loss(quantized, x.detach()),
                  "commitment": self.commitment_cost * F.mse_loss(x, quantized.detach())}
        return self._output(x, codes.view(x.shape[:-1]), quantized, losses)


class EMAQuantizer(_Quantizer):
    """EMA-VQ (van den Oord et al. 2017, appendix; Razavi et al. 2019): the codebook is the running mean of
    the vectors assigned to each code (the update in the module docstring, neighbourhood ``none``).

    decay: γ; epsilon: ε of the Laplace smoothing; initial_count: N, the running count's start (1: the
    codebook is m / N from the first step; 0: the reference's setting, under which codes die)."""

    def __init__(self, num_codes: int, dim: int, decay: float = 0.99, epsilon: float = 1e-5,
                 initial_count: float = 1.0, commitment_cost: float = 0.25, grid_dim: int = 1,
                 grid: Optional[Sequence[int]] = None, init_std: float = 1.0):
        super().__init__(num_codes, dim, commitment_cost, grid_dim, grid, init_std)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay, self.epsilon, self.initial_count = decay, epsilon, initial_count
        weight = torch.randn(num_codes, dim) * init_std
        self.register_buffer("weight", weight)
        self.register_buffer("ema_sum", weight.clone())  # m: starts at the codebook, as in the reference
        self.register_buffer("ema_count", torch.full((num_codes,), float(initial_count)))  # N

    @property
    def codebook(self) -> torch.Tensor:
        return self.weight

    def writes(self, codes: torch.Tensor, flat: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(n [K], Σ x [K, D]) written to each code by this batch: the assigned vectors only."""
        n = torch.bincount(codes, minlength=self.num_codes).to(flat.dtype)
        sums = torch.zeros(self.num_codes, self.dim, dtype=flat.dtype, device=flat.device).index_add_(0, codes, flat)
        return n, sums

    @torch.no_grad()
    def update(self, codes: torch.Tensor, flat: torch.Tensor) -> None:
        """One EMA step of the count, the running sum and the codebook (module docstring)."""
        n, sums = self.writes(codes, flat)
        g = self.decay
        count = g * self.ema_count + (1 - g) * n
        total = count.sum()
        count = (count + self.epsilon) / (total + self.num_codes * self.epsilon) * total
        self.ema_count.copy_(count)
        self.ema_sum.mul_(g).add_(sums, alpha=1 - g)
        self.weight.copy_(self.ema_sum / self.ema_count.unsqueeze(1))

    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        flat = x.reshape(-1, self.dim)
        with torch.no_grad():
            codes = nearest_codes(flat.detach(), self.weight)
            quantized = self.weight[codes].view_as(x)  # the codes before this batch's update, as the reference
            if self.training:
                self.update(codes, flat.detach().to(self.weight.dtype))
                self.step += 1
        losses = {"commitment": self.commitment_cost * F.mse_loss(x, quantized)}
        return self._output(x, codes.view(x.shape[:-1]), quantized, losses)


class KohonenQuantizer(EMAQuantizer):
    """Kohonen SOM quantiser (KSOM): the EMA update with the writes spread over the winner's grid neighbours
    by h_t (``neighbourhood`` none | hard | gaussian, shrinking with the number of updates by ``shrink``;
    ``base``: the Gaussian's initial width). Codes sit on a ``grid_dim``-D grid (``grid``: its sides)."""

    def __init__(self, num_codes: int, dim: int, neighbourhood: str = "hard", shrink: float = 0.1,
                 base: float = 10.0, grid_dim: int = 1, grid: Optional[Sequence[int]] = None,
                 decay: float = 0.99, epsilon: float = 1e-5, initial_count: float = 0.0,
                 commitment_cost: float = 0.25, init_std: float = 1.0):
        if neighbourhood not in NEIGHBOURHOODS:
            raise ValueError(f"neighbourhood {neighbourhood!r} is not known; choose one of: {', '.join(NEIGHBOURHOODS)}")
        super().__init__(num_codes, dim, decay, epsilon, initial_count, commitment_cost, grid_dim, grid, init_std)
        self.neighbourhood, self.shrink, self.base = neighbourhood, shrink, base
        off_diagonal = ~torch.eye(num_codes, dtype=torch.bool)
        if neighbourhood == "hard":  # each code's grid neighbours (d < 1.5, itself excluded) as an index table
            neighbours = (self.grid_distances < 1.5) & off_diagonal
            degree = int(neighbours.sum(1).max()) if num_codes > 1 else 0
            order = torch.sort(neighbours.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :degree]
            index = torch.where(neighbours.gather(1, order), order, torch.full_like(order, num_codes))  # K: a zero row
            self.register_buffer("neighbour_index", index, persistent=False)  # long [K, max degree]
        if neighbourhood == "gaussian":  # -d with an exact zero diagonal: exp(-d c) is 1 on it
            self.register_buffer("negative_distances", -self.grid_distances * off_diagonal, persistent=False)

    def neighbourhood_weights(self) -> torch.Tensor:
        """h_t [K, K] at the current step (the definition; the update uses :meth:`spread`, which equals h_t @ ·)."""
        return neighbourhood_matrix(self.neighbourhood, self.grid_distances, float(self.step), self.shrink, self.base)

    def spread(self, stats: torch.Tensor) -> torch.Tensor:
        """h_t @ stats for per-code statistics [K, F], without building h_t from the grid at every update:
        none: stats; hard: stats + w_t Σ_{j grid neighbour of k} stats_j with w_t = 1 / (1 + t·shrink), a gather
        over at most 2 (1-D) or 8 (2-D) neighbours, O(K F); gaussian: exp(-d c_t) @ stats with
        c_t = (1 + t·shrink) / base, one elementwise exp and one matmul, O(K² F), where weights too small for a
        normal float (< 3e-38 in float32) are 0: subnormal numbers, which the far codes of a large grid reach
        after a few updates, make the exp and the matmul 5-20x slower on a CPU; setting them to 0 moves each
        output by less than 3e-38 times the statistics. t is read on the device."""
        if self.neighbourhood == "none":
            return stats
        t = self.step.to(stats.dtype)
        if self.neighbourhood == "hard":
            padded = torch.cat([stats, stats.new_zeros(1, stats.shape[1])])
            return stats + padded[self.neighbour_index].sum(1) / (1.0 + t * self.shrink)
        exponent = self.negative_distances.to(stats.dtype) * ((1.0 + t * self.shrink) / self.base)
        floor = math.log(torch.finfo(stats.dtype).tiny) + 1.0  # below it exp() would be subnormal (< 3e-38 in float32)
        h = torch.exp(exponent.clamp_min(floor)).masked_fill_(exponent < floor, 0.0)
        return h @ stats

    def writes(self, codes: torch.Tensor, flat: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """n_k = Σ_i h(k, c_i) = Σ_j h(k, j) #{i: c_i = j} and Σ_i h(k, c_i) x_i = Σ_j h(k, j) Σ_{i: c_i = j} x_i:
        the winners' counts and sums [K, 1 + D] spread by h in one :meth:`spread` (whatever the batch size)."""
        n, sums = super().writes(codes, flat)
        spread = self.spread(torch.cat([n.unsqueeze(1), sums], 1))
        return spread[:, 0], spread[:, 1:]


QUANTIZERS = {"vq": VectorQuantizer, "ema": EMAQuantizer, "ksom": KohonenQuantizer}


def make_quantizer(kind: str, num_codes: int, dim: int, **options) -> _Quantizer:
    """``kind`` vq | ema | ksom with its keyword options (see each class)."""
    if kind not in QUANTIZERS:
        raise ValueError(f"quantizer {kind!r} is not known; choose one of: {', '.join(QUANTIZERS)}")
    return QUANTIZERS[kind](num_codes, dim, **options)
