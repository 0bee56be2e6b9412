"""The softmax-attention Transformer core: the core contract for every positional encoding, randomized
positions, errors, and a tiny learning test."""
from __future__ import annotations

import pytest
import torch

from metarl.cores import make
from metarl.cores.base import where_reset
from metarl.cores.transformer import TransformerMixer
from metarl.layers.positional import POSITIONAL, alibi_slopes
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


def build(positional: str, context=None, randomized: bool = False, max_len: int = MAX_LEN):
    torch.manual_seed(0)
    core = make(
        "transformer", d_model=12, num_layers=2, num_heads=3, d_ff=16, positional=positional,
        randomized=randomized, max_len=max_len, context=context,
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
@pytest.mark.parametrize("positional", POSITIONAL)
def test_split_calls_equal_one_call(positional, context):
    core = build(positional, context)
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
@pytest.mark.parametrize("positional", POSITIONAL)
def test_resets_equal_separate_episodes(positional, context):
    core = build(positional, context)
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


@pytest.mark.parametrize("randomized", [False, True])
@pytest.mark.parametrize("positional", POSITIONAL)
def test_every_parameter_gets_a_gradient(positional, randomized):
    core = build(positional, randomized=randomized)
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
    mixer = TransformerMixer(12, 3, positional="relative", max_len=MAX_LEN)
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
