"""The self-referential weight matrix (SRWM) of Irie, Schlag, Csordás & Schmidhuber (ICML 2022).

Row-vector form ``x @ W``, per head, all quantities read with the weights of the previous step::

    y_t = x_t Wy                      q_t = softmax(x_t Wq)
    k_t = softmax(x_t Wk)             b_t = sigmoid(x_t wb)          (4 learning rates)
    for (M, β) in ((Wy, b_t[0]), (Wq, b_t[1]), (Wk, b_t[2]), (wb, b_t[3])):
        M <- M + k_tᵀ ⊗ β (q_t M - k_t M)

Shapes: x [B, T, H, D]; Wy [B, H, D, Dy]; Wq, Wk [B, H, D, D]; wb [B, H, D, 4]; y [B, T, H, Dy].

Resets: ``reset [B, T]`` bool; where ``reset[b, t]``, the four matrices of row b return to the reset state
before step t (``reset_state``, by default the initial weights of the call).

Modes:
- ``"recurrent"``: the loop above, line for line, differentiated by autograd (the oracle).
- ``"fused"``: the four matrices side by side as one ``W = [Wy | Wq | Wk | wb]`` [B, H, D, Dy+2D+4],
  so that a step is one read ``x_t W``, one read ``(q_t - k_t) W`` and one rank-one update, with a
  hand-written backward pass. The backward pass stores only per-step vectors (q, k, b and
  ``r_t = (q_t - k_t) W_{t-1}``) and recovers ``W_{t-1} = W_t - k_tᵀ ⊗ (e_t ⊙ r_t)`` by reverting the
  updates step by step, as the reference CUDA kernel does: memory O(T·D) per head, not O(T·D²). On CPU
  the step loop runs in a small C kernel (compiled once with the system C compiler, see
  ``metarl/ops/_srwm_cpu.py``); elsewhere, or without a compiler, the same algorithm runs as torch ops.
  With resets the weights a reset overwrites cannot be recovered by reverting: the forward pass keeps a
  copy of them for the rows and steps that reset (memory O(number of resets · D²)), and the backward pass
  puts it back there, after sending the gradient of the weights at that step to the reset state. The
  time axis is never cut: a batch with resets costs about what it costs without.
"""
from __future__ import annotations

import torch

from .utils import check_reset, check_reset_state

MODES = ("recurrent", "fused")


def _check(x, Wy, Wq, Wk, wb, reset, reset_state):
    if x.dim() != 4:
        raise ValueError(f"srwm: x must be [B, T, H, D], got shape {tuple(x.shape)}")
    B, T, H, D = x.shape
    if Wy.dim() != 4 or Wy.shape[:3] != (B, H, D):
        raise ValueError(f"srwm: Wy must be [B, H, D, Dy] = [{B}, {H}, {D}, Dy], got {tuple(Wy.shape)}")
    for name, M, cols in (("Wq", Wq, D), ("Wk", Wk, D), ("wb", wb, 4)):
        if tuple(M.shape) != (B, H, D, cols):
            raise ValueError(f"srwm: {name} must be [{B}, {H}, {D}, {cols}], got {tuple(M.shape)}")
    check_reset_state("srwm", reset_state, (Wy, Wq, Wk, wb), "(Wy, Wq, Wk, wb)")
    return check_reset("srwm", reset, B, T)


def srwm_recurrent(x, Wy, Wq, Wk, wb, reset=None, reset_state=None):
    """The oracle: the SRWM equations step by step (autograd differentiates the loop)."""
    initial = (Wy, Wq, Wk, wb) if reset_state is None else tuple(reset_state)
    resets = [None] * x.shape[1] if reset is None else reset[:, :, None, None, None].unbind(1)  # [B, 1, 1, 1]
    ys = []
    for x_t, r_t in zip(x.unbind(1), resets):  # x_t: [B, H, D] (unbind: indexing would cost O(T) per step in backward)
        if r_t is not None:  # row b starts over before step t
            Wy, Wq, Wk, wb = (torch.where(r_t, M0, M) for M0, M in zip(initial, (Wy, Wq, Wk, wb)))
        y_t = torch.einsum("bhd,bhde->bhe", x_t, Wy)
        q_t = torch.softmax(torch.einsum("bhd,bhde->bhe", x_t, Wq), dim=-1)
        k_t = torch.softmax(torch.einsum("bhd,bhde->bhe", x_t, Wk), dim=-1)
        b_t = torch.sigmoid(torch.einsum("bhd,bhde->bhe", x_t, wb))  # [B, H, 4]
        new = []
        for i, M in enumerate((Wy, Wq, Wk, wb)):
            q_M = torch.einsum("bhd,bhde->bhe", q_t, M)
            k_M = torch.einsum("bhd,bhde->bhe", k_t, M)
            update = b_t[..., i, None] * (q_M - k_M)  # [B, H, cols]
            new.append(M + torch.einsum("bhd,bhe->bhde", k_t, update))
        Wy, Wq, Wk, wb = new
        ys.append(y_t)
    return torch.stack(ys, dim=1), (Wy, Wq, Wk, wb)


def _block_selector(Dy: int, D: int, like: torch.Tensor) -> torch.Tensor:
    """[4, Dy+2D+4] 0/1 matrix: row i marks the columns of the i-th matrix in W = [Wy|Wq|Wk|wb]."""
    sizes = (Dy, D, D, 4)
    sel = torch.zeros(4, sum(sizes), dtype=like.dtype, device=like.device)
    start = 0
    for i, n in enumerate(sizes):
        sel[i, start:start + n] = 1
        start += n
    return sel


def reset_slots(reset: torch.Tensor):
    """reset [N, T] bool -> (slot [N, T] int64, first [N] int64, count): the states overwritten by the resets
    are kept in one buffer [count, D, Dtot], row by row in time order; the j-th reset of row n is at
    ``first[n] + j`` and ``slot[n, t]`` is the index of row n's last reset at or before step t."""
    counts = reset.sum(1)
    first = counts.cumsum(0) - counts
    return first[:, None] + reset.cumsum(1) - 1, first, int(counts.sum())


def fused_forward_torch(x, W, Dy, resets=None):
    """Step loop of the fused form with torch ops. x: [N, T, D] (N = B·H), W: [N, D, Dtot] (consumed);
    resets: None or ``(reset [N, T] bool, Wr [N, D, Dtot], first, count)``.

    Returns y [N, T, Dy], final W, the per-step vectors q, k [N, T, D], b [N, T, 4], r [N, T, Dtot], and the
    states overwritten by the resets (None without resets; see :func:`reset_slots`).
    """
    N, T, D = x.shape
    Dtot = W.shape[-1]
    sel = _block_selector(Dy, D, x)
    y = x.new_empty(N, T, Dy)
    qs, ks, bs, rs = x.new_empty(N, T, D), x.new_empty(N, T, D), x.new_empty(N, T, 4), x.new_empty(N, T, Dtot)
    saved, steps = None, ()
    if resets is not None:
        reset, Wr, _, count = resets
        slot = reset_slots(reset)[0]
        saved = x.new_empty(count + 1, D, Dtot)  # the extra last entry takes the rows that do not reset
        steps = set(reset.any(0).nonzero().flatten().tolist())
    for t in range(T):
        if t in steps:  # some rows start over: keep what they had, then load the reset state
            m = reset[:, t]
            saved.index_copy_(0, torch.where(m, slot[:, t], count), W)
            W.copy_(torch.where(m[:, None, None], Wr, W))
        z = torch.bmm(x[:, t:t + 1], W).squeeze(1)  # [N, Dtot]
        y[:, t] = z[:, :Dy]
        q = torch.softmax(z[:, Dy:Dy + D], dim=-1)
        k = torch.softmax(z[:, Dy + D:Dy + 2 * D], dim=-1)
        b = torch.sigmoid(z[:, Dy + 2 * D:])
        r = torch.bmm((q - k).unsqueeze(1), W).squeeze(1)  # [N, Dtot]
        W.baddbmm_(k.unsqueeze(2), (r * (b @ sel)).unsqueeze(1))
        qs[:, t], ks[:, t], bs[:, t], rs[:, t] = q, k, b, r
    return y, W, qs, ks, bs, rs, saved


def fused_backward_torch(x, W, Dy, qs, ks, bs, rs, grad_y, grad_W, resets=None, saved=None):
    """Reverse pass of the fused form. W: final weights (consumed); returns (dx [N, T, D], dW0, dWr or None)."""
    N, T, D = x.shape
    sel = _block_selector(Dy, D, x)
    G = grad_W.clone()
    dx = torch.empty_like(x)
    dWr, steps = None, ()
    if resets is not None:
        reset, _, _, count = resets
        slot = reset_slots(reset)[0]
        dWr = torch.zeros_like(G)
        steps = set(reset.any(0).nonzero().flatten().tolist())
    for t in range(T - 1, -1, -1):
        q, k, b, r, x_t = qs[:, t], ks[:, t], bs[:, t], rs[:, t], x[:, t]
        e = b @ sel
        P = e * r  # the row written into W at step t
        W.baddbmm_(k.unsqueeze(2), P.unsqueeze(1), alpha=-1)  # W is now W_{t-1}
        dP = torch.bmm(k.unsqueeze(1), G).squeeze(1)  # [N, Dtot]
        dk_outer = torch.bmm(G, P.unsqueeze(2)).squeeze(2)  # [N, D]
        dr = dP * e
        db = (dP * r) @ sel.t()  # [N, 4]
        dd = torch.bmm(dr.unsqueeze(1), W.transpose(1, 2)).squeeze(1)  # d = q - k
        dq, dk = dd, dk_outer - dd
        dzq = q * (dq - (dq * q).sum(-1, keepdim=True))
        dzk = k * (dk - (dk * k).sum(-1, keepdim=True))
        dzb = db * b * (1 - b)
        dz = torch.cat([grad_y[:, t], dzq, dzk, dzb], dim=-1)  # [N, Dtot]
        dx[:, t] = torch.bmm(dz.unsqueeze(1), W.transpose(1, 2)).squeeze(1)
        # G_{t-1} = G_t + (q - k)ᵀ dr + x_tᵀ dz
        G.baddbmm_(torch.stack([q - k, x_t], dim=2), torch.stack([dr, dz], dim=1))
        if t in steps:  # W_{t-1} was the reset state for these rows: its gradient goes there
            m = reset[:, t, None, None]
            dWr.add_(G * m)
            G.masked_fill_(m, 0)
            W.copy_(torch.where(m, saved[torch.where(reset[:, t], slot[:, t], count)], W))
    return dx, G, dWr


def _backend(x: torch.Tensor):
    """The C kernel for float32/float64 CPU tensors when it can be built, else None (torch ops)."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return None
    from . import _srwm_cpu

    return _srwm_cpu.kernel()


class _FusedSRWM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W0, Wr, Dy, reset):
        """x [B, T, H, D], W0 [B, H, D, Dtot], Wr: the reset state like W0 (None without resets)."""
        B, T, H, D = x.shape
        Dtot = W0.shape[-1]
        xf = x.transpose(1, 2).reshape(B * H, T, D).contiguous()
        W = W0.reshape(B * H, D, Dtot).clone().contiguous()
        resets = None
        if reset is not None:
            reset_f = reset[:, None, :].expand(B, H, T).reshape(B * H, T)  # [N, T], N = B·H
            resets = (reset_f, Wr.reshape(B * H, D, Dtot).contiguous(), *reset_slots(reset_f)[1:])
        kernel = _backend(x)
        if kernel is not None:
            y, W, qs, ks, bs, rs, saved = kernel.forward(xf, W, Dy, resets)
        else:
            y, W, qs, ks, bs, rs, saved = fused_forward_torch(xf, W, Dy, resets)
        ctx.save_for_backward(xf, W, qs, ks, bs, rs, saved)
        ctx.resets = None if resets is None else (resets[0], None, *resets[2:])  # Wr itself is not needed
        ctx.shape = (B, T, H, D, Dy, Dtot)
        return y.reshape(B, H, T, Dy).transpose(1, 2), W.reshape(B, H, D, Dtot).clone()

    @staticmethod
    def backward(ctx, grad_y, grad_W):
        B, T, H, D, Dy, Dtot = ctx.shape
        xf, W, qs, ks, bs, rs, saved = ctx.saved_tensors
        if grad_y is None:
            grad_y = xf.new_zeros(B, T, H, Dy)
        if grad_W is None:
            grad_W = xf.new_zeros(B, H, D, Dtot)
        gy = grad_y.transpose(1, 2).reshape(B * H, T, Dy).contiguous()
        gW = grad_W.reshape(B * H, D, Dtot).contiguous()
        kernel = _backend(xf)
        if kernel is not None:
            dx, dW, dWr = kernel.backward(xf, W.clone(), Dy, qs, ks, bs, rs, gy, gW, ctx.resets, saved)
        else:
            dx, dW, dWr = fused_backward_torch(xf, W.clone(), Dy, qs, ks, bs, rs, gy, gW, ctx.resets, saved)
        if dWr is not None:
            dWr = dWr.reshape(B, H, D, Dtot)
        return dx.reshape(B, H, T, D).transpose(1, 2), dW.reshape(B, H, D, Dtot), dWr, None, None


def srwm_fused(x, Wy, Wq, Wk, wb, reset=None, reset_state=None):
    """Same values and gradients as :func:`srwm_recurrent`, with O(T·D) memory for the backward pass
    (plus one copy of the weights per reset)."""
    Dy, D = Wy.shape[-1], Wq.shape[-1]
    W0 = torch.cat([Wy, Wq, Wk, wb], dim=-1)
    Wr = None
    if reset is not None:
        Wr = W0 if reset_state is None else torch.cat(list(reset_state), dim=-1)
    y, W = _FusedSRWM.apply(x, W0, Wr, Dy, reset)
    return y, tuple(W.split((Dy, D, D, 4), dim=-1))


def srwm(x, Wy, Wq, Wk, wb, mode: str = "recurrent", reset=None, reset_state=None):
    """Run the SRWM over a sequence: returns ``(y [B, T, H, Dy], (Wy, Wq, Wk, wb) after the last step)``.

    reset: ``[B, T]`` bool or None; ``reset[b, t]`` sets row b's four matrices to ``reset_state`` before step t.
    reset_state: ``(Wy, Wq, Wk, wb)`` shaped like the initial weights, the weights a reset returns to; None:
    the initial weights of the call. A core that carries its weights across calls passes its own initial
    weights here.
    """
    reset = _check(x, Wy, Wq, Wk, wb, reset, reset_state)
    if mode == "recurrent":
        return srwm_recurrent(x, Wy, Wq, Wk, wb, reset, reset_state)
    if mode == "fused":
        return srwm_fused(x, Wy, Wq, Wk, wb, reset, reset_state)
    raise ValueError(f"srwm: unknown mode {mode!r}; modes: {', '.join(MODES)}")
