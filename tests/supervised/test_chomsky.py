"""Chomsky-hierarchy tasks: outputs checked against answer functions written independently of the generators
(Python's own arithmetic where possible), layout and lengths, hand-computed examples of what the DeepMind reference
generators produce (neural_networks_chomsky_hierarchy / randomized_positional_encodings ``tasks/``), and a short run
that beats chance."""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from metarl.supervised.chomsky import TASKS, ChomskyTask, unknown_position
from metarl.supervised.tasks import IGNORE
from tests.supervised.helpers import train

# token id -> character, as the references' alphabet_to_int / OP_BY_CHARACTER number them
ALPHABET = {"modular_arithmetic": "01234+-*_", "modular_arithmetic_brackets": "01234+-*()x",
            "solve_equation": "01234+-()x="}
INPUT_SIZE = {"even_pairs": 2, "modular_arithmetic": 9, "parity_check": 2, "cycle_navigation": 3,
              "stack_manipulation": 5, "reverse_string": 2, "modular_arithmetic_brackets": 11, "solve_equation": 11,
              "duplicate_string": 2, "missing_duplicate_string": 4, "odds_first": 2, "binary_addition": 3,
              "binary_multiplication": 3, "compute_sqrt": 2, "bucket_sort": 5}
OUTPUT_SIZE = {"cycle_navigation": 5, "stack_manipulation": 3, "modular_arithmetic": 5,
               "modular_arithmetic_brackets": 5, "solve_equation": 5, "binary_addition": 3, "binary_multiplication": 3,
               "bucket_sort": 5}
MINIMUM = {"solve_equation": 3, "missing_duplicate_string": 2, "binary_addition": 3, "binary_multiplication": 3}


def text(name, tokens) -> str:
    return "".join(ALPHABET[name][t] for t in tokens)


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
    left, right = text("solve_equation", x).split("=")
    solutions = [v for v in range(5) if eval(left.replace("x", str(v))) % 5 == int(right)]  # noqa: S307
    return solutions == y


def missing(x, y) -> bool:
    s = [t for t in x if t != 3]
    half = len(s) // 2
    hole = s.index(2)
    return y == [s[hole + half if hole < half else hole - half]]


ANSWER = {
    "even_pairs": lambda x, y: y == [int(x[0] != x[-1])],
    "modular_arithmetic": lambda x, y: y == [eval(text("modular_arithmetic", x)) % 5],  # noqa: S307
    "parity_check": lambda x, y: y == [x.count(1) % 2],
    "cycle_navigation": lambda x, y: y == [(x.count(2) - x.count(0)) % 5],
    "stack_manipulation": stack_answer,
    "reverse_string": lambda x, y: y == x[::-1],
    "modular_arithmetic_brackets": lambda x, y: y == [eval(text("modular_arithmetic_brackets", x)) % 5],  # noqa: S307
    "solve_equation": solve,
    "duplicate_string": lambda x, y: y == x + x,
    "missing_duplicate_string": missing,
    "odds_first": lambda x, y: y == [x[i] for i in range(1, len(x), 2)] + [x[i] for i in range(0, len(x), 2)],
    "binary_addition": lambda x, y: binary_answer(x, y, lambda a, b: a + b),
    "binary_multiplication": lambda x, y: binary_answer(x, y, lambda a, b: a * b),
    "compute_sqrt": lambda x, y: (len(y) == math.ceil(len(x) / 2)
                                  and little_endian(y[::-1]) == math.isqrt(little_endian(x[::-1]))),
    "bucket_sort": lambda x, y: y == sorted(x),
}
OUTPUT_LENGTH = {"stack_manipulation": lambda n: n + 1, "binary_addition": lambda n: n + 1,
                 "reverse_string": lambda n: n, "binary_multiplication": lambda n: n,
                 "duplicate_string": lambda n: 2 * n, "odds_first": lambda n: n,
                 "compute_sqrt": lambda n: math.ceil(n / 2), "bucket_sort": lambda n: n}


def split(task: ChomskyTask, batch, b: int):
    """Row b of a batch -> (input tokens, output targets); checks the empty tokens sit under the targets."""
    targets = batch.targets[b].tolist()
    first = next(i for i, t in enumerate(targets) if t != IGNORE)
    tokens = batch.tokens[b].tolist()
    assert all(t == task.empty for t in tokens[first:]) and task.empty not in tokens[:first]
    assert all(t == IGNORE for t in targets[:first])
    return tokens[:first], targets[first:]


def examples(name: str, n: int, batch_size: int = 256, seed: int = 0) -> dict:
    """{input: output} over one batch of task length n."""
    task = ChomskyTask(name)
    batch = task.sample(batch_size, torch.Generator().manual_seed(seed), n)
    return {tuple(x): y for x, y in (split(task, batch, b) for b in range(batch_size))}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_outputs_match_independent_answers(name):
    task = ChomskyTask(name)
    generator = torch.Generator().manual_seed(0)
    assert len(TASKS) == 15
    assert (task.spec.input_size, task.spec.output_size) == (INPUT_SIZE[name], OUTPUT_SIZE.get(name, 2))
    assert task.vocab_size == INPUT_SIZE[name] + 1 and task.empty == INPUT_SIZE[name]
    for n in [1, 2, 3, 4, 5, 8, 13, 40, 41, 97, 500]:
        batch = task.sample(4 if n > 100 else 16, generator, n)
        assert batch.length == n
        for b in range(batch.tokens.shape[0]):
            x, y = split(task, batch, b)
            expected_n = n - 1 if task.spec.odd and n % 2 == 0 else n  # never raised to a minimum
            assert len(x) == expected_n, (name, n, len(x))
            assert len(y) == OUTPUT_LENGTH.get(name, lambda n: 1)(len(x)), (name, n, len(y))
            assert max(x) < task.spec.input_size and max(y) < task.spec.output_size
            if n >= MINIMUM.get(name, 1):  # shorter: the reference's dummies (test_short_lengths_give_...)
                assert ANSWER[name](x, y), (name, x, y)
            scored = batch.score_mask[b].sum().item()
            assert scored == (y.index(2) + 1 if task.spec.terminator is not None else len(y))


def test_even_pairs_is_one_for_an_odd_number_of_unequal_pairs():
    """regular/even_pairs.py: the class is sum(xor(s[:-1], s[1:])) % 2 (its docstring: 001110 -> 0, 0101001 -> 1)."""
    four = examples("even_pairs", 4)
    assert four[(0, 1, 1, 0)] == [0] and four[(1, 0, 0, 1)] == [0] and four[(0, 0, 0, 0)] == [0]
    assert four[(0, 1, 1, 1)] == [1] and four[(1, 0, 0, 0)] == [1]
    assert examples("even_pairs", 1, 16) == {(0,): [0], (1,): [0]}  # no pairs: even -> 0


def test_odds_first_outputs_the_odd_indices_first():
    """cs/odds_first.py concatenates s[:, 1::2] then s[:, ::2] (0-based), whatever its docstring says."""
    four = examples("odds_first", 4)
    assert four[(0, 1, 1, 0)] == [1, 0, 0, 1] and four[(0, 0, 1, 1)] == [0, 1, 0, 1]
    assert examples("odds_first", 3)[(0, 1, 1)] == [1, 0, 1]


def test_solve_equation_takes_the_first_digit_from_a_random_position():
    """dcf/solve_equation.py draws idx uniformly, then moves right (cyclically) to the next digit."""
    assert [unknown_position("(1+2)", start) for start in range(5)] == [1, 1, 3, 3, 1]
    assert unknown_position("-3", 0) == 1 and unknown_position("((-1-2)+3)", 8) == 8
    # length 7: "(a+b)=v" or "(a-b)=v", x replaces a with probability 3/5 (uniform over digits would be 1/2)
    task = ChomskyTask("solve_equation")
    batch = task.sample(2000, torch.Generator().manual_seed(0), 7)
    x = batch.tokens[:, :7]
    assert (x[:, 0] == 7).all() and (x[:, 4] == 8).all() and (x[:, 5] == 10).all()  # ( ... ) = in its alphabet
    assert ((x[:, 2] == 5) | (x[:, 2] == 6)).all()  # + or -, never * (7 is "(" here)
    assert 0.55 < (x[:, 1] == 9).float().mean().item() < 0.65
    assert ((x[:, 1] == 9) ^ (x[:, 3] == 9)).all()


def test_arithmetic_alphabets():
    """Token ids and unused input units of the three arithmetic tasks (the references' alphabets)."""
    three = examples("modular_arithmetic_brackets", 3, 64)  # "(d)"
    assert three == {(8, d, 9): [d] for d in range(5)}
    assert examples("modular_arithmetic_brackets", 2, 64) == {(6, d): [(-d) % 5] for d in range(5)}
    assert examples("modular_arithmetic_brackets", 4, 64) == {(8, 6, d, 9): [(-d) % 5] for d in range(5)}
    ops = Counter(t for x in examples("modular_arithmetic", 9, 512) for t in x[1::2])
    assert set(ops) == {5, 6, 7}  # + - *; the blank 8 never drawn
    assert all(len(x) == 3 for x in examples("modular_arithmetic", 4, 64))  # even lengths are cut to odd
    assert examples("solve_equation", 3, 64) == {(9, 10, d): [d] for d in range(5)}  # "x=d"


def test_short_lengths_give_the_reference_dummies():
    """Lengths below a task's minimum are not raised: the references return fixed dummy examples."""
    assert examples("solve_equation", 1, 8) == {(0,): [0]} and examples("solve_equation", 2, 8) == {(0, 0): [0]}
    assert examples("missing_duplicate_string", 1, 8) == {(1,): [1]}
    # binary_addition.py: a number in [0, 2^n - 2] on n little-endian bits -> the number (0 is "0"), 2, zeros
    assert examples("binary_addition", 1, 16) == {(0,): [0, 2]}
    assert examples("binary_addition", 2, 64) == {(0, 0): [0, 2, 0], (1, 0): [1, 2, 0], (0, 1): [0, 1, 2]}
    # binary_multiplication.py: the same inputs -> n - 1 zeros, 2
    assert examples("binary_multiplication", 1, 16) == {(0,): [2]}
    assert examples("binary_multiplication", 2, 64) == {(0, 0): [0, 2], (1, 0): [0, 2], (0, 1): [0, 2]}
    task = ChomskyTask("binary_multiplication")
    assert task.sample(4, torch.Generator().manual_seed(0), 1).score_mask.sum(1).tolist() == [1] * 4


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
