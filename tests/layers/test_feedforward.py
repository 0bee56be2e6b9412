"""Feed-forward sublayers: σ-MoE and product-key memory against slow references written like the maths."""
from __future__ import annotations

import math

import pytest
import torch

from metarl import cores
from metarl.cores.base import Block, Mixer, SequenceCore
from metarl.layers.feedforward import (
    FEEDFORWARDS, DenseFF, ProductKeyMemory, SigmaMoE, ff_parameter_count, make_feedforward,
    match_moe_to_dense, moe_sizes,
)
from metarl.testing import assert_close
from metarl.train import compose_config


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomise(module: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial values everywhere (zero-initialised biases included), in float64."""
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.5)
    return module


# ---------------------------------------------------------------------------------------------------
# σ-MoE
# ---------------------------------------------------------------------------------------------------

def moe_reference(m: SigmaMoE, x: torch.Tensor, keep: torch.Tensor = None) -> torch.Tensor:
    """y = Σ_e keep_e · s_e · (ReLU(x W1_e + b1_e) W2_e) + b2, s = sigmoid(x W_sel); keep: [..., E] 0/1."""
    s = torch.sigmoid(x @ m.w_sel.t())
    if keep is not None:
        s = s * keep
    y = 0
    for e in range(m.num_experts):
        h = x @ m.w1[e]
        if m.b1 is not None:
            h = h + m.b1[e]
        y = y + s[..., e:e + 1] * (torch.relu(h) @ m.w2[e])
    return y + (m.b2 if m.b2 is not None else 0)


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """1 where the score is among the k largest of its row (scores are distinct), else 0."""
    kth = scores.sort(dim=-1, descending=True).values[..., k - 1:k]
    return (scores >= kth).to(scores.dtype)


@pytest.mark.parametrize("impl", ["loop", "dense"])
@pytest.mark.parametrize("bias", [False, True])
def test_moe_with_all_experts_active_is_the_gated_sum(impl, bias):
    torch.manual_seed(0)
    m = randomise(SigmaMoE(5, 12, num_experts=3, expert_size=4, top_k=3, bias=bias, impl=impl))
    x = torch.randn(2, 7, 5, dtype=torch.float64)
    y = m(x)
    assert_close("y vs Σ_e s_e relu(x W1_e) W2_e", moe_reference(m, x), y, rtol=1e-12)
    # the same as one dense layer whose hidden units are scaled by their expert's score
    w1_cat = torch.cat(list(m.w1), dim=1)  # [D, E·G]
    w2_cat = torch.cat(list(m.w2), dim=0)  # [E·G, D]
    s = torch.sigmoid(x @ m.w_sel.t()).repeat_interleave(m.expert_size, dim=-1)
    b1 = m.b1.reshape(-1) if bias else 0
    b2 = m.b2 if bias else 0
    assert_close("y vs relu(x W1_cat) diag(s) W2_cat", (torch.relu(x @ w1_cat + b1) * s) @ w2_cat + b2, y, rtol=1e-12)


def test_moe_with_equal_scores_is_a_scaled_dense_ff():
    torch.manual_seed(1)
    m = randomise(SigmaMoE(6, 16, num_experts=4, expert_size=4, top_k=4))
    with torch.no_grad():
        m.w_sel.zero_()  # every score is sigmoid(0) = 1/2 exactly
    dense = DenseFF(6, 16).double()
    with torch.no_grad():
        dense.up.weight.copy_(torch.cat(list(m.w1), dim=1).t())
        dense.down.weight.copy_(torch.cat(list(m.w2), dim=0).t())
        dense.up.bias.zero_()
        dense.down.bias.zero_()
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    assert_close("2 · σ-MoE(x) vs DenseFF(x)", dense(x), 2 * m(x), rtol=1e-12)


@pytest.mark.parametrize("impl", ["loop", "dense"])
def test_moe_top_k_zeroes_unselected_experts(impl):
    torch.manual_seed(2)
    m = randomise(SigmaMoE(7, 48, num_experts=6, expert_size=8, top_k=2, bias=True, impl=impl))
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64)  # any leading dims
    keep = top_k_mask(x @ m.w_sel.t(), 2)
    assert_close("top-2 σ-MoE", moe_reference(m, x, keep), m(x), rtol=1e-12)
    assert m(x[:0]).shape == (0, 3, 9, 7)


def test_moe_float32_and_auto_impl_agree():
    torch.manual_seed(3)
    x = torch.randn(4, 11, 16)
    for top_k in (2, 7):
        loop = SigmaMoE(16, 64, num_experts=8, top_k=top_k, impl="loop")
        auto = SigmaMoE(16, 64, num_experts=8, top_k=top_k, impl="auto")
        auto.load_state_dict(loop.state_dict())
        assert_close(f"float32 auto vs loop, top_k={top_k}", loop(x), auto(x), rtol=1e-5)
        assert auto(x).dtype == torch.float32


def test_moe_gradients_reach_every_parameter():
    torch.manual_seed(4)
    m = SigmaMoE(8, 32, num_experts=4, top_k=2, bias=True, expert_dropout=0.1, dropout=0.1)
    x = torch.randn(3, 20, 8, requires_grad=True)
    (m(x).square().sum() + m.aux_loss).backward()
    for name, p in list(m.named_parameters()) + [("x", x)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_sorted_experts_backward_equals_autograd_of_the_reference(bias, dropout):
    """The hand-written backward of the loop impl against autograd through the sum written like the maths,
    with odd sizes, an expert that no token picks, and the same hidden-dropout draw on both sides."""
    torch.manual_seed(11)
    m = randomise(SigmaMoE(5, 28, num_experts=7, expert_size=4, top_k=3, bias=bias, dropout=dropout, impl="loop"))
    x = torch.randn(3, 13, 5, dtype=torch.float64).abs()  # positive inputs...
    with torch.no_grad():  # ...and negative selection weights: expert 6 is never chosen, its gradients are 0
        m.w_sel[6] = -50.0
    grad_out = torch.randn(3, 13, 5, dtype=torch.float64)

    def gradients(run):
        xr = x.clone().requires_grad_()
        m.zero_grad()
        (run(xr) * grad_out).sum().backward()
        return [xr.grad] + [p.grad.clone() for p in m.parameters()]

    torch.manual_seed(12)
    fast = gradients(m)

    def reference(xr):  # the same routing, gates and dropout mask, everything in autograd
        flat = xr.reshape(-1, 5)
        _, gates, experts = m.route(flat)
        torch.manual_seed(12)
        m.route(flat)  # the loop impl draws its hidden mask after the routing
        keep = None
        if dropout:
            keep = (torch.rand(flat.shape[0] * 3, 4) >= dropout).double() / (1 - dropout)
        order = torch.argsort(experts.reshape(-1), stable=True)
        y = torch.zeros_like(flat)
        for slot_sorted, slot in enumerate(order.tolist()):
            n, e = slot // 3, experts.reshape(-1)[slot]
            h = flat[n] @ m.w1[e] + (m.b1[e] if bias else 0)
            h = torch.relu(h) * (keep[slot_sorted] if keep is not None else 1)
            y = y.index_add(0, torch.tensor([n]), (gates.reshape(-1)[slot] * (h @ m.w2[e]))[None])
        return (y + (m.b2 if bias else 0)).reshape(xr.shape)

    slow = gradients(reference)
    names = ["x"] + [name for name, _ in m.named_parameters()]
    for name, a, b in zip(names, slow, fast):
        assert_close(f"d loss / d {name}", a, b, rtol=1e-10)
    assert m.w1.grad[6].abs().max() == 0 and m.w2.grad[6].abs().max() == 0


def test_moe_aux_loss_is_the_negative_entropy_of_the_mean_selection():
    torch.manual_seed(5)
    m = randomise(SigmaMoE(6, 40, num_experts=5, top_k=2, entropy_reg=0.01))
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    m(x)
    p_mean = torch.softmax(x @ m.w_sel.t(), dim=-1).reshape(-1, 5).mean(0)
    assert m.aux_loss.dim() == 0 and torch.isfinite(m.aux_loss)
    assert_close("aux loss", 0.01 * (p_mean * p_mean.log()).sum(), m.aux_loss, rtol=1e-12)
    m.zero_grad()
    m.aux_loss.backward()
    assert m.w_sel.grad.abs().sum() > 0
    assert m.w1.grad is None and m.w2.grad is None
    # its minimum, -entropy_reg · log E, is reached by uniform usage
    with torch.no_grad():
        m.w_sel.zero_()
    m(x)
    assert m.aux_loss.item() == pytest.approx(-0.01 * math.log(5))


def test_expert_dropout_only_in_training():
    torch.manual_seed(6)
    m = randomise(SigmaMoE(6, 64, num_experts=8, expert_size=8, top_k=8, expert_dropout=0.5, impl="loop"))
    x = torch.randn(4, 50, 6, dtype=torch.float64)
    m.eval()
    assert_close("eval: no expert dropout", moe_reference(m, x), m(x), rtol=1e-12)
    m.train()
    torch.manual_seed(7)
    _, gates, experts = m.route(x.reshape(-1, 6))
    dropped = (gates == 0).double().mean().item()
    assert 0.4 < dropped < 0.6  # each (token, expert) pair dropped with probability 1/2
    torch.manual_seed(7)
    y = m(x)  # same random draw: the forward uses exactly the surviving experts
    keep = torch.zeros(200, 8, dtype=torch.float64).scatter(1, experts, (gates > 0).double())
    assert_close("train: dropped experts removed", moe_reference(m, x, keep.view(4, 50, 8)), y, rtol=1e-12)


def test_expert_dropout_happens_before_top_k():
    torch.manual_seed(8)
    m = SigmaMoE(8, 64, num_experts=8, expert_size=8, top_k=2, expert_dropout=0.25)
    x = torch.randn(400, 8)
    m.eval()
    _, _, eval_experts = m.route(x)
    m.train()
    _, gates, experts = m.route(x)
    assert (gates > 0).all()  # 6 of 8 experts survive on average: the top-2 slots are refilled
    changed = (experts.sort(-1).values != eval_experts.sort(-1).values).any(-1).double().mean().item()
    assert 0.2 < changed < 0.7  # P(one of the two best experts dropped) = 1 - 0.75² ≈ 0.44


def test_moe_default_sizes_match_d_ff():
    assert moe_sizes(2048) == (16, 128)  # the paper's 47M-parameter setting
    for d_ff in (64, 100, 128, 256, 1000, 4096):
        e, g = moe_sizes(d_ff)
        assert e * g == d_ff and g <= 128
    assert moe_sizes(512, num_experts=8) == (8, 64)
    assert moe_sizes(512, expert_size=32) == (16, 32)
    m = make_feedforward("moe", 32, 128, 0.0, top_k=64)
    assert m.top_k == m.num_experts == 16


def test_moe_initialisation_follows_the_paper():
    torch.manual_seed(9)
    m = SigmaMoE(256, 2048, num_experts=16, expert_size=128)
    assert m.w1.std().item() == pytest.approx(256 ** -0.5, rel=0.02)
    assert m.w2.std().item() == pytest.approx(2048 ** -0.5, rel=0.02)  # the total width, not the expert's
    norms = m.w_sel.norm(dim=1)
    assert_close("equal selection row norms", norms.mean().expand(16), norms, rtol=1e-5)
    assert m.w_sel.std().item() == pytest.approx(256 ** -0.5, rel=0.05)


def test_moe_defaults_and_the_old_regulariser_weight():
    m = SigmaMoE(16, 64)
    assert m.entropy_reg == 1e-4 and m.expert_dropout == 0.0 and m.top_k == 4 and m.weight_std_scale == 1.0
    assert SigmaMoE(16, 64, entropy_reg=1e-3).entropy_reg == 1e-3  # the previous default, still reachable


def reference_moe_stds(d_model, num_experts, expert_size, scale):
    """moe_layer_simple.py: keys N(0, (dmodel^-0.5 s)²), values N(0, ((E·G)^-0.5 s)²),
    expert_sel N(0, (dmodel^-0.5 s)²) then renorm_keep_std (same std);
    RobertCsordas/moe relative_moe_transformer.py: s = sqrt(2 / n_layers) if preln."""
    return (d_model ** -0.5 * scale, (num_experts * expert_size) ** -0.5 * scale, d_model ** -0.5 * scale)


@pytest.mark.parametrize("num_layers", [1, 4, 16])
def test_moe_preln_init_matches_the_reference_formula(num_layers):
    torch.manual_seed(13)
    m = SigmaMoE(256, 2048, num_experts=16, expert_size=128, weight_std_scale="preln", num_layers=num_layers)
    scale = math.sqrt(2.0 / num_layers)
    assert m.weight_std_scale == pytest.approx(scale)
    w1, w2, sel = reference_moe_stds(256, 16, 128, scale)
    assert m.w1.std().item() == pytest.approx(w1, rel=0.02)
    assert m.w2.std().item() == pytest.approx(w2, rel=0.02)
    assert m.w_sel.std().item() == pytest.approx(sel, rel=0.05)  # 4096 draws; renorm_keep_std keeps their std
    norms = m.w_sel.norm(dim=1)
    assert_close("equal selection row norms", norms.mean().expand(16), norms, rtol=1e-5)
    # a number works as before; reset_parameters keeps the module's scale
    fixed = SigmaMoE(256, 2048, num_experts=16, weight_std_scale=0.5)
    fixed.reset_parameters()
    assert fixed.w1.std().item() == pytest.approx(0.5 / 16, rel=0.02)


def test_moe_preln_scale_comes_from_the_core_depth():
    core = cores.make("mlp", d_model=16, num_layers=8, ff="moe", ff_options={"weight_std_scale": "preln"})
    assert all(b.ff.weight_std_scale == pytest.approx(0.5) for b in core.blocks)  # sqrt(2 / 8)
    assert cores.make("mlp", d_model=16, num_layers=8, ff="moe").blocks[0].ff.weight_std_scale == 1.0
    with pytest.raises(ValueError, match="num_layers"):
        SigmaMoE(16, 64, weight_std_scale="preln")  # built alone: the depth must be given
    with pytest.raises(ValueError, match="weight_std_scale"):
        SigmaMoE(16, 64, weight_std_scale="postln", num_layers=2)


def test_moe_preset_uses_the_papers_settings():
    cfg = compose_config("env=recall", "agent=moe", "agent.num_layers=4")
    assert cfg.agent.ff == "moe"
    opts = cfg.agent.ff_options
    assert opts.entropy_reg == 1e-4 and opts.expert_dropout == 0.05 and opts.top_k == 4 and opts.num_experts == 16
    assert opts.weight_std_scale == "preln"
    core = cores.from_config(cfg.agent)
    for block in core.blocks:
        ff = block.ff
        assert (ff.entropy_reg, ff.expert_dropout, ff.top_k, ff.num_experts) == (1e-4, 0.05, 4, 16)
        assert ff.num_experts * ff.expert_size == cfg.agent.d_ff  # parameter-matched, as the paper's sweep
        assert ff.weight_std_scale == pytest.approx(math.sqrt(2 / 4))


# ---------------------------------------------------------------------------------------------------
# Product-key memory
# ---------------------------------------------------------------------------------------------------

def pkm_exhaustive(m: ProductKeyMemory, x: torch.Tensor):
    """Score all n² slots (i, j) ↦ q¹·K¹_i + q²·K²_j of each head, take the exact top-k, softmax, sum values."""
    n, half = m.num_keys, m.d_key // 2
    q = (x @ m.query.weight.t() + m.query.bias).view(-1, m.heads, m.d_key)
    all_scores = torch.empty(q.shape[0], m.heads, n * n, dtype=x.dtype)
    for i in range(n):
        for j in range(n):
            all_scores[:, :, i * n + j] = (
                (q[..., :half] * m.keys[:, 0, i]).sum(-1) + (q[..., half:] * m.keys[:, 1, j]).sum(-1)
            )
    scores, slots = all_scores.topk(m.top_k, dim=-1)
    w = torch.softmax(scores, dim=-1)
    y = (w.unsqueeze(-1) * m.values.weight[slots]).sum(dim=(1, 2))
    return scores, slots, y


@pytest.mark.parametrize("num_keys,top_k,heads", [(5, 3, 1), (5, 7, 2), (4, 16, 3)])
def test_pkm_matches_exhaustive_search(num_keys, top_k, heads):
    torch.manual_seed(10)
    m = randomise(ProductKeyMemory(6, 25, num_keys=num_keys, top_k=top_k, heads=heads, d_key=8))
    x = torch.randn(2, 7, 6, dtype=torch.float64)
    ref_scores, ref_slots, ref_y = pkm_exhaustive(m, x)
    scores, slots = m.lookup(x.reshape(-1, 6))
    assert torch.equal(slots.sort(-1).values, ref_slots.sort(-1).values)
    assert_close("top-k scores", ref_scores.sort(-1).values, scores.sort(-1).values, rtol=1e-12)
    assert_close("pkm output", ref_y.view(2, 7, 6), m(x), rtol=1e-12)


def test_pkm_gradients_reach_every_parameter():
    torch.manual_seed(11)
    m = ProductKeyMemory(8, 64, num_keys=4, top_k=4, heads=2, query_norm=True, dropout=0.1)
    x = torch.randn(3, 10, 8, requires_grad=True)
    m(x).square().sum().backward()
    assert m.aux_loss is None
    for name, p in list(m.named_parameters()) + [("x", x)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_pkm_defaults_and_errors():
    m = make_feedforward("pkm", 15, 60)
    assert m.num_keys == 8 and m.d_key == 16  # 64 slots ≈ d_ff; d_key even
    assert m(torch.randn(2, 3, 15)).shape == (2, 3, 15)
    with pytest.raises(ValueError, match="top_k"):
        ProductKeyMemory(8, 16, num_keys=3, top_k=10)


def test_pkm_query_batchnorm_train_vs_eval():
    torch.manual_seed(14)
    m = ProductKeyMemory(8, 64, num_keys=6, top_k=4, heads=2, d_key=6, query_norm=True).double()
    x = torch.randn(50, 8, dtype=torch.float64) * 3 + 1
    raw = m.query(x)  # [N, H·d_key] before the norm
    m.train()
    q = m.queries(x).reshape(50, -1)  # batch statistics: zero mean, unit (biased) variance per feature
    assert q.mean(0).abs().max().item() < 1e-9  # train: batch mean 0
    assert_close("train: batch var 1", torch.ones(12, dtype=torch.float64), q.var(0, unbiased=False), rtol=1e-3)
    bn = m.query_norm
    assert_close("running mean updated", 0.1 * raw.mean(0).detach(), bn.running_mean, rtol=1e-9)
    # in training a token's output depends on the rest of the batch; in eval it does not
    assert not torch.allclose(m(x)[:5], m(x[:5]))
    m.eval()
    expected = (raw - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    assert_close("eval: running statistics", expected, m.queries(x).reshape(50, -1), rtol=1e-12)
    assert_close("eval: tokens independent", m(x)[:5], m(x[:5]), rtol=1e-12)


@pytest.mark.parametrize("activation", ["softmax", "relu"])
def test_pkm_read_weights(activation):
    torch.manual_seed(15)
    m = randomise(ProductKeyMemory(6, 36, num_keys=6, top_k=5, heads=3, d_key=8, score_activation=activation))
    x = torch.randn(40, 6, dtype=torch.float64)
    weights, slots = m.address(x)
    scores, same_slots = m.lookup(x)
    assert torch.equal(slots, same_slots) and weights.shape == (40, 3, 5)
    if activation == "softmax":  # Lample: each head's weights sum to 1
        assert_close("softmax sums", torch.ones(40, 3, dtype=torch.float64), weights.sum(-1), rtol=1e-12)
        assert (weights > 0).all()
    else:  # Csordás: ReLU of the scores, non-negative, unnormalised
        assert (weights >= 0).all() and (weights == 0).any() and (weights > 0).any()
        assert_close("relu", scores.clamp_min(0), weights, rtol=0)
    y = (weights.unsqueeze(-1) * m.values.weight[slots]).sum(dim=(1, 2))
    assert_close(f"{activation} output", y, m(x), rtol=1e-12)


def test_pkm_without_query_projection_uses_the_input_for_every_head():
    torch.manual_seed(16)
    m = ProductKeyMemory(8, 64, num_keys=5, top_k=3, heads=2, query_projection=False, score_activation="relu",
                         init="csordas", weight_std_scale="preln", num_layers=8).double()
    assert m.query is None and m.d_key == 8
    x = torch.randn(7, 8, dtype=torch.float64)
    assert_close("q = x per head", x.unsqueeze(1).expand(7, 2, 8), m.queries(x), rtol=0)
    with pytest.raises(ValueError, match="d_key"):
        ProductKeyMemory(8, 64, query_projection=False, d_key=6)


def test_pkm_csordas_init_follows_the_reference():
    """lowrank_approximate_2layer.py, custom_init 0: keys and values ~ N(0, (n_dim^-0.5 · weight_scale)²),
    weight_scale = sqrt(2 / n_layers) (relative_preln_kvmem_transformer.py)."""
    torch.manual_seed(17)
    m = ProductKeyMemory(128, 4096, num_keys=64, heads=4, init="csordas", weight_std_scale="preln", num_layers=8)
    std = 128 ** -0.5 * 0.5
    assert m.keys.std().item() == pytest.approx(std, rel=0.02)
    assert m.values.weight.std().item() == pytest.approx(std, rel=0.02)
    assert m.query.weight.std().item() == pytest.approx(std, rel=0.02) and m.query.bias is None
    lample = ProductKeyMemory(128, 4096, num_keys=64, heads=4)  # uniform sub-keys, N(0, 1/D) values
    assert lample.keys.abs().max().item() <= 64 ** -0.5
    assert lample.values.weight.std().item() == pytest.approx(128 ** -0.5, rel=0.02)
    with pytest.raises(ValueError, match="score_activation"):
        ProductKeyMemory(8, 16, score_activation="sigmoid")
    with pytest.raises(ValueError, match="init"):
        ProductKeyMemory(8, 16, init="xavier")


def test_pkm_preset_uses_lamples_settings():
    cfg = compose_config("env=recall", "agent=pkm")
    assert cfg.agent.ff == "pkm"
    opts = cfg.agent.ff_options
    assert opts.heads == 4 and opts.top_k == 32 and opts.query_norm is True
    core = cores.from_config(cfg.agent)
    for block in core.blocks:
        ff = block.ff
        assert (ff.heads, ff.top_k, ff.score_activation) == (4, 32, "softmax")
        assert isinstance(ff.query_norm, torch.nn.BatchNorm1d)


# ---------------------------------------------------------------------------------------------------
# Registry, parameter counting and matching, use inside a core
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,options", [
    ("dense", {}),
    ("moe", {}),
    ("moe", dict(num_experts=6, expert_size=10, bias=True)),
    ("moe", dict(expert_size=48)),
    ("pkm", {}),
    ("pkm", dict(num_keys=6, heads=3, d_key=10, query_norm=True)),
    ("pkm", dict(num_keys=6, heads=3, init="csordas", score_activation="relu")),
    ("pkm", dict(num_keys=6, heads=3, query_projection=False, query_norm=True)),
    ("moe", dict(weight_std_scale="preln", num_layers=3)),
])
def test_parameter_count_is_exact(kind, options):
    assert ff_parameter_count(kind, 24, 96, **options) == n_params(make_feedforward(kind, 24, 96, 0.1, **options))


@pytest.mark.parametrize("d_model,d_ff,expert_size,bias", [
    (64, 256, 32, False), (128, 512, 64, True), (96, 384, 128, False), (40, 1000, 16, False),
])
def test_match_moe_to_dense_within_one_expert(d_model, d_ff, expert_size, bias):
    options = match_moe_to_dense(d_model, d_ff, expert_size, bias=bias)
    assert options["expert_size"] == expert_size
    dense = ff_parameter_count("dense", d_model, d_ff)
    moe = n_params(SigmaMoE(d_model, d_ff, bias=bias, **options))
    one_expert = 2 * d_model * expert_size + d_model + (expert_size if bias else 0)
    assert moe <= dense < moe + one_expert
    with pytest.raises(ValueError, match="expert_size"):
        match_moe_to_dense(8, 4, 64)


def test_registry_and_unknown_kind():
    assert set(FEEDFORWARDS) == {"dense", "moe", "pkm"}
    assert make_feedforward("none", 8, 32) is None
    with pytest.raises(ValueError, match="unknown feed-forward"):
        make_feedforward("sparse", 8, 32)


class _Identity(Mixer):
    def initial_state(self, batch_size, device=None, dtype=None):
        return None

    def forward_segment(self, x, state):
        return x, state


def test_core_sums_moe_aux_losses():
    torch.manual_seed(12)
    blocks = [Block(16, _Identity(), make_feedforward(kind, 16, 64, 0.0)) for kind in ("moe", "pkm", "moe")]
    core = SequenceCore("identity", 16, blocks)
    y, _ = core(torch.randn(2, 5, 16))
    assert y.shape == (2, 5, 16)
    expected = blocks[0].ff.aux_loss + blocks[2].ff.aux_loss
    assert torch.equal(core.aux_loss(), expected) and expected.item() < 0
