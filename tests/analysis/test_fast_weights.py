"""The attention view of fast-weight layers equals the ops' outputs (chunk and recurrent), with non-zero
initial states and resets, and the outputs of lt / delta mixers and cores."""
from __future__ import annotations

import pytest
import torch

from metarl import cores
from metarl.analysis import core_attention, fast_weight_attention, mixer_attention
from metarl.ops import delta_rule, linear_attention
from metarl.testing import assert_close


def inputs(T, B=2, H=3, Dk=5, Dv=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(B, T, H, Dk, generator=g), torch.randn(B, T, H, Dk, generator=g)
    k = k / k.norm(dim=-1, keepdim=True)  # the delta rule is stable for |k| <= 1, beta in (0, 1)
    v = torch.randn(B, T, H, Dv, generator=g)
    beta = torch.rand(B, T, H, generator=g)
    S0 = torch.randn(B, H, Dk, Dv, generator=g)
    reset = torch.rand(B, T, generator=g) < 0.15
    return q, k, v, beta, S0, reset


@pytest.mark.parametrize("T", [1, 7, 63])
@pytest.mark.parametrize("mode", ["recurrent", "chunk"])
def test_linear_attention_view_equals_the_op(T, mode):
    q, k, v, _, S0, reset = inputs(T)
    o, _ = linear_attention(q, k, v, initial_state=S0, mode=mode, reset=reset)
    view = fast_weight_attention(q, k, v, initial_state=S0, reset=reset)
    assert_close("linear attention", o, view.output())
    assert torch.equal(view.values, v)
    assert (view.attention.triu(1) == 0).all()  # nothing from the future


@pytest.mark.parametrize("T", [1, 7, 63])
@pytest.mark.parametrize("mode", ["recurrent", "chunk"])
def test_delta_rule_view_equals_the_op(T, mode):
    q, k, v, beta, S0, reset = inputs(T, seed=1)
    o, _ = delta_rule(q, k, v, beta, initial_state=S0, mode=mode, reset=reset)
    view = fast_weight_attention(q, k, v, beta, initial_state=S0, reset=reset)
    assert_close("delta rule", o, view.output())
    if T > 1:  # the written values are the effective ones, not v
        assert (view.values - v).abs().max() > 0.1
    b, t = reset.nonzero()[0].tolist() if reset.any() else (0, 0)
    if t > 0:
        assert (view.attention[b, :, t:, :t] == 0).all()  # a reset cuts the attention to earlier steps


@pytest.mark.parametrize("name", ["lt", "delta"])
def test_mixer_and_core_views_equal_the_layer_outputs(name):
    torch.manual_seed(0)
    core = cores.make(name, d_model=16, num_layers=2, num_heads=2, ff="dense")
    x = torch.randn(3, 11, 16)
    reset = torch.zeros(3, 11, dtype=torch.bool)
    reset[1, 4] = True
    mixer = core.blocks[1].mixer
    captured = {}
    handle = mixer.register_forward_hook(lambda m, args, out: captured.update(out=out[0], x=args[0]))
    with torch.no_grad():
        core(x, reset=reset)
    handle.remove()
    view = core_attention(core, x, layer=1, reset=reset)
    assert_close(f"{name} core layer 1", captured["out"], view.mixer_output)
    assert view.attention.shape == (3, 2, 11, 11)
    assert (view.attention[1, :, 4:, :4] == 0).all()
    with torch.no_grad():
        state = torch.randn(3, 2, mixer.d_key, mixer.d_head)
        direct, _ = mixer(captured["x"], state)
        assert_close(f"{name} mixer from a state", direct, mixer_attention(mixer, captured["x"], state).mixer_output)


def test_other_layers_are_refused():
    core = cores.make("lstm", d_model=8, num_layers=1, num_heads=1, ff="none")
    with pytest.raises(ValueError, match="DeltaNet"):
        core_attention(core, torch.randn(1, 3, 8))
