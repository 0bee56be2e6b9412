"""The core contract of DESIGN.md, proven for every core: resets, split calls, gradients, errors."""
import pytest
import torch

from metarl import cores
from metarl.testing import assert_close

D_MODEL = 16
OPTIONS = {  # small but complete configurations (two layers each)
    "lstm": {},
    "mlp": {"d_hidden": 24},
    "lt": {"feature_map": "elu"},
    "lt_dpfp": {"feature_map": "dpfp", "dpfp_nu": 2, "chunk_size": 4},
    "delta": {"chunk_size": 4},
    "recdelta": {},
    "srwm": {"d_head": 8},
    "srwm_recurrent": {"d_head": 8, "mode": "recurrent", "input_softmax": True, "norm": "pre"},
    "transformer": {"positional": "rope"},
    "delta_moe": {"ff": "moe", "ff_options": {"num_experts": 4, "expert_size": 8, "top_k": 2}},
    "srwm_pkm": {"d_head": 8, "ff": "pkm"},
}
ALL = sorted(OPTIONS)


def build(variant, seed=0):
    torch.manual_seed(seed)
    name = variant.split("_")[0]
    options = dict(OPTIONS[variant])
    core = cores.make(name, d_model=D_MODEL, num_layers=2, num_heads=2, **options)
    return core.double().eval()


def test_every_core_name_is_covered():
    assert set(cores.names()) <= {v.split("_")[0] for v in ALL}


@pytest.mark.parametrize("variant", ALL)
def test_split_calls_equal_one_call(variant):
    core = build(variant)
    x = torch.randn(3, 11, D_MODEL, dtype=torch.float64)
    y_full, s_full = core(x, core.initial_state(3))
    y1, s = core(x[:, :4], core.initial_state(3))
    y2, s = core(x[:, 4:5], s)  # a one-step call in the middle
    y3, s = core(x[:, 5:], s)
    assert_close(f"{variant} y", y_full, torch.cat([y1, y2, y3], 1), 1e-9)
    for a, b in zip(torch.utils._pytree.tree_leaves(s_full), torch.utils._pytree.tree_leaves(s)):
        assert_close(f"{variant} state", a, b, 1e-9)


@pytest.mark.parametrize("variant", ALL)
def test_resets_equal_separate_episodes(variant):
    core = build(variant)
    B, T = 3, 10
    x = torch.randn(B, T, D_MODEL, dtype=torch.float64)
    reset = torch.zeros(B, T, dtype=torch.bool)
    reset[0, 3] = reset[0, 7] = True
    reset[1, 1] = True
    reset[2, 0] = True  # a reset at t=0 changes nothing for a fresh state
    y, _ = core(x, None, reset=reset)
    for b in range(B):
        cuts = [0] + [t for t in range(1, T) if reset[b, t]] + [T]
        pieces = [core(x[b:b + 1, s:e], core.initial_state(1))[0] for s, e in zip(cuts[:-1], cuts[1:])]
        assert_close(f"{variant} row {b}", torch.cat(pieces, 1)[0], y[b], 1e-9)


@pytest.mark.parametrize("variant", ALL)
def test_resets_after_a_carried_state_equal_separate_episodes_values_and_gradients(variant):
    """Resets in a call that starts from a carried state, with T spanning several chunks: outputs, final
    state and the gradients of parameters, inputs and carried state equal those of the pieces run apart."""
    from metarl.cores.base import map_state

    core = build(variant)
    B, T = 3, 13
    gen = torch.Generator().manual_seed(1)
    _, carried = core(torch.randn(B, 5, D_MODEL, generator=gen, dtype=torch.float64), core.initial_state(B))
    carried = map_state(lambda s: s.detach().clone().requires_grad_(s.is_floating_point()), carried)
    x = torch.randn(B, T, D_MODEL, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(B, T, D_MODEL, generator=gen, dtype=torch.float64)
    reset = torch.zeros(B, T, dtype=torch.bool)
    reset[0, 2] = reset[0, 3] = reset[0, 9] = True  # two in a row, and one in a later chunk
    reset[1, 12] = True  # the last step
    # row 2 never resets

    def grads(loss):
        leaves = [x] + [s for s in torch.utils._pytree.tree_leaves(carried) if s.requires_grad]
        params = list(core.parameters())
        return torch.autograd.grad(loss, leaves + params, allow_unused=True)

    y, final = core(x, carried, reset=reset)
    batched = grads((y * w).sum())
    pieces, finals, loss = [], [], 0.0
    for b in range(B):
        cuts = [0] + [t for t in range(1, T) if reset[b, t]] + [T]
        state = map_state(lambda s: s[b:b + 1], carried)
        row = []
        for start, end in zip(cuts[:-1], cuts[1:]):
            if start > 0:
                state = core.initial_state(1)
            y_piece, state = core(x[b:b + 1, start:end], state)
            row.append(y_piece)
        pieces.append(torch.cat(row, 1))
        finals.append(state)
        loss = loss + (pieces[-1] * w[b:b + 1]).sum()
    separate = grads(loss)
    assert_close(f"{variant} y", torch.cat(pieces, 0), y, 1e-9)
    for b in range(B * (variant != "transformer")):  # the transformer's cache keeps masked steps of past episodes
        for a, c in zip(torch.utils._pytree.tree_leaves(map_state(lambda s: s[b:b + 1], final)),
                        torch.utils._pytree.tree_leaves(finals[b])):
            assert_close(f"{variant} final state row {b}", c, a, 1e-9)
    for i, (g1, g2) in enumerate(zip(batched, separate)):
        if g1 is None or g2 is None:
            assert g1 is None or not g1.abs().any(), f"{variant}: gradient {i} only in the batched call"
            continue
        assert_close(f"{variant} gradient {i}", g2, g1, 1e-8)


@pytest.mark.parametrize("variant", ALL)
def test_every_parameter_gets_a_gradient(variant):
    core = build(variant).train()
    x = torch.randn(2, 5, D_MODEL, dtype=torch.float64)
    y, _ = core(x, core.initial_state(2))
    (y.pow(2).sum() + core.aux_loss()).backward()
    missing = [n for n, p in core.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient for {missing}"


def test_srwm_gradient_reaches_all_four_initial_matrices_through_carried_state():
    core = build("srwm")
    x = torch.randn(2, 6, D_MODEL, dtype=torch.float64)
    _, state = core(x[:, :3], core.initial_state(2))
    y, _ = core(x[:, 3:], state)  # only the second call's output is in the loss
    y.sum().backward()
    for name in ("Wy", "Wq", "Wk", "wb"):
        for i, block in enumerate(core.blocks):
            grad = getattr(block.mixer, name).grad
            assert grad is not None and grad.abs().sum() > 0, f"layer {i} {name}"


def test_empty_state_through_the_reset_machinery():
    """A memoryless mixer's state ``()`` passes map_state, where_reset, detach_state and run_with_resets."""
    from metarl.cores.base import detach_state, map_state, run_with_resets, where_reset

    mask = torch.tensor([True, False])
    assert map_state(torch.add, (), ()) == () and detach_state(((), ())) == ((), ())
    assert where_reset(mask, (), ()) == () and where_reset(mask, ((), ()), ((), ())) == ((), ())
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    reset = torch.zeros(2, 5, dtype=torch.bool)
    reset[0, 2] = True
    y, state = run_with_resets(lambda seg, s: (2 * seg, s), x, (), reset, lambda: ())
    assert state == () and torch.equal(y, 2 * x)


def test_unknown_core_lists_known_ones():
    with pytest.raises(ValueError, match="known cores: .*srwm"):
        cores.make("srwn", d_model=8)


def test_wrong_input_width():
    core = build("lstm")
    with pytest.raises(ValueError, match=r"\[B, T, 16\]"):
        core(torch.zeros(1, 2, 7, dtype=torch.float64))
