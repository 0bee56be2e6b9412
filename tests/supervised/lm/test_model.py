"""The LM model and evaluation: two segments with the carried state give the logits of one long segment (every
core; the Transformer with a memory covering both), bpc equals a hand computation, the task's streams and
epoch resets."""
from __future__ import annotations

import math

import pytest
import torch

from metarl import cores
from metarl.supervised.lm.task import build_language_model, evaluate_tokens, memory_of, transformer_mixers
from metarl.testing import assert_close
from tests.supervised.helpers import config

FF = {"dense": {}, "moe": {"num_experts": 4, "top_k": 2}, "pkm": {"num_keys": 4, "heads": 2, "top_k": 4}}


def small_model(name, vocab=11, ff="dense", memory=64, tie=False, **options):
    agent = {"name": name, "d_model": 16, "num_layers": 2, "num_heads": 2, "d_ff": 32, "ff": ff,
             "ff_options": FF[ff], "options": options}
    torch.manual_seed(0)
    return build_language_model(agent, vocab, memory=memory, tie=tie).double().eval()


CASES = [(name, "dense") for name in cores.names()] + [("transformer", "moe"), ("transformer", "pkm"), ("delta", "moe")]


@pytest.mark.parametrize("name, ff", CASES)
def test_two_segments_with_carried_state_equal_one_long_segment(name, ff):
    model = small_model(name, ff=ff, **({"positional": "relative"} if name == "transformer" else {}))
    tokens = torch.randint(0, 11, (3, 13), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole, _ = model(tokens)
        first, state = model(tokens[:, :6])
        second, _ = model(tokens[:, 6:], state)
    assert_close(f"{name}/{ff} split logits", torch.cat([first, second], 1), whole, 1e-10)
    # evaluation over a split with segments of 4 tokens and the state carried = one call over each stream
    text = torch.randint(0, 11, (40,), generator=torch.Generator().manual_seed(2))
    short = evaluate_tokens(model, text, batch_size=3, unroll=4, unit="char")
    long = evaluate_tokens(model, text, batch_size=3, unroll=1000, unit="char")
    assert abs(short["bpc"] - long["bpc"]) < 1e-10


def test_transformer_memory_is_a_window_of_the_last_steps():
    """With a memory of m steps, the logits of a long segment equal those of segment-by-segment calls with
    the carried keys/values, and differ from the full-context model once the sequence is longer than m + 1."""
    windowed = small_model("transformer", memory=5, positional="relative")
    assert all(m.context == 6 for m in transformer_mixers(windowed))
    tokens = torch.randint(0, 11, (2, 17), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole, _ = windowed(tokens)
        parts, state = [], None
        for start in range(0, 17, 4):
            y, state = windowed(tokens[:, start:start + 4], state)
            parts.append(y)
        assert state[0][0].shape[1] == 5  # the cache: keys of the last 5 steps
        assert_close("windowed segments", torch.cat(parts, 1), whole, 1e-10)
        with memory_of(windowed, 100):  # evaluation at a longer memory, restored afterwards
            full, _ = windowed(tokens)
        assert all(m.context == 6 for m in transformer_mixers(windowed))
    assert_close("inside the window", full[:, :6], whole[:, :6], 1e-10)
    assert (full[:, 6:] - whole[:, 6:]).abs().max() > 1e-6


@pytest.mark.parametrize("tie", [False, True])
def test_bpc_equals_a_hand_computation(tie):
    model = small_model("lstm", vocab=7, tie=tie)
    if tie:
        assert model.head.weight is model.embed.weight
    text = torch.randint(0, 7, (23,), generator=torch.Generator().manual_seed(4))
    # by hand: 3 streams of ceil(22 / 3) = 8 targets (the last one 6), each stream in one call from the initial
    # state, -log2 p(next token) summed over the 22 targets
    bits = 0.0
    for b in range(3):
        row = text[b * 8: b * 8 + 9]
        with torch.no_grad():
            logits, _ = model(row[None, :-1])
        probs = torch.softmax(logits[0], -1)
        bits += sum(-math.log2(probs[t, row[t + 1]].item()) for t in range(len(row) - 1))
    result = evaluate_tokens(model, text, batch_size=3, unroll=3, unit="char")
    assert abs(result["bpc"] - bits / 22) < 1e-9
    assert abs(result["nll"] - bits / 22 * math.log(2)) < 1e-9
    words = evaluate_tokens(model, text, batch_size=3, unroll=3, unit="token")
    assert abs(words["perplexity"] - 2 ** (bits / 22)) < 1e-9


def test_task_reads_segments_in_order_and_resets_each_epoch():
    from metarl.supervised.lm.task import LanguageModelling

    cfg = config("lm", "agent=lstm", "agent.d_model=16", "agent.num_layers=1", "env.batch_size=2", "env.unroll=8",
                 "env.train_tokens=100", "env.eval_tokens=50")
    task = LanguageModelling(cfg)
    assert task.segments_per_epoch == 49 // 8 and task.vocab_size == 256
    batches = [task.train_batch(s, torch.Generator()) for s in (1, 2, task.segments_per_epoch + 1)]
    assert batches[0].first and not batches[1].first and batches[2].first
    assert torch.equal(batches[0].inputs, batches[2].inputs)
    assert (batches[1].inputs[:, 0] == batches[0].targets[:, -1]).all()
    model = task.build_model().double()
    out = task.loss(model, batches[1], None)
    carried = task.loss(model, batches[1], out.state)  # a later segment continues from the state
    reset = task.loss(model, batches[0], out.state)  # the first segment of an epoch ignores it
    assert abs(task.loss(model, batches[0], None).loss.item() - reset.loss.item()) < 1e-12
    assert abs(carried.loss.item() - out.loss.item()) > 1e-9
    assert out.count == 16 and "bpc" in out.metrics and "losses/lm" in out.metrics


def test_reset_every_restarts_the_state_in_training_and_evaluation():
    from metarl.supervised.lm.task import LanguageModelling

    cfg = config("lm", "agent=lstm", "agent.d_model=16", "agent.num_layers=1", "env.batch_size=2", "env.unroll=4",
                 "env.train_tokens=100", "env.eval_tokens=50", "env.reset_every=3")
    task = LanguageModelling(cfg)
    assert [task.train_batch(s, torch.Generator()).first for s in range(1, 8)] == [True, False, False, True,
                                                                                   False, False, True]
    model = small_model("lstm", vocab=7).double()
    text = torch.randint(0, 7, (31,), generator=torch.Generator().manual_seed(5))
    # every segment from the initial state: the 30 targets of 3 streams in segments of 5 tokens, scored one by one
    separate = sum(evaluate_tokens(model, text[b * 10 + s * 5: b * 10 + s * 5 + 6], 1, 5, "char")["nll"] * 5
                   for b in range(3) for s in range(2)) / 30
    assert abs(evaluate_tokens(model, text, 3, 5, "char", reset_every=1)["nll"] - separate) < 1e-9
    assert abs(evaluate_tokens(model, text, 3, 5, "char")["nll"] - separate) > 1e-6  # carried: another value
    with pytest.raises(Exception, match="env.reset_every"):
        LanguageModelling(config("lm", "agent=lstm", "env.reset_every=-1"))
