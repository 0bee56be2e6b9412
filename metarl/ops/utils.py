"""Helpers shared by the ops.

Input checks, the default zero state, the reset mask (:func:`check_reset`, and :class:`ChunkResets`, its
form inside chunks), and the chunk layout: ``[B, T, H, ...]`` (batch-first) <-> ``[N, G = B*H, C, ...]``
(chunk-major, ``N`` chunks of ``C`` steps, time zero-padded to ``N * C``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

MODES = ("recurrent", "chunk")  # the modes of the chunked ops


def check_inputs(
    op: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: Optional[torch.Tensor],
    initial_state: Optional[torch.Tensor],
    mode: str,
    chunk_size: int,
) -> None:
    """Raise ``ValueError`` naming the offending shapes/arguments."""
    if mode not in MODES:
        raise ValueError(f"{op}: unknown mode {mode!r}; expected one of {', '.join(map(repr, MODES))}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{op}: chunk_size must be a positive int, got {chunk_size!r}")
    if q.dim() != 4:
        raise ValueError(f"{op}: q must be [B, T, H, Dk], got shape {tuple(q.shape)}")
    if k.shape != q.shape:
        raise ValueError(f"{op}: k shape {tuple(k.shape)} != q shape {tuple(q.shape)} (both [B, T, H, Dk])")
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"{op}: v must be [B, T, H, Dv] with [B, T, H] = {tuple(q.shape[:3])} from q, "
            f"got v shape {tuple(v.shape)}"
        )
    if beta is not None and beta.shape != q.shape[:3]:
        raise ValueError(
            f"{op}: beta must be [B, T, H] = {tuple(q.shape[:3])}, got beta shape {tuple(beta.shape)}"
        )
    if initial_state is not None:
        B, _, H, Dk = q.shape
        want = (B, H, Dk, v.shape[-1])
        if tuple(initial_state.shape) != want:
            raise ValueError(
                f"{op}: initial_state must be [B, H, Dk, Dv] = {want}, "
                f"got shape {tuple(initial_state.shape)}"
            )


def check_reset(op: str, reset: Optional[torch.Tensor], B: int, T: int) -> Optional[torch.Tensor]:
    """The reset mask ``[B, T]`` as bool, or ``None`` when it is ``None`` or has no True entry (then the op
    runs its reset-free path). Raises ``ValueError`` on a wrong shape."""
    if reset is None:
        return None
    if tuple(reset.shape) != (B, T):
        raise ValueError(f"{op}: reset must be [B, T] = {(B, T)}, got shape {tuple(reset.shape)}")
    reset = reset.to(torch.bool)
    return reset if bool(reset.any()) else None


def is_zero_constant(x: Optional[torch.Tensor]) -> bool:
    """True when ``x`` is all zeros and needs no gradient: a reset state the chunked ops can skip."""
    return x is not None and not x.requires_grad and not bool(x.any())


def check_reset_state(op: str, reset_state, like, what: str = "initial_state"):
    """``reset_state`` must have the shape(s) of the initial state ``like`` (a tensor or a tuple of them)."""
    if reset_state is None:
        return
    if isinstance(like, (tuple, list)):
        if not isinstance(reset_state, (tuple, list)) or len(reset_state) != len(like):
            raise ValueError(f"{op}: reset_state must be a tuple of {len(like)} tensors like {what}")
        pairs = zip(reset_state, like)
    else:
        pairs = [(reset_state, like)]
    for r, x in pairs:
        if tuple(r.shape) != tuple(x.shape):
            raise ValueError(f"{op}: reset_state must have the shape of {what}, {tuple(x.shape)}, "
                             f"got shape {tuple(r.shape)}")


def state_or_zeros(q: torch.Tensor, v: torch.Tensor, initial_state: Optional[torch.Tensor]) -> torch.Tensor:
    """``initial_state`` or zeros ``[B, H, Dk, Dv]`` in q's dtype/device."""
    if initial_state is not None:
        return initial_state
    B, _, H, Dk = q.shape
    return q.new_zeros(B, H, Dk, v.shape[-1])


def to_chunks(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``[B, T, H, ...]`` -> ``[N, B*H, C, ...]`` (chunk-major, contiguous), zero-padding T up to ``N * C``.

    Chunk-major so that the sequential loops over chunks read and write contiguous slices ``x[n]``
    (strided slices make CPU batched matmuls fall back to one small GEMM per batch entry).
    """
    B, T, H = x.shape[:3]
    pad = (-T) % chunk_size
    if pad:
        # F.pad counts dims from the last one; pad only the time dimension (dim 1).
        x = F.pad(x, (0, 0) * (x.dim() - 2) + (0, pad))
    x = x.reshape(B, -1, chunk_size, H, *x.shape[3:])  # [B, N, C, H, ...]
    x = x.movedim(3, 1).movedim(2, 0)  # [N, B, H, C, ...]
    return x.contiguous().flatten(1, 2)


def from_chunks(x: torch.Tensor, B: int, T: int) -> torch.Tensor:
    """``[N, B*H, C, D]`` -> ``[B, T, H, D]``, dropping the padding."""
    N, G, C, D = x.shape
    x = x.view(N, B, G // B, C, D).movedim(0, 1).movedim(3, 2)  # [B, N, C, H, D]
    return x.reshape(B, N * C, G // B, D)[:, :T]


def bmm_view(x: torch.Tensor) -> torch.Tensor:
    """``[N, G, R, D]`` -> ``[N*G, R, D]`` (a view) for ``torch.bmm``/``baddbmm``."""
    return x.flatten(0, 1)


def above_diagonal(C: int, device, diagonal: int) -> torch.Tensor:
    """``[C, C]`` bool mask of the entries to zero with ``masked_fill_``: ``triu(diagonal)``. With
    ``diagonal=1`` what is left is the causal lower triangle (diagonal included), with 0 the strict one."""
    return torch.ones(C, C, dtype=torch.bool, device=device).triu(diagonal)


class ChunkResets:
    """A reset mask ``[B, T]`` in the chunk layout of :func:`to_chunks` (``G = B*H``), for the chunked ops.

    A *segment* is a run of steps of one row without a reset inside: a reset at step t starts a new one.
    The pair mask is kept per batch row and broadcast over the heads (a ``[N, G, ...]`` tensor viewed as
    ``[N, B, H, ...]``); the row masks are per sequence-head (``G``), cheap to build and to broadcast:

    - ``keep`` [N, B, 1, C, C]: 1 for the pairs (i, j) of one segment with j <= i, 0 for the pairs to mask
      (j > i, or a reset in (j, i]); ``keep_strict``: the same without the diagonal;
    - ``first`` [N, G, C, 1]: the steps before the chunk's first reset (they read the carried state), and
      ``after = 1 - first`` (they read the reset state);
    - ``last`` [N, G, C, 1]: the steps of the chunk's last segment (they write the state carried out);
    - ``cut`` [N, G, 1, 1] bool: the row resets inside the chunk (the carried state is cut); ``cut_f``: 0/1.

    Masks are applied by multiplication (on CPU several times faster than ``masked_fill``/``where`` with a
    broadcast mask), so a masked entry that is not finite is not zeroed.
    """

    def __init__(self, reset: torch.Tensor, H: int, chunk_size: int, dtype: torch.dtype):
        B, T = reset.shape
        C = chunk_size
        r = F.pad(reset.to(dtype), (0, (-T) % C))  # [B, N*C]
        seg = r.view(B, -1, C).cumsum(-1).transpose(0, 1)  # [N, B, C]: resets so far in the chunk (small integers)
        N = seg.shape[0]
        tril = ~above_diagonal(C, reset.device, 1)
        keep = (seg.unsqueeze(-1) == seg.unsqueeze(-2)) & tril  # [N, B, C, C]
        self.H = H
        self.keep = keep.to(dtype).unsqueeze(2)  # [N, B, 1, C, C]
        self.keep_strict = (keep & ~torch.eye(C, dtype=torch.bool, device=reset.device)).to(dtype).unsqueeze(2)
        rows = torch.stack([seg == 0, seg == seg[..., -1:]]).to(dtype)  # [2, N, B, C]: first, last
        rows = rows[:, :, :, None, :, None].expand(2, N, B, H, C, 1).reshape(2, N, B * H, C, 1)
        self.first, self.last = rows.unbind(0)
        self.after = 1 - self.first
        self.cut = self.first[:, :, -1:] == 0  # [N, G, 1, 1]: the chunk's last step comes after a reset
        self.cut_f = self.cut.to(dtype)

    def mask_(self, x: torch.Tensor, strict: bool = False) -> torch.Tensor:
        """Zero the masked pairs of ``x [N, G, C, C]`` in place (``keep``; ``strict``: ``keep_strict``)."""
        N, G, C, _ = x.shape
        x.view(N, -1, self.H, C, C).mul_(self.keep_strict if strict else self.keep)
        return x

    def where_cut(self, n: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[G, D1, D2]``: ``x`` for the rows that reset inside chunk n, ``y`` for the others."""
        return torch.where(self.cut[n], x, y)

    def uncut(self, n: int, x: torch.Tensor) -> torch.Tensor:
        """``x [G, D1, D2]`` with the rows that reset inside chunk n zeroed."""
        return x.masked_fill(self.cut[n], 0)

    def cut_sum(self, x: torch.Tensor) -> torch.Tensor:
        """``Σ_n x[n]`` over the chunks in which the row resets, ``x [N, G, D1, D2]`` -> ``[G, D1, D2]``."""
        return (x * self.cut_f).sum(0)
