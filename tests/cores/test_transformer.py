"""The softmax-attention Transformer core: the core contract for every positional encoding (pre-LN, and the
post-LN encoder block of Ruoss et al. with its encoding added once), randomized positions and distances, the
Transformer-XL relative attention and the ALiBi bias against formulas written out, the encoder config, errors,
and a tiny learning test."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import metarl.configs
from metarl import cores
from metarl.config import AgentConfig
from metarl.cores import make
from metarl.cores.base import where_reset
from metarl.cores.transformer import TransformerMixer
from metarl.layers.positional import POSITIONAL, alibi_bias, alibi_slopes, map_distances
from metarl.testing import assert_close

RTOL = 1e-9
MAX_LEN = 32


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is as fast, and does not stall when other processes load the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# "pre": metarl's pre-LN block; "post": the block of Ruoss et al.'s encoder (configs/agent/encoder.yaml), causal
STYLES = {
    "pre": {},
    "post": dict(norm="post", bias=False, attention_dropout=0.0, scale_input=True, positional_once=True),
}


def build(positional: str, context=None, randomized: bool = False, max_len: int = MAX_LEN, style: str = "pre"):
    torch.manual_seed(0)
    core = make(
        "transformer", d_model=12, num_layers=2, num_heads=3, d_ff=16, positional=positional,
        randomized=randomized, max_len=max_len, context=context, **STYLES[style],
    ).double()
    with torch.no_grad():  # the relative table starts at zero; make it matter
        for block in core.blocks:
            if hasattr(block.mixer, "rel_bias"):
                block.mixer.rel_bias.normal_()
    return core


def inputs(batch: int, steps: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, steps, 12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


CONTEXTS = [None, 3]


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("positional", POSITIONAL)
def test_split_calls_equal_one_call(positional, context, style):
    core = build(positional, context, style=style)
    x = inputs(2, 7)
    whole, whole_state = core(x)
    first, state = core(x[:, :3])
    second, state = core(x[:, 3:], state)
    assert_close("split at 3", whole, torch.cat((first, second), 1), RTOL)
    state, outs = None, []
    for t in range(7):
        y, state = core(x[:, t : t + 1], state)
        outs.append(y)
    assert_close("T=1 calls", whole, torch.cat(outs, 1), RTOL)
    # the carried states agree too: a further call gives the same output
    x2 = inputs(2, 4, seed=2)
    assert_close("after whole vs after steps", core(x2, whole_state)[0], core(x2, state)[0], RTOL)


# row 0: no reset; row 1: reset at 3; row 2: resets at 0, 2 and 6
RESET_TIMES = {0: [], 1: [3], 2: [0, 2, 6]}


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("positional", POSITIONAL)
def test_resets_equal_separate_episodes(positional, context, style):
    core = build(positional, context, style=style)
    prefix, x, suffix = inputs(3, 4, seed=3), inputs(3, 9, seed=4), inputs(3, 3, seed=5)
    reset = torch.zeros(3, 9, dtype=torch.bool)
    for b, times in RESET_TIMES.items():
        reset[b, times] = True
    _, state = core(prefix)
    y, state = core(x, state, reset)
    y_next, _ = core(suffix, state)  # cached steps of finished episodes must stay invisible

    for b, times in RESET_TIMES.items():
        bounds = [0] + [t for t in times if t > 0] + [9]
        starts_fresh = 0 in times
        for k, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
            pieces = [x[b : b + 1, start:end]]
            if k == 0 and not starts_fresh:
                pieces.insert(0, prefix[b : b + 1])
            is_last = end == 9
            if is_last:
                pieces.append(suffix[b : b + 1])
            alone, _ = core(torch.cat(pieces, 1))
            lead = prefix.shape[1] if (k == 0 and not starts_fresh) else 0
            assert_close(f"row {b} episode {k}", alone[:, lead : lead + end - start], y[b : b + 1, start:end], RTOL)
            if is_last:
                assert_close(f"row {b} after the call", alone[:, lead + end - start :], y_next[b : b + 1], RTOL)


@pytest.mark.parametrize("positional", POSITIONAL)
def test_where_reset_with_initial_state(positional):
    """The state's leaves are batch-first and the initial state broadcasts against any cache length."""
    core = build(positional)
    x, x2 = inputs(3, 5), inputs(3, 4, seed=2)
    _, state = core(x)
    mask = torch.tensor([True, False, True])
    init = core.initial_state(3, dtype=torch.float64)
    state = where_reset(mask, init, state)
    y, _ = core(x2, state)
    fresh, _ = core(x2)
    carried, _ = core(torch.cat((x, x2), 1))
    assert_close("reset rows", fresh[mask], y[mask], RTOL)
    assert_close("kept row", carried[~mask][:, 5:], y[~mask], RTOL)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("randomized", [False, True])
@pytest.mark.parametrize("positional", POSITIONAL)
def test_every_parameter_gets_a_gradient(positional, randomized, style):
    core = build(positional, randomized=randomized, style=style)
    x1 = inputs(3, 4).requires_grad_()
    x2 = inputs(3, 6, seed=2)
    reset = torch.zeros(3, 6, dtype=torch.bool)
    reset[1, 2] = True
    if randomized:  # randomized positions are meant for whole sequences: one call
        y, _ = core(torch.cat((x1, x2), 1), None, torch.cat((torch.zeros(3, 4, dtype=torch.bool), reset), 1))
    else:
        _, state = core(x1)
        y, _ = core(x2, state, reset)
    y.pow(2).sum().backward()
    for name, p in core.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} gets no gradient"
    assert x1.grad.abs().sum() > 0, "no gradient through the carried cache"
    assert x1.grad[1].abs().sum() > 0  # row 1 uses the cache before its reset


def test_randomized_positions():
    torch.manual_seed(0)
    mixer = TransformerMixer(12, 3, positional="rope", randomized=True, max_len=MAX_LEN)
    start = torch.zeros(4, dtype=torch.long)
    p1, p2 = mixer.positions(start, None, 10), mixer.positions(start, None, 10)
    for p in (p1, p2):
        assert p.dtype == torch.long and p.shape == (4, 10)
        assert (p >= 0).all() and (p < MAX_LEN).all()
        assert (p[:, 1:] > p[:, :-1]).all()  # sorted, distinct
    assert not torch.equal(p1, p2)
    assert not torch.equal(p1[0], p1[1])  # sampled per row
    # segments: a continuing segment starts above next_position, a reset restarts from the full range
    reset = torch.zeros(2, 10, dtype=torch.bool)
    reset[1, 4] = True
    p = mixer.positions(torch.tensor([20, 25]), reset, 10)
    assert (p[0] >= 20).all() and (p[0, 1:] > p[0, :-1]).all()
    assert (p[1, :4] >= 25).all() and (p[1, 1:4] > p[1, :3]).all()
    assert (p[1, 5:] > p[1, 4:-1]).all() and (p[1, 4:] < MAX_LEN).all()
    with pytest.raises(ValueError, match="max_len"):
        mixer.positions(torch.tensor([MAX_LEN - 3]), None, 4)
    # deterministic positions: consecutive, restarting at resets
    mixer.randomized = False
    assert mixer.positions(torch.tensor([20, 25]), reset, 10).tolist() == [
        list(range(20, 30)), [25, 26, 27, 28, 0, 1, 2, 3, 4, 5]
    ]


@pytest.mark.parametrize("positional", [p for p in POSITIONAL if p != "none"])
def test_randomized_forward_changes_between_calls(positional):
    core = build(positional, randomized=True, max_len=1024)
    x = inputs(2, 6)
    y1, state = core(x)
    y2, _ = core(x)
    assert (y1 - y2).abs().max() > 1e-6
    positions, next_position = state[0][2][:, 1:], state[0][4]  # cached positions after the dummy slot
    assert (positions[:, 1:] > positions[:, :-1]).all() and (next_position == positions[:, -1] + 1).all()
    _, state = core(inputs(2, 2, seed=2), state)  # a carried call samples from [next_position, max_len)
    assert (state[0][2][:, -2:] >= next_position[:, None]).all() and (state[0][2] < 1024).all()


def test_randomized_positions_are_shared_by_all_layers():
    # Ruoss et al. draw one set of positions per sequence; every layer of the stack must see it
    core = build("rope", randomized=True, max_len=1024)
    core.blocks.append(build("rope", randomized=True, max_len=1024).blocks[0])  # a third layer
    drawn = []
    for block in core.blocks:
        original = block.mixer.positions

        def recording(*args, original=original):
            drawn.append(original(*args))
            return drawn[-1]

        block.mixer.positions = recording
    reset = torch.zeros(3, 9, dtype=torch.bool)
    reset[1, 4] = True
    for _ in range(2):
        drawn.clear()
        core(inputs(3, 9), reset=reset)
        assert len(drawn) == 3 and all(torch.equal(drawn[0], p) for p in drawn[1:])
    first = drawn[0]
    drawn.clear()
    core(inputs(3, 9), reset=reset)
    assert not torch.equal(first, drawn[0])  # a new draw at every call
    assert all(b.mixer.position_seed is None for b in core.blocks)  # the seed lives for one call only


def test_relative_table_and_alibi_slopes():
    mixer = TransformerMixer(12, 3, positional="relative_bias", max_len=MAX_LEN)
    assert mixer.rel_bias.shape == (3, 2 * MAX_LEN)  # distances [-max_len, max_len)
    assert alibi_slopes(8) == [2.0 ** -(i + 1) for i in range(8)]
    six = alibi_slopes(6)
    assert six[:4] == alibi_slopes(4) and six[4:] == alibi_slopes(8)[0::2][:2]


def test_errors():
    with pytest.raises(ValueError) as info:
        make("transformer", d_model=12, num_layers=1, num_heads=3, positional="bogus")
    for valid in POSITIONAL:
        assert valid in str(info.value)
    with pytest.raises(ValueError, match="even"):
        make("transformer", d_model=9, num_layers=1, num_heads=3, positional="rope")
    with pytest.raises(TypeError):
        TransformerMixer(12, 3, 0.0, "none", False, 64, None, "extra")
    core = make("transformer", d_model=12, num_layers=1, num_heads=3, positional="learned", max_len=4)
    with pytest.raises(ValueError, match="max_len"):
        core(torch.randn(1, 5, 12))


def recall_accuracy(context=None, lag: int = 3, vocab: int = 8, steps: int = 16) -> float:
    """Train a 1-layer transformer (embedding -> core -> linear) for 200 Adam steps on y_t = x_{t-lag};
    return the accuracy on positions t >= lag of fresh sequences."""
    torch.manual_seed(0)
    core = make("transformer", d_model=32, num_layers=1, num_heads=2, context=context)
    embed, head = torch.nn.Embedding(vocab, 32), torch.nn.Linear(32, vocab)
    opt = torch.optim.Adam([*core.parameters(), *embed.parameters(), *head.parameters()], lr=3e-3)

    def batch(n):
        tokens = torch.randint(vocab, (n, steps))
        return tokens, tokens.roll(lag, dims=1)

    for _ in range(200):
        tokens, target = batch(64)
        logits = head(core(embed(tokens))[0])
        loss = torch.nn.functional.cross_entropy(logits[:, lag:].reshape(-1, vocab), target[:, lag:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        tokens, target = batch(256)
        pred = head(core(embed(tokens))[0]).argmax(-1)
    return (pred[:, lag:] == target[:, lag:]).double().mean().item()


def test_learns_to_recall_three_steps_back():
    """The tokens are i.i.d. uniform, so without memory the best accuracy is chance (1/8)."""
    accuracy = recall_accuracy()
    assert accuracy > 0.9, accuracy
    memoryless = recall_accuracy(context=1)  # each query sees only its own step
    assert memoryless < 0.3, memoryless


# ----------------------------------------------------------------------------------------------------
# Transformer-XL relative attention against the formula, one (i, j) pair at a time
# ----------------------------------------------------------------------------------------------------

def sincos(d: float, dim: int) -> torch.Tensor:
    """R_d, written out: feature 2f is sin(d / 10000^(2f/dim)), feature 2f+1 is cos of the same angle."""
    return torch.tensor([(math.sin if c % 2 == 0 else math.cos)(d / 10000 ** (2 * (c // 2) / dim))
                         for c in range(dim)], dtype=torch.float64)


def naive_attention(mixer: TransformerMixer, x: torch.Tensor, past: int, score) -> torch.Tensor:
    """Softmax attention of the queries x[:, past:] over the keys x[:, :i+1] (causal) or x (encoder), one
    (b, h, i, j) at a time; ``score(b, h, i, j, q_i, k_j)`` is the attention logit. -> [B, T - past, D]."""
    batch, steps, width = x.shape
    heads, dh = mixer.num_heads, mixer.head_dim
    q, k, v = mixer.qkv(x).view(batch, steps, 3, heads, dh).unbind(dim=2)
    out = torch.zeros(batch, steps - past, heads, dh, dtype=x.dtype)
    for b in range(batch):
        for h in range(heads):
            for i in range(past, steps):
                keys = range(i + 1) if mixer.causal else range(steps)
                logits = torch.stack([score(b, h, i, j, q[b, i, h], k[b, j, h]) for j in keys])
                weights = torch.softmax(logits, dim=0)
                out[b, i - past, h] = sum(w * v[b, j, h] for w, j in zip(weights, keys))
    return mixer.out(out.reshape(batch, steps - past, width))


def xl_score(mixer: TransformerMixer, distance_of=lambda b, d: d):
    """score(i, j) = [(q_i + u)·k_j + (q_i + v)·(W_r R_{m(i-j)})] / sqrt(dh), per head (Dai et al. 2019)."""
    u, v, w_r = mixer.content_bias, mixer.position_bias, mixer.rel_proj.weight
    dh = mixer.head_dim

    def score(b, h, i, j, q_i, k_j):
        r = (w_r @ sincos(distance_of(b, i - j), mixer.d_model)).view(mixer.num_heads, dh)[h]
        return ((q_i + u[h]) @ k_j + (q_i + v[h]) @ r) / math.sqrt(dh)

    return score


@pytest.mark.parametrize("d_model, heads", [(10, 2), (12, 3)])  # head widths 5 and 4
@pytest.mark.parametrize("steps", [1, 7])
@pytest.mark.parametrize("causal", [True, False])
def test_relative_is_transformer_xl_attention(causal, steps, d_model, heads):
    torch.manual_seed(0)
    mixer = TransformerMixer(d_model, heads, positional="relative", causal=causal).double()
    x = torch.randn(2, 3 + steps, d_model, dtype=torch.float64)
    with torch.no_grad():
        if causal:  # a carried state of 3 steps: the cached keys keep their distances
            _, state = mixer(x[:, :3])
            y, _ = mixer(x[:, 3:], state)
            past, reference_input = 3, x
        else:
            y, _ = mixer(x[:, 3:])
            past, reference_input = 0, x[:, 3:]
        expected = naive_attention(mixer, reference_input, past, xl_score(mixer))
    assert_close(f"XL causal={causal} T={steps}", expected, y, 1e-10)


@pytest.mark.parametrize("steps", [1, 7])
def test_randomized_relative_uses_the_random_distances(steps):
    torch.manual_seed(0)
    mixer = TransformerMixer(10, 2, positional="relative", causal=False, randomized=True, max_len=40).double()
    x = torch.randn(3, steps, 10, dtype=torch.float64)
    mixer.position_seed = 123  # as SequenceCore sets it for one call
    table = mixer.distance_table(3, steps - 1, x.device)  # the largest distance of the call is T - 1
    with torch.no_grad():
        y, _ = mixer(x)
        expected = naive_attention(mixer, x, 0, xl_score(mixer, lambda b, d: math.copysign(table[b, abs(d)], d)))
    assert_close(f"randomized XL T={steps}", expected, y, 1e-10)


def test_random_distances_keep_the_order():
    torch.manual_seed(0)
    mixer = TransformerMixer(12, 3, positional="relative", randomized=True, max_len=MAX_LEN)
    assert not mixer.randomizes_positions and mixer.randomizes_distances
    t1, t2 = mixer.distance_table(4, 9, None), mixer.distance_table(4, 9, None)
    for table in (t1, t2):
        assert table.shape == (4, 10) and table.dtype == torch.long
        assert (table[:, 0] == 0).all() and (table[:, 1:] > table[:, :-1]).all() and (table < MAX_LEN).all()
    assert not torch.equal(t1, t2) and not torch.equal(t1[0], t1[1])  # drawn per call and per row
    distance = torch.arange(-9, 10).expand(4, -1)
    mapped = map_distances(distance, t1)
    assert (mapped[:, 1:] > mapped[:, :-1]).all()  # order (and so the sign) of distances is kept
    assert torch.equal(mapped, -mapped.flip(1)) and (mapped[:, 9] == 0).all()  # mirrored, 0 stays 0
    assert mixer.distance_table(2, MAX_LEN - 1, None).shape == (2, MAX_LEN)  # every distance of [1, max_len)
    with pytest.raises(ValueError, match="max_len"):
        mixer.distance_table(2, MAX_LEN, None)
    # the positions of the random-distance encodings stay 0, 1, ...
    assert mixer.positions(torch.zeros(2, dtype=torch.long), None, 5).tolist() == [list(range(5))] * 2


# ----------------------------------------------------------------------------------------------------
# ALiBi in a bidirectional encoder
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [1, 7])
def test_bidirectional_alibi_is_the_references_matrix(steps):
    """The reference's construction (compute_alibi_encodings_biases): minus the distance on both sides,
    plus 0.5 below the diagonal (keys left of the query)."""
    ones = torch.ones(steps, steps, dtype=torch.float64)
    matrix = torch.zeros(steps, steps, dtype=torch.float64)
    matrix -= sum((torch.tril(ones, -i) for i in range(1, steps)), torch.zeros_like(ones))
    matrix -= sum((torch.tril(ones, -i).T for i in range(1, steps)), torch.zeros_like(ones))
    matrix += 0.5 * torch.tril(ones, -1)
    slopes = torch.tensor(alibi_slopes(6), dtype=torch.float64)
    distance = (torch.arange(steps)[None, :] - torch.arange(steps)[:, None]).double()[None]  # j - i
    assert_close("alibi", slopes[None, :, None, None] * matrix, alibi_bias(distance, slopes, causal=False), 1e-15)
    causal = alibi_bias(distance, slopes, causal=True)  # Press et al.: slope * (j - i), unchanged
    assert_close("causal alibi", slopes[None, :, None, None] * distance[:, None], causal, 1e-15)


def alibi_score(mixer: TransformerMixer, bias_of):
    """score(i, j) = q_i·k_j / sqrt(dh) + slope_h * bias_of(b, i, j)."""
    slopes = alibi_slopes(mixer.num_heads)
    return lambda b, h, i, j, q_i, k_j: q_i @ k_j / math.sqrt(mixer.head_dim) + slopes[h] * bias_of(b, i, j)


def test_symmetric_alibi_encoder_is_equivariant_under_reversal():
    """With -slope·|i - j| (left_offset 0) an encoder with no other positional information maps the reversed
    input to the reversed output; with the old slope·(j - i) it does not (the bias then only pulls every query
    toward the last key); with the reference's 0.5 offset it tells left from right, so it is not either."""
    torch.manual_seed(0)
    x = torch.randn(2, 7, 12, dtype=torch.float64)
    core = make("transformer", d_model=12, num_layers=2, num_heads=3, d_ff=16, positional="alibi", causal=False,
                alibi_left_offset=0.0).double()
    with torch.no_grad():
        assert_close("reversed", core(x)[0].flip(1), core(x.flip(1))[0], 1e-12)
        offset = make("transformer", d_model=12, num_layers=2, num_heads=3, d_ff=16, positional="alibi",
                      causal=False).double()
        offset.load_state_dict(core.state_dict())
        assert (offset(x)[0].flip(1) - offset(x.flip(1))[0]).abs().max() > 1e-6

        mixer = core.blocks[0].mixer
        symmetric = naive_attention(mixer, x, 0, alibi_score(mixer, lambda b, i, j: -abs(j - i)))
        assert_close("symmetric alibi layer", symmetric, mixer(x)[0], 1e-12)
        old = alibi_score(mixer, lambda b, i, j: j - i)
        gap = naive_attention(mixer, x, 0, old).flip(1) - naive_attention(mixer, x.flip(1), 0, old)
        assert gap.abs().max() > 1e-3


def test_randomized_alibi_uses_the_random_distances():
    torch.manual_seed(0)
    mixer = TransformerMixer(12, 3, positional="alibi", causal=False, randomized=True, max_len=40).double()
    x = torch.randn(2, 6, 12, dtype=torch.float64)
    mixer.position_seed = 5
    table = mixer.distance_table(2, 5, x.device).double()
    with torch.no_grad():
        y, _ = mixer(x)
        expected = naive_attention(mixer, x, 0, alibi_score(
            mixer, lambda b, i, j: -float(table[b, abs(j - i)]) + 0.5 * (j < i)))
    assert_close("randomized alibi", expected, y, 1e-10)


# ----------------------------------------------------------------------------------------------------
# The encoder of Ruoss et al.: configs/agent/encoder.yaml
# ----------------------------------------------------------------------------------------------------

def encoder(**overrides):
    """The core of ``agent=encoder`` (the YAML on the AgentConfig schema), with overrides of its keys/options."""
    values = OmegaConf.load(Path(metarl.configs.__path__[0]) / "agent" / "encoder.yaml")
    values.pop("defaults", None)
    options = overrides.pop("options", {})
    cfg = OmegaConf.merge(OmegaConf.structured(AgentConfig), values, {**overrides, "options": options})
    torch.manual_seed(0)
    return cores.from_config(cfg).double().eval()


def layer_norm(z: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    mean = z.mean(-1, keepdim=True)
    var = (z - mean).pow(2).mean(-1, keepdim=True)
    return (z - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def test_encoder_config_is_the_ruoss_encoder():
    core = encoder()
    assert len(core.blocks) == 5 and core.d_model == 64 and isinstance(core.final_norm, torch.nn.Identity)
    for block in core.blocks:
        mixer = block.mixer
        assert mixer.norm_position == "post" and not mixer.causal and mixer.positional == "relative"
        assert mixer.qkv.bias is None and mixer.out.bias is None and mixer.rel_proj.bias is None
        assert block.drop.p == 0.1 and mixer.attention_dropout == 0.0
        assert block.ff.up.out_features == 4 * 64
    names = [n for n, _ in core.named_parameters() if ".mixer." in n and n.endswith(".bias")]
    assert names == [], names


def test_encoder_is_post_ln_with_scaled_embeddings_and_encodings_added_once():
    """One layer by hand: x0 = sqrt(d)·x + PE; a = LN(x0 + Attn(x0)); y = LN(a + W2 relu(W1 a + b1) + b2)."""
    core = encoder(d_model=16, num_heads=2, d_ff=32, num_layers=1, options={"positional": "sinusoidal"})
    block = core.blocks[0]
    mixer = block.mixer
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    with torch.no_grad():
        x0 = 4.0 * x + torch.stack([sincos(p, 16) for p in range(7)])
        plain = TransformerMixer(16, 2, positional="none", causal=False, bias=False).double()
        plain.qkv.weight.copy_(mixer.qkv.weight)
        plain.out.weight.copy_(mixer.out.weight)
        attention = naive_attention(plain, x0, 0, lambda b, h, i, j, q_i, k_j: q_i @ k_j / math.sqrt(8))
        a = layer_norm(x0 + attention, block.mixer_norm)
        ff = block.ff.down(torch.relu(block.ff.up(a)))
        expected = layer_norm(a + ff, block.ff_norm)
        assert_close("post-LN layer", expected, core(x)[0], 1e-10)


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
def test_encoder_adds_the_encoding_once(positional):
    """In a 2-layer encoder the first layer attends over sqrt(d)·x + PE, the second over the first layer's
    output as it is (no positional term); only the first layer holds a learned table."""
    core = encoder(d_model=16, num_heads=2, d_ff=32, num_layers=2, options={"positional": positional})
    seen = {}
    for index, block in enumerate(core.blocks):
        block.mixer.qkv.register_forward_hook(lambda m, args, out, index=index: seen.__setitem__(index, args[0]))
    outputs = []
    core.blocks[0].register_forward_hook(lambda m, args, out: outputs.append(out[0]))
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    with torch.no_grad():
        core(x)
        if positional == "sinusoidal":
            pe = torch.stack([sincos(p, 16) for p in range(7)])
        else:
            pe = core.blocks[0].mixer.pos_embedding.weight[:7]
    assert_close("first layer input", 4.0 * x + pe, seen[0], 1e-12)
    assert torch.equal(seen[1], outputs[0])
    assert hasattr(core.blocks[0].mixer, "pos_embedding") == (positional == "learned")
    assert not hasattr(core.blocks[1].mixer, "pos_embedding")


def test_encoder_preln_config_keeps_metarls_block():
    values = OmegaConf.load(Path(metarl.configs.__path__[0]) / "agent" / "encoder_preln.yaml")
    values.pop("defaults", None)
    core = cores.from_config(OmegaConf.merge(OmegaConf.structured(AgentConfig), values))
    mixer = core.blocks[0].mixer
    assert mixer.norm_position == "pre" and mixer.qkv.bias is not None and not mixer.positional_once
    assert isinstance(core.final_norm, torch.nn.LayerNorm) and not mixer.causal
