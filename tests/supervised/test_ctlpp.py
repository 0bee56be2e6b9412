"""CTL++: bijections, answers, disjoint splits that follow (or break) each variant's rule, and a short run."""
from __future__ import annotations

import pytest
import torch

from metarl.supervised.ctlpp import CTLPPTask
from metarl.supervised.tasks import IGNORE
from tests.supervised.helpers import train


def groups_of(task: CTLPPTask, chain):
    """Groups of the functions in application order (the chain is written right to left)."""
    return [task.group[f] for f in reversed(chain[:-1])]


def train_rule(variant: str, g) -> bool:
    """Each variant's training rule, written as regular expressions over group letters."""
    import re
    s = "".join(g)
    pattern = {"r": r"a+|b+", "a": r"(ab)*a?|(ba)*b?", "s": r"(a(oa)*)+|(b(ob)*)+|(a(oa)*)+o|(b(ob)*)+o"}[variant]
    return re.fullmatch(pattern, s) is not None


def ood_rule(variant: str, g) -> bool:
    import re
    s = "".join(g)
    if variant == "s":
        return re.fullmatch(r"[ab](o[ab])*o?", s) is not None and re.search(r"aob|boa", s) is not None
    return re.fullmatch({"r": r"(ab)*a?|(ba)*b?", "a": r"a+|b+"}[variant], s) is not None


def compose(task: CTLPPTask, chain) -> int:
    *functions, x = chain
    symbol = x - task.num_functions
    for f in functions[::-1]:  # f_1 (rightmost) first
        symbol = task.functions[f][symbol]
    return symbol


@pytest.mark.parametrize("variant", ["r", "a", "s"])
def test_splits_are_disjoint_and_follow_the_rules(variant):
    task = CTLPPTask(variant, test_size=300, data_seed=3)
    assert len(task.functions) == 32 and len(set(task.functions)) == 32
    assert all(sorted(f) == list(range(8)) for f in task.functions)
    sizes = {g: task.group.count(g) for g in set(task.group)}
    assert sizes == ({"a": 12, "b": 12, "o": 8} if variant == "s" else {"a": 16, "b": 16})
    iid, ood = set(task.iid), set(task.ood)
    assert len(iid) == len(task.iid) == 300 and len(ood) == len(task.ood) == 300
    assert not iid & ood
    for chain in task.iid:
        assert train_rule(variant, groups_of(task, chain)) and not ood_rule(variant, groups_of(task, chain))
    for chain in task.ood:
        assert ood_rule(variant, groups_of(task, chain)) and not train_rule(variant, groups_of(task, chain))
    generator = torch.Generator().manual_seed(0)
    lengths = set()
    for _ in range(20):
        batch = task.sample(64, generator)
        for b in range(64):
            n = int(batch.lengths[b]) if batch.lengths is not None else batch.tokens.shape[1]
            chain = tuple(batch.tokens[b, : n - 1].tolist())
            assert batch.tokens[b, n - 1] == task.query and chain not in iid and chain not in ood
            assert train_rule(variant, groups_of(task, chain))
            assert batch.targets[b, n - 1] == compose(task, chain)
            assert (batch.targets[b, : n - 1] == IGNORE).all()
            lengths.add(len(chain) - 1)
    assert lengths == set(range(2, 7))
    for name, batches in task.eval_sets(generator).items():
        for batch in batches:
            rows = range(batch.tokens.shape[0])
            n = [int(batch.lengths[b]) if batch.lengths is not None else batch.tokens.shape[1] for b in rows]
            assert all(batch.targets[b, n[b] - 1] == compose(task, tuple(batch.tokens[b, : n[b] - 1].tolist()))
                       for b in rows)


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="env.variant='x'"):
        CTLPPTask("x")
    with pytest.raises(ValueError, match="env.test_size=1000"):  # only 4 * 8 * 2 chains of two exist
        CTLPPTask("r", num_functions=4, chain_lengths=(2, 2))


def test_short_run_beats_chance():
    """LSTM on a smaller instance (8 functions, chains of 2-4); chance is 1/8 on unseen (IID) chains."""
    metrics = train("ctlpp/r", "agent=lstm", "agent.d_model=128", "env.num_functions=8", "env.chain_lengths=[2,4]",
                    "env.test_size=200", "optim.steps=1500", "env.eval_every=500", "optim.lr=3e-3")
    assert metrics["test/iid/accuracy"] > 0.2, metrics
