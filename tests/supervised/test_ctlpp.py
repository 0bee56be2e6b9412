"""CTL++: bijections, answers, groups, symbol overlaps and splits with the structure of the reference
(RobertCsordas/ctlpp dataset/function_interface_test_*.py), and a short run."""
from __future__ import annotations

import re
from collections import Counter

import pytest
import torch

from metarl.supervised.ctlpp import CTLPPTask
from metarl.supervised.tasks import IGNORE
from tests.supervised.helpers import train

# Group patterns in application order (group names written one after the other), from the papers' definitions.
RULES = {
    ("r", "train"): r"a+|b+", ("r", "ood"): r"(ab)*a?|(ba)*b?",
    ("a", "train"): r"(ab)*a?|(ba)*b?", ("a", "ood"): r"a+|b+",
    ("s", "train"): r"(a1a2|b1b2|a1o|b1o)+",
    ("s", "test_group_alternate"): r"(a1b2|b1a2)+",
    ("s", "test_unseen_pairs"): r"a1b2|b1a2|a1o|b1o",
    ("s", "test_cross_unseen_symbols"): r"a1o|b1o",
}


def follows(task: CTLPPTask, split: str, chain) -> bool:
    return re.fullmatch(RULES[task.variant, split], "".join(task.groups_of(chain))) is not None


def compose(task: CTLPPTask, chain) -> int:
    *functions, x = chain
    symbol = x - task.num_functions
    for f in functions[::-1]:  # f_1 (rightmost) first
        symbol = task.functions[f][symbol]
    return symbol


def steps(task: CTLPPTask, chain):
    """(previous function, function, the symbol it gets) for each step after the first, in application order."""
    *functions, x = chain
    functions, symbol, out = functions[::-1], x - task.num_functions, []
    for i, f in enumerate(functions):
        if i:
            out.append((functions[i - 1], f, symbol))
        symbol = task.functions[f][symbol]
    return out


def check_batches(task: CTLPPTask, batches):
    for batch in batches:
        for b in range(batch.tokens.shape[0]):
            n = int(batch.lengths[b]) if batch.lengths is not None else batch.tokens.shape[1]
            chain = tuple(batch.tokens[b, : n - 1].tolist())
            assert batch.tokens[b, n - 1] == task.query and (batch.targets[b, : n - 1] == IGNORE).all()
            assert batch.targets[b, n - 1] == compose(task, chain)


@pytest.mark.parametrize("variant", ["r", "a"])
def test_r_and_a_splits_follow_their_rules(variant):
    task = CTLPPTask(variant, num_functions=8, chain_lengths=(2, 4), train_size=1500, test_size=150, data_seed=3)
    assert len(set(task.functions)) == 8 and all(sorted(f) == list(range(8)) for f in task.functions)
    assert task.groups == {"a": [0, 1, 2, 3], "b": [4, 5, 6, 7]}
    iid, ood, trained = set(task.iid), set(task.tests["ood"]), set(task.train)
    assert len(iid) == 150 and len(ood) == len(task.tests["ood"]) == 150 and list(task.tests) == ["ood"]
    assert not iid & trained and not ood & trained and not iid & ood
    assert all(follows(task, "train", c) for c in iid | trained) and all(follows(task, "ood", c) for c in ood)
    # sizes per length (the reference's sample): 1500 + 150 drawn at half of each length's chains, spread evenly;
    # 2 groups of 4: 2 * 4^L * 8 chains of length L; plus every length-2 chain (train_on_pairs)
    assert Counter(len(c) - 1 for c in iid | trained) == {2: 256, 3: 512, 4: 1650 - 128 - 512}
    held_out_pairs = sum(len(c) == 3 for c in iid)  # neither drawn for training nor added with the pairs
    assert sum(len(c) == 3 for c in task.train) == (128 - held_out_pairs) + (256 - held_out_pairs)
    assert Counter(len(c) - 1 for c in ood) == {2: 50, 3: 50, 4: 50}
    assert task.counts("train", 4) == {1: 64, 2: 256, 3: 1024, 4: 4096}  # length 1 is outside chain_lengths
    assert len(task.enumerate("train", 3)) == 1024
    generator = torch.Generator().manual_seed(0)
    batch = task.sample(64, generator)
    check_batches(task, [batch])
    assert all(tuple(batch.tokens[b, : int(batch.lengths[b]) - 1].tolist()) in trained for b in range(64)
               if batch.lengths is not None)
    sets = task.eval_sets(generator)
    assert list(sets) == ["iid", "ood"]
    check_batches(task, sets["iid"] + sets["ood"])


def small_s(**kwargs) -> CTLPPTask:
    """12 functions on 4 symbols: o = 4 functions, a1, a2, b1, b2 of 2; 2 of the 4 symbols shared per o function."""
    options = dict(num_symbols=4, num_functions=12, chain_lengths=(2, 4), overlap=4, symbol_overlap=2,
                   train_size=600, test_size=60, data_seed=1)
    return CTLPPTask("s", **{**options, **kwargs})


def test_s_groups_and_restricted_symbol_overlaps():
    task = small_s()
    assert task.groups == {"o": [0, 1, 2, 3], "a1": [4, 5], "a2": [6, 7], "b1": [8, 9], "b2": [10, 11]}
    allowed = {(source, f): symbols for source, symbols, f in task.restricted}
    assert sorted(allowed) == [(s, f) for s in ("a1", "b1") for f in range(4)]
    # generate_restricted_overlaps with 4 symbols, 2 shared: o function 0 shares {0, 1}, the others 2, 3 go one to
    # a1 and one to b1; function 1 shares {2, 3} (then the order of symbols is reshuffled)
    assert allowed["a1", 0] == {0, 1, 2} and allowed["b1", 0] == {0, 1, 3}
    assert allowed["a1", 1] == {2, 3, 0} and allowed["b1", 1] == {2, 3, 1}
    for f in range(4):
        assert len(allowed["a1", f] & allowed["b1", f]) == 2 and allowed["a1", f] | allowed["b1", f] == {0, 1, 2, 3}
    assert (allowed["a1", 2] & allowed["b1", 2]).isdisjoint(allowed["a1", 3] & allowed["b1", 3])
    imbalanced = small_s(imbalance=2)  # both non-shared symbols go to a1
    assert all(len(s) == (4 if source == "a1" else 2) for source, s, _ in imbalanced.restricted)
    every = small_s(symbol_overlap=0)  # 0: every symbol shared (the reference's default None)
    assert all(s == {0, 1, 2, 3} for _, s, _ in every.restricted)


def test_s_splits_have_the_reference_structure():
    task = small_s()
    assert list(task.eval_sets(torch.Generator())) == ["iid", "test_group_alternate", "test_all",
                                                       "test_cross_unseen_symbols", "test_unseen_pairs"]
    allowed = {(source, f): symbols for source, symbols, f in task.restricted}
    trained, iid = set(task.train), set(task.iid)
    assert len(iid) == 60 and not iid & trained
    for chain in trained | iid:
        assert follows(task, "train", chain), task.groups_of(chain)
        for previous, f, symbol in steps(task, chain):  # o only on the symbols allowed for the pair
            if task.group[f] == "o":
                assert symbol in allowed[task.group[previous], f]
    # train_on_pairs: every length-2 training chain is trained on (unless held out in iid):
    # a1 a2 and b1 b2: 2 * 2 * 2 * 4 symbols; a1 o and b1 o: 2 functions * 3 allowed symbols * 4 o functions, each
    pairs = {c for c in trained | iid if len(c) == 3}
    assert len(pairs) == 32 + 2 * 2 * 3 * 4 and pairs == set(task.enumerate("train", 2))
    assert Counter(len(c) - 1 for c in trained | iid) == {2: 80, 4: 660 - 40}  # length 2 drawn at half (40)
    # test_unseen_pairs: all length-2 chains whose step never occurs in training: a1 b2, b1 a2 (2 * 2 * 2 * 4) and
    # a1 o / b1 o on the held-out symbol (2 functions * 1 symbol * 4 o functions, each)
    seen_steps = {step for chain in trained for step in steps(task, chain)}
    seen_group_pairs = {(task.group[p], task.group[f]) for p, f, _ in seen_steps}
    unseen, cross = task.tests["test_unseen_pairs"], task.tests["test_cross_unseen_symbols"]
    assert len(unseen) == len(set(unseen)) == 32 + 16 and set(cross) <= set(unseen) and len(cross) == 16
    for chain in unseen:
        assert follows(task, "test_unseen_pairs", chain) and chain not in trained
        (previous, f, symbol), = steps(task, chain)
        assert (previous, f, symbol) not in seen_steps
        if task.group[f] == "o":
            assert symbol not in allowed[task.group[previous], f] and follows(task, "test_cross_unseen_symbols", chain)
        else:
            assert (task.group[previous], task.group[f]) not in seen_group_pairs
    alternate = task.tests["test_group_alternate"]
    assert len(set(alternate)) == 60 and all(follows(task, "test_group_alternate", c) for c in alternate)
    assert not set(alternate) & trained
    every = task.tests["test_all"]  # any group after any, lengths 2-4 spread evenly (the reference's test_all)
    assert len(set(every)) == 60 and Counter(len(c) - 1 for c in every) == {2: 20, 3: 20, 4: 20}
    assert {g for c in every for g in task.groups_of(c)} == {"o", "a1", "a2", "b1", "b2"}
    check_batches(task, [b for batches in task.eval_sets(torch.Generator()).values() for b in batches])
    check_batches(task, [task.sample(32, torch.Generator().manual_seed(0))])
    # every symbol shared: no held-out symbols, so no cross split and only a1 b2 / b1 a2 unseen pairs
    shared = small_s(symbol_overlap=0)
    assert "test_cross_unseen_symbols" not in shared.tests and len(shared.tests["test_unseen_pairs"]) == 32


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="env.variant='x'"):
        CTLPPTask("x")
    with pytest.raises(ValueError, match="env.train_size=300000"):  # 2 * 2 * 2 * 8 chains of two exist
        CTLPPTask("r", num_functions=4, chain_lengths=(2, 2))
    with pytest.raises(ValueError, match="env.overlap=10"):
        small_s(overlap=10)
    with pytest.raises(ValueError, match="env.symbol_overlap=5"):
        small_s(symbol_overlap=5)
    with pytest.raises(ValueError, match="env.test_size=1000"):
        small_s(test_size=1000)
    with pytest.raises(ValueError, match="only 24 distinct bijections"):  # would draw permutations for ever
        CTLPPTask("r", num_symbols=4, num_functions=32)


def test_short_run_beats_chance():
    """LSTM on a smaller instance (8 functions on 4 symbols, chains of 2-4, the largest training set it allows:
    half of each length's chains); chance is 1/4 on the unseen (IID) chains (seeds 0 and 1 reach 0.71 and 0.56)."""
    metrics = train("ctlpp/r", "agent=lstm", "agent.d_model=128", "env.num_functions=8", "env.num_symbols=4",
                    "env.chain_lengths=[2,4]", "env.train_size=1244", "env.test_size=100", "optim.steps=1500",
                    "env.eval_every=500", "optim.lr=3e-3")
    assert metrics["test/iid/accuracy"] > 0.4, metrics
