"""Chomsky-hierarchy tasks: outputs checked against answer functions written independently of the generators
(Python's own arithmetic where possible), layout and lengths, and a short run that beats chance."""
from __future__ import annotations

import math

import pytest
import torch

from metarl.supervised.chomsky import TASKS, ChomskyTask
from metarl.supervised.tasks import IGNORE
from tests.supervised.helpers import train

ARITHMETIC = "01234+-*()x="  # token id -> character


def text(tokens) -> str:
    return "".join(ARITHMETIC[t] for t in tokens)


def little_endian(digits) -> int:
    return int("".join(map(str, digits[::-1])) or "0", 2)


def binary_answer(x, y, op) -> bool:
    """x: a little-endian, 2, b little-endian; y: result, 2, zeros (no most-significant zero in the result)."""
    sep = x.index(2)
    result, rest = y[: y.index(2)], y[y.index(2) + 1:]
    value = op(little_endian(x[:sep]), little_endian(x[sep + 1:]))
    return little_endian(result) == value and (not result or result[-1] == 1) and set(rest) <= {0}


def stack_answer(x, y) -> bool:
    top_first = []
    for t in x:
        if t in (0, 1):
            top_first.insert(0, t)
        elif t == 2:
            top_first = top_first[1:]
        else:
            top_first.insert(0, t - 3)
    return y[: len(top_first) + 1] == top_first + [2] and set(y[len(top_first) + 1:]) <= {0}


def solve(x, y) -> bool:
    equation = text(x)
    left, right = equation.split("=")
    solutions = [v for v in range(5) if eval(left.replace("x", str(v))) % 5 == int(right)]  # noqa: S307
    return solutions == y


def missing(x, y) -> bool:
    s = [t for t in x if t != 3]
    half = len(s) // 2
    hole = s.index(2)
    return y == [s[hole + half if hole < half else hole - half]]


ANSWER = {
    "even_pairs": lambda x, y: y == [int(x[0] == x[-1])],
    "modular_arithmetic": lambda x, y: y == [eval(text(x)) % 5],  # noqa: S307
    "parity_check": lambda x, y: y == [x.count(1) % 2],
    "cycle_navigation": lambda x, y: y == [(x.count(2) - x.count(0)) % 5],
    "stack_manipulation": stack_answer,
    "reverse_string": lambda x, y: y == x[::-1],
    "modular_arithmetic_brackets": lambda x, y: y == [eval(text(x)) % 5],  # noqa: S307
    "solve_equation": solve,
    "duplicate_string": lambda x, y: y == x + x,
    "missing_duplicate_string": missing,
    "odds_first": lambda x, y: y == [x[i - 1] for i in range(1, len(x) + 1, 2)] + [x[i - 1] for i in range(2, len(x) + 1,
                                                                                                        2)],
    "binary_addition": lambda x, y: binary_answer(x, y, lambda a, b: a + b),
    "binary_multiplication": lambda x, y: binary_answer(x, y, lambda a, b: a * b),
    "compute_sqrt": lambda x, y: (len(y) == math.ceil(len(x) / 2)
                                  and little_endian(y[::-1]) == math.isqrt(little_endian(x[::-1]))),
    "bucket_sort": lambda x, y: y == sorted(x),
}
OUTPUT_LENGTH = {"stack_manipulation": lambda n: n + 1, "binary_addition": lambda n: n + 1, "reverse_string": lambda n: n,
                 "binary_multiplication": lambda n: n, "duplicate_string": lambda n: 2 * n, "odds_first": lambda n: n,
                 "compute_sqrt": lambda n: math.ceil(n / 2), "bucket_sort": lambda n: n}


def split(task: ChomskyTask, batch, b: int):
    """Row b of a batch -> (input tokens, output targets); checks the empty tokens sit under the targets."""
    targets = batch.targets[b].tolist()
    first = next(i for i, t in enumerate(targets) if t != IGNORE)
    tokens = batch.tokens[b].tolist()
    assert all(t == task.empty for t in tokens[first:]) and task.empty not in tokens[:first]
    assert all(t == IGNORE for t in targets[:first])
    return tokens[:first], targets[first:]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_outputs_match_independent_answers(name):
    task = ChomskyTask(name)
    generator = torch.Generator().manual_seed(0)
    assert len(TASKS) == 15
    for n in [1, 2, 3, 4, 5, 8, 13, 40, 41, 97, 500]:
        batch = task.sample(4 if n > 100 else 16, generator, n)
        assert batch.length == n
        for b in range(batch.tokens.shape[0]):
            x, y = split(task, batch, b)
            raised = max(n, task.spec.min_length)
            expected_n = raised - 1 if task.spec.odd and raised % 2 == 0 else raised
            assert len(x) == expected_n, (name, n, len(x))
            assert len(y) == OUTPUT_LENGTH.get(name, lambda n: 1)(len(x)), (name, n, len(y))
            assert max(x) < task.spec.input_size and max(y) < task.spec.output_size
            assert ANSWER[name](x, y), (name, x, y)
            scored = batch.score_mask[b].sum().item()
            assert scored == (y.index(2) + 1 if task.spec.terminator is not None else len(y))


def test_train_and_test_lengths():
    task = ChomskyTask("reverse_string", test_length_step=50, test_batch_size=2)
    generator = torch.Generator().manual_seed(0)
    lengths = {task.sample(2, generator).length for _ in range(300)}
    assert min(lengths) == 1 and max(lengths) == 40
    sets = task.eval_sets(generator)
    assert [b.length for b in sets["valid"]] == list(range(1, 41))
    assert [b.length for b in sets["test"]] == list(range(41, 501, 50))
    assert [b.tokens.shape[1] for b in sets["test"]] == [2 * n for n in range(41, 501, 50)]
    again = task.eval_sets(torch.Generator().manual_seed(0))["test"]  # the same batches on every pass
    assert all(torch.equal(a.tokens, b.tokens) for a, b in zip(sets["test"], list(sets["test"])))
    assert len(again) == len(sets["test"])
    with pytest.raises(ValueError, match="env.task='sort'"):
        ChomskyTask("sort")


def test_short_run_beats_chance_with_an_encoder():
    """Non-causal Transformer (relative positions), outputs at appended empty tokens; chance is 0.5 per bit."""
    metrics = train("chomsky/reverse_string", "agent=encoder", "agent.d_model=32", "agent.num_layers=2",
                    "agent.num_heads=4", "agent.d_ff=64", "env.train_lengths=[1,10]", "env.test_lengths=[11,20]",
                    "env.test_length_step=3", "optim.steps=300", "env.eval_every=100", "optim.lr=3e-3")
    assert metrics["test/valid/accuracy"] > 0.75, metrics
    assert set(metrics["test_results"]["test"]["per_length"]) == {11, 14, 17, 20}
