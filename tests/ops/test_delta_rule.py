"""delta_rule: chunk (WY / UT transform) mode against the step-by-step oracle (values and gradients)."""
import pytest
import torch

from metarl.ops.delta_rule import delta_rule
from metarl.testing import assert_close

B, H = 2, 3

# (T, Dk, Dv, chunk_size): T in {1, 7, 63} x D in {5, 16}, Dk != Dv, T not a multiple of the chunk
# size with several chunks, and T an exact multiple of it.
CASES = [(T, D, D, 64) for T in (1, 7, 63) for D in (5, 16)] + [
    (63, 5, 8, 16),
    (7, 16, 5, 4),
    (63, 16, 16, 4),
    (32, 5, 5, 16),
]
NAMES = ("q", "k", "v", "beta", "S0")


def make_inputs(T, Dk, Dv, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, Dk, generator=g, dtype=dtype)
    # positive, sum-normalised keys and beta in (0, 1) keep the state bounded (as the cores do)
    k = torch.rand(B, T, H, Dk, generator=g, dtype=dtype) + 0.1
    k = k / k.sum(-1, keepdim=True)
    v = torch.randn(B, T, H, Dv, generator=g, dtype=dtype)
    beta = torch.rand(B, T, H, generator=g, dtype=dtype)
    S0 = torch.randn(B, H, Dk, Dv, generator=g, dtype=dtype)
    return [x.requires_grad_() for x in (q, k, v, beta, S0)]


def run(mode, inputs, chunk_size, seed=1):
    """Outputs, final state and gradients of a random linear function of both."""
    q, k, v, beta, S0 = inputs
    o, S = delta_rule(q, k, v, beta, initial_state=S0, mode=mode, chunk_size=chunk_size)
    g = torch.Generator().manual_seed(seed)
    loss = (o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() + (
        S * torch.randn(S.shape, generator=g, dtype=S.dtype)
    ).sum()
    grads = torch.autograd.grad(loss, inputs)
    return dict(o=o, final_state=S, **{f"d{n}": d for n, d in zip(NAMES, grads)})


@pytest.mark.parametrize("T,Dk,Dv,chunk_size", CASES)
def test_chunk_matches_recurrent_float64(T, Dk, Dv, chunk_size):
    inputs = make_inputs(T, Dk, Dv, torch.float64)
    ref = run("recurrent", inputs, chunk_size)
    out = run("chunk", inputs, chunk_size)
    for name in ref:
        assert_close(name, ref[name], out[name], rtol=1e-10)


def test_chunk_matches_recurrent_float32():
    inputs = make_inputs(63, 16, 16, torch.float32)
    ref = run("recurrent", inputs, 16)
    out = run("chunk", inputs, 16)
    for name in ref:
        assert_close(name, ref[name], out[name], rtol=1e-5)


@pytest.mark.parametrize("mode", ["recurrent", "chunk"])
def test_one_step_by_hand(mode):
    # S0 = [[1, 2], [3, 4]], k = [1, 0], v = [5, 5], beta = 0.5:
    #   S0ᵀ k = [1, 2];  u = 0.5 * ([5, 5] - [1, 2]) = [2, 1.5]
    #   S1 = S0 + k uᵀ = [[3, 3.5], [3, 4]]
    # q = [1, 1]:  o = S1ᵀ q = [3 + 3, 3.5 + 4] = [6, 7.5]
    S0 = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    q = torch.tensor([1.0, 1.0]).view(1, 1, 1, 2)
    k = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    v = torch.tensor([5.0, 5.0]).view(1, 1, 1, 2)
    beta = torch.tensor([0.5]).view(1, 1, 1)
    o, S = delta_rule(q, k, v, beta, initial_state=S0, mode=mode)
    assert torch.equal(S, torch.tensor([[3.0, 3.5], [3.0, 4.0]]).view(1, 1, 2, 2))
    assert torch.equal(o, torch.tensor([6.0, 7.5]).view(1, 1, 1, 2))


@pytest.mark.parametrize("mode", ["recurrent", "chunk"])
def test_zero_initial_state_by_default(mode):
    q, k, v, beta, S0 = make_inputs(7, 5, 8, torch.float64)
    o_none, S_none = delta_rule(q, k, v, beta, mode=mode, chunk_size=4)
    o_zero, S_zero = delta_rule(q, k, v, beta, torch.zeros_like(S0), mode=mode, chunk_size=4)
    assert torch.equal(o_none, o_zero) and torch.equal(S_none, S_zero)


def test_bad_inputs():
    q, k, v, beta, S0 = (x.detach() for x in make_inputs(7, 5, 8, torch.float64))
    with pytest.raises(ValueError, match=r"k shape \(2, 6, 3, 5\)"):
        delta_rule(q, k[:, :6], v, beta)
    with pytest.raises(ValueError, match=r"v shape \(2, 7, 2, 8\)"):
        delta_rule(q, k, v[:, :, :2], beta)
    with pytest.raises(ValueError, match=r"beta shape \(2, 7, 3, 1\)"):
        delta_rule(q, k, v, beta.unsqueeze(-1))
    with pytest.raises(ValueError, match=r"\(2, 3, 5, 8\).*\(2, 3, 8, 5\)"):
        delta_rule(q, k, v, beta, initial_state=S0.transpose(-1, -2))
    with pytest.raises(ValueError, match="'recurrent', 'chunk'"):
        delta_rule(q, k, v, beta, mode="fused")
