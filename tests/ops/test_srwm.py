"""SRWM op: the fused path (C kernel and torch-op fallback) against the step-by-step oracle."""
import pytest
import torch

from metarl.ops import _srwm_cpu, srwm
from metarl.testing import assert_close


def make_inputs(B, T, H, D, Dy, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, H, D, generator=g, dtype=dtype).requires_grad_()
    weights = [(torch.randn(B, H, D, cols, generator=g, dtype=dtype) / D ** 0.5).requires_grad_()
               for cols in (Dy, D, D, 4)]
    return x, weights


def values_and_grads(mode, x, weights, seed=1):
    y, final = srwm(x, *weights, mode=mode)
    g = torch.Generator().manual_seed(seed)
    loss = (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum()
    for f in final:  # gradient w.r.t. the final state too
        loss = loss + (f * torch.randn(f.shape, generator=g, dtype=f.dtype)).sum()
    grads = torch.autograd.grad(loss, [x, *weights])
    return [y, *final], grads


@pytest.fixture(params=["c", "torch"])
def backend(request, monkeypatch):
    monkeypatch.setenv("METARL_SRWM_KERNEL", request.param)
    monkeypatch.setattr(_srwm_cpu, "_loaded", None)
    yield request.param
    _srwm_cpu._loaded = None


def test_c_kernel_builds_here():
    _srwm_cpu._loaded = None
    assert _srwm_cpu.kernel() is not None, "the C kernel should build on a machine with gcc"


@pytest.mark.parametrize("T", [1, 7, 63])
@pytest.mark.parametrize("D", [5, 16])
def test_fused_matches_recurrent(backend, T, D):
    x, weights = make_inputs(2, T, 3, D, Dy=D + 2)
    ref_values, ref_grads = values_and_grads("recurrent", x, weights)
    values, grads = values_and_grads("fused", x, weights)
    names = ["y", "Wy", "Wq", "Wk", "wb"]
    for name, a, b in zip(names, ref_values, values):
        assert_close(f"{backend} {name}", a, b, rtol=1e-10)
    for name, a, b in zip(["dx"] + ["d" + n for n in names[1:]], ref_grads, grads):
        assert_close(f"{backend} {name}", a, b, rtol=1e-10)


def test_fused_float32(backend):
    x, weights = make_inputs(3, 40, 2, 16, Dy=16, dtype=torch.float32)
    ref_values, ref_grads = values_and_grads("recurrent", x, weights)
    values, grads = values_and_grads("fused", x, weights)
    for a, b in zip(ref_values + list(ref_grads), values + list(grads)):
        assert_close("float32", a, b, rtol=1e-5)


def test_one_step_by_hand():
    """T=1 written out: every matrix M moves by kᵀ ⊗ β_i (qM - kM), all read with the old weights."""
    x, (Wy, Wq, Wk, wb) = make_inputs(1, 1, 1, 4, Dy=3)
    with torch.no_grad():
        y, (Wy1, Wq1, Wk1, wb1) = srwm(x, Wy, Wq, Wk, wb, mode="recurrent")
        xv = x[0, 0, 0]
        q = torch.softmax(xv @ Wq[0, 0], -1)
        k = torch.softmax(xv @ Wk[0, 0], -1)
        b = torch.sigmoid(xv @ wb[0, 0])
        assert_close("y", xv @ Wy[0, 0], y[0, 0, 0], 1e-12)
        for i, (M, M1) in enumerate(((Wy, Wy1), (Wq, Wq1), (Wk, Wk1), (wb, wb1))):
            expected = M[0, 0] + torch.outer(k, b[i] * (q @ M[0, 0] - k @ M[0, 0]))
            assert_close(f"matrix {i}", expected, M1[0, 0], 1e-12)


def test_bad_shapes_and_mode():
    x, weights = make_inputs(1, 2, 1, 4, Dy=4)
    with pytest.raises(ValueError, match="Wq"):
        srwm(x, weights[0], weights[0][..., :3], *weights[2:])
    with pytest.raises(ValueError, match="modes"):
        srwm(x, *weights, mode="chunk")
