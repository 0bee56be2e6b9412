"""rec_delta: the op against a naive per-(row, head, step) implementation written like the maths
(values and gradients, non-zero initial states), plus a step by hand and the input checks."""
import math

import pytest
import torch

from metarl.ops import rec_delta
from metarl.testing import assert_close

# (B, H, T, d): T in {1, 7, 63} x d in {5, 16}, both (B, H) = (2, 3) and (3, 2)
CASES = [(B, H, T, d) for T in (1, 7, 63) for d in (5, 16) for B, H in ((2, 3), (3, 2))]
NAMES = ("from_input", "R", "S0", "y0")


def naive_rec_delta(from_input, R, S0, y0):
    """The recurrence with plain vector formulas, one (row b, head h) and one step at a time."""
    B, T, H, _ = from_input.shape
    d = R.shape[1]
    outputs = [[None] * H for _ in range(B)]
    S_final, y_final = [[None] * H for _ in range(B)], [[None] * H for _ in range(B)]
    for b in range(B):
        for h in range(H):
            S, y = S0[b, h], y0[b, h]  # [d, d] (rows: key index), [d]
            ys = []
            for t in range(T):
                r = torch.tanh(y)
                pre = from_input[b, t, h] + (r[:, None] * R[h]).sum(0)  # [3d + 1]
                q = torch.exp(pre[:d] - pre[:d].max())
                q = q / q.sum()
                k = torch.exp(pre[d:2 * d] - pre[d:2 * d].max())
                k = k / k.sum()
                v = pre[2 * d:3 * d]
                beta = 1.0 / (1.0 + torch.exp(-pre[3 * d]))
                v_old = (S * k[:, None]).sum(0)  # Sᵀ k
                S = S + k[:, None] * (beta * (v - v_old))[None, :]
                y = (S * q[:, None]).sum(0)  # Sᵀ q
                ys.append(y)
            outputs[b][h] = torch.stack(ys)  # [T, d]
            S_final[b][h], y_final[b][h] = S, y
    o = torch.stack([torch.stack(row, dim=1) for row in outputs])  # [B, T, H, d]
    S = torch.stack([torch.stack(row) for row in S_final])
    y = torch.stack([torch.stack(row) for row in y_final])
    return o, (S, y)


def make_inputs(B, H, T, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    from_input = torch.randn(B, T, H, 3 * d + 1, generator=g, dtype=dtype)
    R = torch.randn(H, d, 3 * d + 1, generator=g, dtype=dtype) / math.sqrt(d)
    S0 = torch.randn(B, H, d, d, generator=g, dtype=dtype) / math.sqrt(d)
    y0 = torch.randn(B, H, d, generator=g, dtype=dtype)
    return [x.requires_grad_() for x in (from_input, R, S0, y0)]


def run(fn, inputs, seed=1):
    """Outputs, final state and the gradients of a random linear function of all three."""
    from_input, R, S0, y0 = inputs
    o, (S, y) = fn(from_input, R, S0, y0)
    g = torch.Generator().manual_seed(seed)
    loss = sum((x * torch.randn(x.shape, generator=g, dtype=x.dtype)).sum() for x in (o, S, y))
    grads = torch.autograd.grad(loss, inputs)
    return dict(o=o, S=S, y=y, **{f"d{n}": dx for n, dx in zip(NAMES, grads)})


def op(from_input, R, S0, y0):
    return rec_delta(from_input, R, initial_state=(S0, y0))


@pytest.mark.parametrize("B,H,T,d", CASES)
def test_matches_naive_float64(B, H, T, d):
    inputs = make_inputs(B, H, T, d, torch.float64)
    ref = run(naive_rec_delta, inputs)
    out = run(op, inputs)
    for name in ref:
        assert_close(name, ref[name], out[name], rtol=1e-10)


def test_matches_naive_float32():
    inputs = make_inputs(2, 3, 63, 16, torch.float32)
    ref = run(naive_rec_delta, inputs)
    out = run(op, inputs)
    for name in ref:
        assert_close(name, ref[name], out[name], rtol=1e-5)


def test_one_step_by_hand():
    # d = 2, y0 = 0 (so the recurrent part is 0), S0 = [[1, 2], [3, 4]]:
    #   q = softmax([0, 0]) = [.5, .5];  k = softmax([log 3, 0]) = [.75, .25];  v = [5, 5];  β = sigmoid(0) = .5
    #   Sᵀ k = [.75 + .75, 1.5 + 1] = [1.5, 2.5];  u = .5 ([5, 5] - [1.5, 2.5]) = [1.75, 1.25]
    #   S1 = S0 + k uᵀ = [[2.3125, 2.9375], [3.4375, 4.3125]];  y1 = S1ᵀ q = [2.875, 3.625]
    from_input = torch.tensor([0.0, 0.0, math.log(3.0), 0.0, 5.0, 5.0, 0.0], dtype=torch.float64).view(1, 1, 1, 7)
    R = torch.randn(1, 2, 7, dtype=torch.float64)
    S0 = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64).view(1, 1, 2, 2)
    y0 = torch.zeros(1, 1, 2, dtype=torch.float64)
    o, (S, y) = rec_delta(from_input, R, initial_state=(S0, y0))
    S1 = torch.tensor([[2.3125, 2.9375], [3.4375, 4.3125]], dtype=torch.float64).view(1, 1, 2, 2)
    assert_close("S", S1, S, 1e-12)
    assert_close("y", torch.tensor([2.875, 3.625], dtype=torch.float64).view(1, 1, 2), y, 1e-12)
    assert torch.equal(o[:, 0], y)


def test_zero_initial_state_by_default():
    from_input, R, S0, y0 = (x.detach() for x in make_inputs(2, 3, 7, 5, torch.float64))
    o_none, (S_none, y_none) = rec_delta(from_input, R)
    o_zero, (S_zero, y_zero) = rec_delta(from_input, R, (torch.zeros_like(S0), torch.zeros_like(y0)))
    assert torch.equal(o_none, o_zero) and torch.equal(S_none, S_zero) and torch.equal(y_none, y_zero)


def test_split_calls_equal_one_call():
    from_input, R, S0, y0 = (x.detach() for x in make_inputs(2, 3, 7, 5, torch.float64))
    o, (S, y) = rec_delta(from_input, R, (S0, y0))
    o1, state = rec_delta(from_input[:, :3], R, (S0, y0))
    o2, (S2, y2) = rec_delta(from_input[:, 3:], R, state)
    assert_close("o", o, torch.cat((o1, o2), 1), 1e-12)
    assert_close("S", S, S2, 1e-12)
    assert_close("y", y, y2, 1e-12)


def test_bad_inputs():
    from_input, R, S0, y0 = (x.detach() for x in make_inputs(2, 3, 7, 5, torch.float64))
    with pytest.raises(ValueError, match=r"R must be \[H, d, 3d\+1\], got shape \(3, 5, 15\)"):
        rec_delta(from_input, R[..., :15])
    with pytest.raises(ValueError, match=r"from_input must be .*\[B, T, 3, 16\].*\(2, 7, 2, 16\)"):
        rec_delta(from_input[:, :, :2], R)
    with pytest.raises(ValueError, match=r"initial_state must be"):
        rec_delta(from_input, R, (S0, y0[:, :2]))
    with pytest.raises(ValueError, match="'recurrent'"):
        rec_delta(from_input, R, mode="chunk")
