"""The recurrence of the Recurrent DeltaNet (Irie, Schlag, Csordás & Schmidhuber, NeurIPS 2021).

Shapes (batch-first, per head width ``d``)::

    from_input: [B, T, H, 3d+1]    R: [H, d, 3d+1]    state: (S [B, H, d, d], y [B, H, d])    reset: [B, T] bool

``from_input`` holds the contributions of the inputs to ``[q | k | v | β]`` (the cores compute them for
all steps at once, ``W x_t``); ``R`` maps the squashed previous output to the same four parts. Per head::

    (S_{t-1}, y_{t-1}) <- reset state  where reset[b, t]   (row b starts over before step t)
    h_t = from_input_t + tanh(y_{t-1}) R                        h_t: [3d+1]
    q_t = softmax(h_t[:d])      k_t = softmax(h_t[d:2d])      v_t = h_t[2d:3d]      β_t = sigmoid(h_t[3d])
    S_t = S_{t-1} + k_t (β_t (v_t - S_{t-1}ᵀ k_t))ᵀ
    y_t = S_tᵀ q_t                                              o: [B, T, H, d]

The output ``y_{t-1}`` feeds step ``t`` through a nonlinearity, so there is no chunkwise form: the only
mode is ``"recurrent"``, the loop above (differentiated by autograd). At a step where some rows reset,
their rows of ``S`` and ``y`` are overwritten (out of place) with those of the reset state: a batch with
resets costs about what it costs without.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .utils import check_reset, check_reset_state, is_zero_constant

MODES = ("recurrent",)


def _check(from_input, R, initial_state, mode) -> None:
    if mode not in MODES:
        raise ValueError(f"rec_delta: unknown mode {mode!r}; expected one of {', '.join(map(repr, MODES))}")
    if R.dim() != 3 or R.shape[2] != 3 * R.shape[1] + 1:
        raise ValueError(f"rec_delta: R must be [H, d, 3d+1], got shape {tuple(R.shape)}")
    H, d = R.shape[:2]
    if from_input.dim() != 4 or from_input.shape[2:] != (H, 3 * d + 1):
        raise ValueError(
            f"rec_delta: from_input must be [B, T, H, 3d+1] = [B, T, {H}, {3 * d + 1}] (from R), "
            f"got shape {tuple(from_input.shape)}"
        )
    if initial_state is not None:
        B = from_input.shape[0]
        S, y = initial_state
        if tuple(S.shape) != (B, H, d, d) or tuple(y.shape) != (B, H, d):
            raise ValueError(
                f"rec_delta: initial_state must be (S [B, H, d, d], y [B, H, d]) = ({(B, H, d, d)}, {(B, H, d)}), "
                f"got ({tuple(S.shape)}, {tuple(y.shape)})"
            )


def rec_delta(
    from_input: torch.Tensor,
    R: torch.Tensor,
    initial_state: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    mode: str = "recurrent",
    reset: Optional[torch.Tensor] = None,
    reset_state: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """The RecDelta recurrence (see the module docstring).

    Args:
        from_input: ``[B, T, H, 3d+1]`` input contributions to ``[q | k | v | β]`` (before softmax/sigmoid).
        R: ``[H, d, 3d+1]`` recurrent weights, applied to ``tanh(y_{t-1})``.
        initial_state: ``(S [B, H, d, d], y [B, H, d])`` or ``None`` (zeros).
        mode: ``"recurrent"`` (the step-by-step definition; the only mode).
        reset: ``[B, T]`` bool or ``None``: ``reset[b, t]`` sets row b's ``(S, y)`` to ``reset_state`` before step t.
        reset_state: ``(S [B, H, d, d], y [B, H, d])``, the state a reset returns to; ``None``: the initial
            state of the call. A core that carries its state across calls passes its own initial state here.

    Returns:
        ``(o, (S, y))`` with ``o: [B, T, H, d]`` (``o[:, t] = y_t``) and the final state.
    """
    _check(from_input, R, initial_state, mode)
    if initial_state is None:
        B, H, d = from_input.shape[0], R.shape[0], R.shape[1]
        initial_state = (from_input.new_zeros(B, H, d, d), from_input.new_zeros(B, H, d))
    check_reset_state("rec_delta", reset_state, tuple(initial_state))
    reset = check_reset("rec_delta", reset, from_input.shape[0], from_input.shape[1])
    reset_state = initial_state if reset_state is None else reset_state
    return _rec_delta_recurrent(from_input, R, *initial_state, reset, reset_state)


def _reset_events(reset, reset_state):
    """For each step with resets, the rows that reset and their reset state: {t: (rows, S rows, y rows)}.

    The reset state's rows are gathered once for all resets and split by step, so that its gradient is
    scattered back once (a ``torch.where`` per step would add a full-size gradient per step)."""
    events = reset.t().nonzero()  # [E, 2]: (t, b), ordered by t
    steps, counts = torch.unique_consecutive(events[:, 0], return_counts=True)
    rows = events[:, 1]
    counts = counts.tolist()
    parts = zip(rows.split(counts), reset_state[0][rows].split(counts), reset_state[1][rows].split(counts))
    return dict(zip(steps.tolist(), parts))


def _zero_events(reset, dtype):
    """For each step with resets, a 0/1 factor per row, ``{t: [B, 1, 1]}`` (0: the row starts over), for a
    reset state that is a constant zero: then a reset is one multiplication (no gather, no scatter)."""
    keep = (~reset).to(dtype)[:, :, None, None]  # [B, T, 1, 1]
    return {t: keep[:, t] for t in reset.any(0).nonzero().flatten().tolist()}


def _rec_delta_recurrent(from_input, R, S, y, reset=None, reset_state=None):
    d = R.shape[1]
    outputs = []
    zero = reset is not None and all(is_zero_constant(x) for x in reset_state)
    events = {} if reset is None else _zero_events(reset, S.dtype) if zero else _reset_events(reset, reset_state)
    for t, h_in in enumerate(from_input.unbind(1)):  # unbind: indexing costs O(T) in backward
        if t in events and zero:  # these rows start over (from zeros) before step t
            S, y = S * events[t][..., None], y * events[t]
        elif t in events:  # these rows start over before step t
            rows, S_rows, y_rows = events[t]
            S, y = S.index_put((rows,), S_rows), y.index_put((rows,), y_rows)
        h = h_in + torch.einsum("bhd,hde->bhe", torch.tanh(y), R)  # h_t = from_input_t + tanh(y_{t-1}) R
        q = torch.softmax(h[..., :d], dim=-1)
        k = torch.softmax(h[..., d:2 * d], dim=-1)
        v = h[..., 2 * d:3 * d]
        beta = torch.sigmoid(h[..., 3 * d:])  # [B, H, 1]
        v_old = torch.einsum("bhkv,bhk->bhv", S, k)  # S_{t-1}ᵀ k_t
        S = S + torch.einsum("bhk,bhv->bhkv", k, beta * (v - v_old))
        y = torch.einsum("bhkv,bhk->bhv", S, q)  # y_t = S_tᵀ q_t
        outputs.append(y)
    return torch.stack(outputs, dim=1), (S, y)
