"""The SRWM layers of the reference implementations, as metarl builds them from configs.

The RL reference is IDSIA/modern-srwm ``reinforcement_learning/torchbeast/layer.py`` (``SRlayer`` followed by
``TransformerFFlayers``, one pair per layer of ``SRNetLayer``); ``env=procgen agent=srwm`` must build it.
"""
import math

import pytest
import torch
from torch import nn

from metarl import cores
from metarl.agents import make_agent
from metarl.errors import ConfigError
from metarl.train import compose_config


def reference_rl_layer(block, x):
    """SRlayer + TransformerFFlayers of modern-srwm's RL model written out, with ``block``'s weights.

    x: [B, T, D] with D = H·d. Per head, row-vector form, every read with the weights of the previous step:
        h_t = softmax(x_t)                       (over each head's d inputs)
        y_t = h_t Wy,  q_t = softmax(h_t Wq),  k_t = softmax(h_t Wk),  β_t = sigmoid(h_t wb)
        M <- M + k_tᵀ (β_t,i (q_t M - k_t M))   for (M, i) = (Wy, 0), (Wq, 1), (Wk, 2), (wb, 3)
        out_t = x_t + O y_t                      (no LayerNorm: SRlayer's is built but unused)
        z_t = out_t + W2 relu(W1 LN(out_t) + b1) + b2
    """
    m = block.mixer
    B, T, D = x.shape
    H, d = m.num_heads, m.d_head
    weights = [[[w[h].clone() for h in range(H)] for w in (m.Wy, m.Wq, m.Wk, m.wb)] for _ in range(B)]
    ys = torch.zeros(B, T, H, d, dtype=x.dtype)
    for b in range(B):
        for t in range(T):
            for h in range(H):
                xin = torch.softmax(x[b, t, h * d:(h + 1) * d], dim=0)
                Wy, Wq, Wk, wb = weights[b][0][h], weights[b][1][h], weights[b][2][h], weights[b][3][h]
                ys[b, t, h] = xin @ Wy
                q = torch.softmax(xin @ Wq, dim=0)
                k = torch.softmax(xin @ Wk, dim=0)
                beta = torch.sigmoid(xin @ wb)
                for i, M in enumerate((Wy, Wq, Wk, wb)):
                    weights[b][i][h] = M + torch.outer(k, beta[i] * (q @ M - k @ M))
    out = x + ys.reshape(B, T, H * d) @ m.out.weight.T
    ff = block.ff
    normed = nn.functional.layer_norm(out, (D,), block.ff_norm.weight, block.ff_norm.bias, block.ff_norm.eps)
    hidden = torch.relu(normed @ ff.up.weight.T + ff.up.bias)
    final = [torch.stack([torch.stack(weights[b][i]) for b in range(B)]) for i in range(4)]
    return out + hidden @ ff.down.weight.T + ff.down.bias, final


def procgen_core(*overrides):
    return cores.from_config(compose_config("env=procgen", *overrides).agent)


def test_procgen_srwm_is_the_reference_layer():
    torch.manual_seed(0)
    core = procgen_core()
    assert core.name == "srwm" and len(core.blocks) == 2
    for block in core.blocks:
        m = block.mixer
        assert m.input_softmax and m.norm_position == "none" and isinstance(m.proj_in, nn.Identity)
        assert block.mixer_norm is None  # no LayerNorm in the mixer sublayer (the feed-forward keeps its own)
        assert [mod for mod in block.modules() if isinstance(mod, nn.LayerNorm)] == [block.ff_norm]
        std = 1 / math.sqrt(m.d_head)
        assert abs(m.wb.mean().item()) < 0.05, "wb has mean 0 (beta_init 0), not -1"
        for w in (m.Wy, m.Wq, m.Wk, m.wb):
            assert abs(w.std().item() - std) < 0.15 * std
        assert m.out.bias is None and block.ff.up.bias is not None and block.ff.down.bias is not None


def test_procgen_preset_does_not_reach_other_cores_and_the_command_line_wins():
    lstm_cfg = compose_config("env=procgen", "agent=lstm")
    assert lstm_cfg.agent.name == "lstm" and "srwm" in lstm_cfg.agent.options_by_core
    agent = make_agent((64, 64, 3), 15, lstm_cfg.agent)
    assert agent.core.name == "lstm"
    core = procgen_core("+agent.options.norm=skip", "+agent.options.beta_init=-1.0")
    m = core.blocks[0].mixer
    assert m.norm_position == "skip" and m.input_softmax and m.wb.mean().item() < -0.9


def test_one_reference_block_equals_the_reference_equations():
    torch.manual_seed(1)
    core = cores.make("srwm", d_model=12, num_layers=1, num_heads=3, d_ff=20, d_head=4, input_softmax=True,
                      norm="none", beta_init=0.0, mode="recurrent").double()
    block = core.blocks[0]
    x = torch.randn(2, 6, 12, dtype=torch.float64)
    with torch.no_grad():
        y, state = block(x, None, None)
        expected, final = reference_rl_layer(block, x)
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)
    m = block.mixer
    for shift, w, full in zip(state, m.slow_weights(), final):  # the state is the shift from the initial weights
        torch.testing.assert_close(shift + w, full, rtol=1e-10, atol=1e-10)
    fused = cores.make("srwm", d_model=12, num_layers=1, num_heads=3, d_ff=20, d_head=4, input_softmax=True,
                       norm="none", beta_init=0.0, mode="fused").double()
    fused.load_state_dict(core.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fused.blocks[0](x, None, None)[0], expected, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("norm", ["pre", "skip", "none"])
def test_norm_positions(norm):
    """pre: x + f(LN(x)); skip: LN(x) + f(x); none: x + f(x) — with f the mixer on its own."""
    torch.manual_seed(2)
    core = cores.make("srwm", d_model=8, num_layers=1, num_heads=2, ff="none", d_head=4, norm=norm).double()
    block, x = core.blocks[0], torch.randn(2, 5, 8, dtype=torch.float64)
    ln = (lambda v: nn.functional.layer_norm(v, (8,), block.mixer_norm.weight, block.mixer_norm.bias)) \
        if norm != "none" else None
    with torch.no_grad():
        y, _ = block(x, None, None)
        expected = {"pre": lambda: x + block.mixer(ln(x))[0], "skip": lambda: ln(x) + block.mixer(x)[0],
                    "none": lambda: x + block.mixer(x)[0]}[norm]()
    torch.testing.assert_close(y, expected)


def test_norm_option_errors_and_the_deprecated_skip_norm():
    with pytest.raises(ConfigError, match="agent.options.norm='post-ish'"):
        cores.make("srwm", d_model=8, num_heads=2, d_head=4, norm="post-ish")
    assert cores.make("srwm", d_model=8, num_heads=2, d_head=4, skip_norm=False).blocks[0].mixer.norm_position == "pre"
    assert cores.make("srwm", d_model=8, num_heads=2, d_head=4, skip_norm=True).blocks[0].mixer.norm_position == "skip"
    with pytest.raises(ConfigError, match="skip_norm"):
        cores.make("srwm", d_model=8, num_heads=2, d_head=4, skip_norm=True, norm="none")


def test_wq_init_scale():
    torch.manual_seed(3)
    m = cores.make("srwm", d_model=64, num_heads=4, d_head=16, wq_init_scale=0.01).blocks[0].mixer
    assert abs(m.Wq.std().item() - 0.01 / 4) < 0.1 * 0.01 / 4
    assert abs(m.Wk.std().item() - 1 / 4) < 0.1 / 4
