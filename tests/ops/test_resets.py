"""Reset masks ``reset [B, T]`` in every op.

- The fast paths (chunk, fused: C kernel and torch ops) against the recurrent oracle with resets: values
  and gradients w.r.t. every input, the initial state and the reset state, at T in {1, 7, 63} and
  D in {5, 16}, resets at random steps, at t=0, at the last step and on consecutive steps.
- The definition: a call with a reset mask equals running each segment of each row on its own, the first
  from the initial state and every later one from the reset state (values and gradients).
- Edge patterns (a reset at every step, at every chunk start), the backward with one result unused, finite
  differences, and the input checks.
"""
import pytest
import torch

from metarl.ops import _srwm_cpu, delta_rule, linear_attention, rec_delta, srwm
from metarl.testing import assert_close

B, H = 4, 2


def make_reset(T, seed=0, p=0.15):
    """[B, T] bool: random resets; row 0 at t=0 and at the last step, row 1 on consecutive steps, row 3 none."""
    g = torch.Generator().manual_seed(seed)
    reset = torch.rand(B, T, generator=g) < p
    reset[0, 0] = reset[0, -1] = True
    reset[1, 2:5] = True
    reset[3] = False
    return reset


def _rand(g, dtype, *shape, scale=1.0):
    return torch.randn(*shape, generator=g, dtype=dtype) * scale


def _keys(g, dtype, *shape):
    # positive, sum-normalised keys keep the fast weights bounded (as the cores do)
    k = torch.rand(*shape, generator=g, dtype=dtype) + 0.1
    return k / k.sum(-1, keepdim=True)


# Each op: make(T, D, dtype, seed) -> (sequence inputs, initial state, reset state), lists of tensors;
# call(mode, seq, init, rst, reset, **options) -> list of results (outputs, then the final state).
def make_linear(T, D, dtype, seed=0, beta=False):
    g = torch.Generator().manual_seed(seed)
    Dv = D + 3
    seq = [_rand(g, dtype, B, T, H, D), _keys(g, dtype, B, T, H, D), _rand(g, dtype, B, T, H, Dv)]
    if beta:
        seq.append(torch.rand(B, T, H, generator=g, dtype=dtype))
    return seq, [_rand(g, dtype, B, H, D, Dv)], [_rand(g, dtype, B, H, D, Dv)]


def call_linear_attention(mode, seq, init, rst, reset, chunk_size=4):
    o, S = linear_attention(*seq, initial_state=init[0], mode=mode, chunk_size=chunk_size, reset=reset,
                            reset_state=rst[0] if rst else None)
    return [o, S]


def call_delta_rule(mode, seq, init, rst, reset, chunk_size=4):
    o, S = delta_rule(*seq, initial_state=init[0], mode=mode, chunk_size=chunk_size, reset=reset,
                      reset_state=rst[0] if rst else None)
    return [o, S]


def make_srwm(T, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    seq = [_rand(g, dtype, B, T, H, D)]
    init = [_rand(g, dtype, B, H, D, cols, scale=D ** -0.5) for cols in (D + 2, D, D, 4)]
    rst = [_rand(g, dtype, B, H, D, cols, scale=D ** -0.5) for cols in (D + 2, D, D, 4)]
    return seq, init, rst


def call_srwm(mode, seq, init, rst, reset):
    y, final = srwm(seq[0], *init, mode=mode, reset=reset, reset_state=rst or None)
    return [y, *final]


def make_rec_delta(T, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    seq = [_rand(g, dtype, B, T, H, 3 * D + 1), _rand(g, dtype, H, D, 3 * D + 1, scale=D ** -0.5)]
    init = [_rand(g, dtype, B, H, D, D, scale=D ** -0.5), _rand(g, dtype, B, H, D)]
    rst = [_rand(g, dtype, B, H, D, D, scale=D ** -0.5), _rand(g, dtype, B, H, D)]
    return seq, init, rst


def call_rec_delta(mode, seq, init, rst, reset):
    o, (S, y) = rec_delta(*seq, initial_state=tuple(init), mode=mode, reset=reset,
                          reset_state=tuple(rst) if rst else None)
    return [o, S, y]


OPS = {  # name -> (make, call, fast mode or None)
    "linear_attention": (make_linear, call_linear_attention, "chunk"),
    "delta_rule": (lambda *a, **kw: make_linear(*a, beta=True, **kw), call_delta_rule, "chunk"),
    "srwm": (make_srwm, call_srwm, "fused"),
    "rec_delta": (make_rec_delta, call_rec_delta, None),
}
# the fast paths to check against the oracle: (op, options of the call, SRWM backend)
FAST = [("linear_attention", {"chunk_size": 4}, None), ("linear_attention", {"chunk_size": 16}, None),
        ("delta_rule", {"chunk_size": 4}, None), ("delta_rule", {"chunk_size": 16}, None),
        ("srwm", {}, "c"), ("srwm", {}, "torch")]
FAST_IDS = ["la-C4", "la-C16", "delta-C4", "delta-C16", "srwm-c", "srwm-torch"]
# sequence inputs of each op that are not per row (no batch dimension): R of rec_delta
SHARED = {"rec_delta": (1,)}


@pytest.fixture
def srwm_backend(monkeypatch):
    """Select the SRWM fused backend ("c" or "torch") for one test."""
    def select(name):
        if name is not None:
            monkeypatch.setenv("METARL_SRWM_KERNEL", name)
            monkeypatch.setattr(_srwm_cpu, "_loaded", None)
    yield select
    _srwm_cpu._loaded = None


def leaves(*groups):
    return [x.requires_grad_() for group in groups for x in group]


def values_and_grads(results, inputs, seed=1):
    """The results and the gradients of a random linear function of all of them w.r.t. ``inputs``."""
    g = torch.Generator().manual_seed(seed)
    loss = sum((r * torch.randn(r.shape, generator=g, dtype=r.dtype)).sum() for r in results)
    return list(results) + list(torch.autograd.grad(loss, inputs))


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["f64", "f32"])
@pytest.mark.parametrize("with_reset_state", [False, True, "zeros"], ids=["reset-to-initial", "reset-state", "reset-to-zeros"])
@pytest.mark.parametrize("D", [5, 16])
@pytest.mark.parametrize("T", [1, 7, 63])
@pytest.mark.parametrize("name,options,backend", FAST, ids=FAST_IDS)
def test_fast_path_matches_oracle(name, options, backend, T, D, with_reset_state, dtype, rtol, srwm_backend):
    """zeros: a constant zero reset state (what the lt and delta cores pass), which the chunked ops skip."""
    srwm_backend(backend)
    make, call, fast = OPS[name]
    seq, init, rst = make(T, D, dtype)
    if with_reset_state == "zeros":
        inputs, rst = leaves(seq, init), [torch.zeros_like(x) for x in rst]
    else:
        rst = rst if with_reset_state else []
        inputs = leaves(seq, init, rst)
    reset = make_reset(T)
    ref = values_and_grads(call("recurrent", seq, init, rst, reset, **options), inputs)
    out = values_and_grads(call(fast, seq, init, rst, reset, **options), inputs)
    assert len(ref) == len(out)
    for index, (a, b) in enumerate(zip(ref, out)):
        assert_close(f"{name} result/gradient {index}", a, b, rtol=rtol)


def run_segments(name, seq, init, rst, reset):
    """The definition: each row's segments run one by one (no reset inside), the first from the initial
    state, every later one from the reset state. Returns the results of one call on the whole batch."""
    _, call, _ = OPS[name]
    shared = SHARED.get(name, ())
    T = reset.shape[1]
    outputs, finals = [], []
    for b in range(B):
        starts = sorted({0, *torch.nonzero(reset[b]).flatten().tolist()})
        state = [x[b:b + 1] for x in init]
        pieces = []
        for start, end in zip(starts, starts[1:] + [T]):
            if reset[b, start]:
                state = [x[b:b + 1] for x in rst]
            row_seq = [x if i in shared else x[b:b + 1, start:end] for i, x in enumerate(seq)]
            results = call("recurrent", row_seq, state, [], None)
            pieces.append(results[0])
            state = results[1:]
        outputs.append(torch.cat(pieces, dim=1))
        finals.append(state)
    return [torch.cat(outputs)] + [torch.cat(parts) for parts in zip(*finals)]


@pytest.mark.parametrize("D", [5, 16])
@pytest.mark.parametrize("T", [1, 7, 63])
@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("zero", [False, True], ids=["reset-state", "reset-to-zeros"])
def test_reset_mask_equals_running_each_segment(name, T, D, zero, srwm_backend):
    """zero: a reset state of constant zeros (what the lt, delta and recdelta cores pass; the ops take a
    shortcut for it), against the definition, values and gradients of every other input."""
    make, call, fast = OPS[name]
    seq, init, rst = make(T, D, torch.float64, seed=2)
    if zero:
        rst = [torch.zeros_like(x) for x in rst]
    inputs = leaves(seq, init) if zero else leaves(seq, init, rst)
    reset = make_reset(T, seed=3, p=0.2)
    ref = values_and_grads(run_segments(name, seq, init, rst, reset), inputs)
    for mode in ("recurrent",) + ((fast,) if fast else ()):
        out = values_and_grads(call(mode, seq, init, rst, reset), inputs)
        for index, (a, b) in enumerate(zip(ref, out)):
            assert_close(f"{name} {mode} result/gradient {index}", a, b, rtol=1e-10)


@pytest.mark.parametrize("pattern", ["every-step", "chunk-starts", "last-row-only"])
@pytest.mark.parametrize("name,options,backend", FAST, ids=FAST_IDS)
def test_edge_patterns(name, options, backend, pattern, srwm_backend):
    srwm_backend(backend)
    make, call, fast = OPS[name]
    T = 13
    seq, init, rst = make(T, 5, torch.float64)
    inputs = leaves(seq, init, rst)
    reset = torch.zeros(B, T, dtype=torch.bool)
    if pattern == "every-step":
        reset[:] = True
    elif pattern == "chunk-starts":
        reset[:, ::4] = True
    else:
        reset[-1, 6] = True
    ref = values_and_grads(call("recurrent", seq, init, rst, reset, **options), inputs)
    out = values_and_grads(call(fast, seq, init, rst, reset, **options), inputs)
    for index, (a, b) in enumerate(zip(ref, out)):
        assert_close(f"{name} result/gradient {index}", a, b, rtol=1e-10)


@pytest.mark.parametrize("name", OPS)
def test_all_false_mask_is_no_reset(name):
    make, call, fast = OPS[name]
    seq, init, rst = make(7, 5, torch.float64)
    for mode in ("recurrent",) + ((fast,) if fast else ()):
        plain = call(mode, seq, init, [], None)
        masked = call(mode, seq, init, rst, torch.zeros(B, 7, dtype=torch.bool))
        assert all(torch.equal(a, b) for a, b in zip(plain, masked))


def test_reset_state_defaults_to_the_initial_state():
    seq, init, _ = make_linear(9, 5, torch.float64)
    reset = make_reset(9)
    a = call_linear_attention("chunk", seq, init, [], reset)
    b = call_linear_attention("chunk", seq, init, [x.clone() for x in init], reset)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("used", ["output", "state"])
@pytest.mark.parametrize("name,backend", [("linear_attention", None), ("delta_rule", None), ("srwm", "c"),
                                          ("srwm", "torch")])
def test_gradients_when_one_result_is_unused(name, backend, used, srwm_backend):
    srwm_backend(backend)
    make, call, fast = OPS[name]
    seq, init, rst = make(11, 5, torch.float64)
    inputs = leaves(seq, init, rst)
    reset = make_reset(11)
    grads = {}
    for mode in ("recurrent", fast):
        o, *final = call(mode, seq, init, rst, reset)
        loss = o.sin().sum() if used == "output" else sum(S.sin().sum() for S in final)
        grads[mode] = torch.autograd.grad(loss, inputs, allow_unused=True)
    for index, (a, b) in enumerate(zip(grads["recurrent"], grads[fast])):
        assert_close(f"d input {index}", torch.zeros_like(b) if a is None else a, b, rtol=1e-10)


@pytest.mark.parametrize("name", ["linear_attention", "delta_rule"])
def test_chunk_gradcheck(name):
    # finite differences, independent of the recurrent oracle; several chunks, a padded last one
    make, call, fast = OPS[name]
    seq, init, rst = make(6, 2, torch.float64)
    inputs = leaves(seq, init, rst)
    reset = torch.zeros(B, 6, dtype=torch.bool)
    reset[0, 0] = reset[1, 2] = reset[1, 3] = reset[2, 5] = True
    n, m = len(seq), len(init)

    def fn(*x):
        return tuple(call(fast, list(x[:n]), list(x[n:n + m]), list(x[n + m:]), reset, chunk_size=4))

    assert torch.autograd.gradcheck(fn, tuple(inputs), eps=1e-6, atol=1e-7)


def test_srwm_fused_gradcheck(srwm_backend):
    srwm_backend("c")
    seq, init, rst = make_srwm(5, 3, torch.float64)
    inputs = leaves(seq, init, rst)
    reset = torch.zeros(B, 5, dtype=torch.bool)
    reset[0, 0] = reset[1, 2] = reset[1, 3] = reset[2, 4] = True

    def fn(x, *weights):
        return tuple(call_srwm("fused", [x], list(weights[:4]), list(weights[4:]), reset))

    assert torch.autograd.gradcheck(fn, tuple(inputs), eps=1e-6, atol=1e-7)


def test_one_reset_by_hand():
    # linear attention, Dk = Dv = 1, S0 = 2, reset state 10, k = v = 1 at every step, q = 1:
    #   t=0: S = 2 + 1 = 3;   t=1 (reset): S = 10 + 1 = 11;   t=2: S = 12
    ones = torch.ones(1, 3, 1, 1, dtype=torch.float64)
    reset = torch.tensor([[False, True, False]])
    S0, Sr = torch.full((1, 1, 1, 1), 2.0, dtype=torch.float64), torch.full((1, 1, 1, 1), 10.0, dtype=torch.float64)
    for mode in ("recurrent", "chunk"):
        o, S = linear_attention(ones, ones, ones, S0, mode=mode, reset=reset, reset_state=Sr)
        assert o.flatten().tolist() == [3.0, 11.0, 12.0] and S.item() == 12.0


def test_bad_reset_arguments():
    seq, init, rst = make_linear(7, 5, torch.float64)
    with pytest.raises(ValueError, match=r"reset must be \[B, T\] = \(4, 7\), got shape \(4, 6\)"):
        linear_attention(*seq, reset=torch.zeros(B, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"delta_rule: reset_state must have the shape"):
        delta_rule(*make_linear(7, 5, torch.float64, beta=True)[0], reset_state=rst[0][:, :1])
    x, weights, rst_w = make_srwm(7, 5, torch.float64)
    with pytest.raises(ValueError, match=r"srwm: reset must be"):
        srwm(*x, *weights, reset=torch.zeros(B, 7, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"srwm: reset_state must be a tuple of 4"):
        srwm(*x, *weights, reset_state=rst_w[:3])
    seq_r, init_r, rst_r = make_rec_delta(7, 5, torch.float64)
    with pytest.raises(ValueError, match=r"rec_delta: reset_state must have the shape"):
        rec_delta(*seq_r, reset_state=(rst_r[0], rst_r[1][:, :1]))
