"""The 15 algorithmic tasks of the Chomsky-hierarchy benchmark (Delétang et al., ICLR 2023), the length
generalisation setting of Ruoss et al. (ACL 2023, randomized positional encodings).

Each task maps an input string of length n to an output string. The model reads the input followed by
as many *empty* tokens as the output has symbols (token ``input_size``), and the outputs are read at the empty
tokens (so an encoder Transformer or any causal core can be used). Training lengths are 1-40, test lengths 41-500;
every batch holds one length. The score is the mean over test lengths of the per-token accuracy (for tasks whose
output ends with a termination symbol, only the positions up to it count; the loss covers every output position).

The generators follow google-deepmind/neural_networks_chomsky_hierarchy ``tasks/{regular,dcf,cs}/*.py`` and the
copy in google-deepmind/randomized_positional_encodings ``tasks/`` (the same logic; the task options are those of
their ``experiments/constants.py``): the same input alphabets (token ids and input sizes, unused units included),
outputs, output lengths and sampling distributions, and, for lengths too short for a task, the same fixed dummy
examples. Only the random streams differ (Python's ``random`` here, JAX / NumPy there).

Tasks (``TASKS``; inputs and outputs are token ids; "bits" are 0/1; the reference file in brackets):

- regular: ``even_pairs`` (class 1 iff the number of 01 and 10 pairs is odd, i.e. first bit != last bit;
  regular/even_pairs.py), ``modular_arithmetic`` (digits 0-4 and + - * as 5 6 7, * first, mod 5; even n are cut to
  n - 1; 9 input units: the blank ``_`` = 8 is never drawn; regular/modular_arithmetic.py), ``parity_check`` (number
  of 1s mod 2), ``cycle_navigation`` (moves 0/1/2 = -1/0/+1 on a cycle of 5 from 0; the final position).
- deterministic context-free: ``stack_manipulation`` (a stack of 1..n-1 bits bottom-to-top, then POP 2 / PUSH 0 3 /
  PUSH 1 4, a POP on an empty stack does nothing; the final stack top-to-bottom, the terminator 2, zeros up to
  n + 1), ``reverse_string``, ``modular_arithmetic_brackets`` (a random bracketed expression of exactly n tokens with
  + - *, mod 5; 11 input units, ``x`` = 10 unused; dcf/modular_arithmetic_brackets.py with ``mult=True``),
  ``solve_equation`` (a bracketed +/- expression of n - 2 tokens with one digit replaced by x, then ``= value``;
  output x; its own alphabet + - ( ) x = as 5-10, no *; the digit is the first one at or after a uniformly drawn
  position, cyclically, as in dcf/solve_equation.py, so digits after long runs of operators are chosen more often).
- context-sensitive: ``duplicate_string`` (ww), ``missing_duplicate_string`` (ww of n // 2 bits with one bit replaced
  by 2, padded with 3 for odd n; output the bit), ``odds_first`` (the bits at the odd 0-based indices s[1::2] first,
  then s[0::2]: what cs/odds_first.py computes, although its docstring describes the opposite order),
  ``binary_addition`` / ``binary_multiplication`` (two little-endian numbers of random widths summing to n - 1
  around the separator 2; the result little-endian without leading zeros, the terminator 2, zeros up to n + 1 / n),
  ``compute_sqrt`` (big-endian n bits -> floor of the square root, ceil(n/2) bits), ``bucket_sort`` (symbols 0-4,
  sorted).

Lengths too short for a task give the reference's dummy examples, not a raised length: ``solve_equation`` with
n < 3 is n zeros -> 0, ``missing_duplicate_string`` with n = 1 is [1] -> 1, ``binary_addition`` with n <= 2 is a
number in [0, 2^n - 2] on n bits -> that number (0 written as one 0) and the terminator, ``binary_multiplication``
with n <= 2 is such a number -> n - 1 zeros and the terminator.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

from ..engine import TaskConfig
from ..errors import ConfigError
from .sequence import register_sequence_task
from .tasks import IGNORE, Batch, LazyBatches, SequenceTask, pad_batch, python_rng

Example = Tuple[List[int], List[int]]  # (input tokens, output classes)

# Token id -> character of the arithmetic tasks (the references' ``alphabet_to_int`` / ``OP_BY_CHARACTER``).
MODULAR = "01234+-*_"  # modular_arithmetic: modulus + 4 units; the blank "_" is never drawn
BRACKETS = "01234+-*()x"  # modular_arithmetic_brackets: modulus + 6 units; "x" unused ("=" would be 11, outside)
EQUATION = "01234+-()x="  # solve_equation: modulus + 6 units, no "*"
POP, PUSH0, PUSH1 = 2, 3, 4


def bits(n: int, rng: random.Random, k: int = 2) -> List[int]:
    return [rng.randrange(k) for _ in range(n)]


def to_binary(value: int, width: int = 0, little_endian: bool = True) -> List[int]:
    """Binary digits of value, zero-filled to width (``f"{value:b}".zfill(width)``: 0 is one digit 0)."""
    digits = [int(c) for c in format(value, "b").zfill(width)]
    return digits[::-1] if little_endian else digits


def encode(text: str, alphabet: str) -> List[int]:
    return [alphabet.index(c) for c in text]


def bracket_expression(n: int, rng: random.Random, times: bool) -> Tuple[str, int]:
    """A random expression of exactly n characters and its value mod 5: d, -d, (d), (-d) for n <= 4, otherwise
    (left op right) with left of 1..n-4 characters, uniform, and op uniform over + - (*)."""
    if n <= 4:
        d = rng.randrange(5)
        return ["{}", "-{}", "({})", "(-{})"][n - 1].format(d), (-d if n % 2 == 0 else d) % 5
    left_n = rng.randint(1, n - 4)
    left, a = bracket_expression(left_n, rng, times)
    right, b = bracket_expression(n - 3 - left_n, rng, times)
    op = "+-*"[rng.randrange(3 if times else 2)]
    value = a + b if op == "+" else a - b if op == "-" else a * b
    return f"({left}{op}{right})", value % 5


def modular_arithmetic_brackets(n: int, rng: random.Random) -> Example:
    text, value = bracket_expression(n, rng, times=True)
    return encode(text, BRACKETS), [value]


def stack_manipulation(n: int, rng: random.Random) -> Example:
    if n == 1:
        b = rng.randrange(2)
        return [b], [b, 2]
    size = rng.randint(1, n - 1)
    stack = bits(size, rng)
    actions = [rng.choice([POP, PUSH0, PUSH1]) for _ in range(n - size)]
    final = list(stack)
    for a in actions:
        if a == POP:
            final = final[:-1]
        else:
            final.append(a - PUSH0)
    out = final[::-1] + [2]
    return stack + actions, out + [0] * (n + 1 - len(out))


def unknown_position(expression: str, start: int) -> int:
    """Where solve_equation puts x: the first digit at or after ``start``, wrapping around (dcf/solve_equation.py)."""
    i = start
    while not expression[i].isdigit():
        i = (i + 1) % len(expression)
    return i


def solve_equation(n: int, rng: random.Random) -> Example:
    if n < 3:  # the reference's dummy example
        return [0] * n, [0]
    expression, value = bracket_expression(n - 2, rng, times=False)  # no *: x would not be unique (x * 0)
    where = unknown_position(expression, rng.randrange(len(expression)))
    equation = f"{expression[:where]}x{expression[where + 1:]}={value}"
    return encode(equation, EQUATION), [int(expression[where])]


def missing_duplicate(n: int, rng: random.Random) -> Example:
    if n == 1:  # the reference's dummy example
        return [1], [1]
    doubled = bits(n // 2, rng) * 2
    where = rng.randrange(len(doubled))
    answer, doubled[where] = doubled[where], 2
    return doubled + [3] * (n % 2), [answer]


def binary_operation(operation: Callable[[int, int], int], extra: int,
                     short: Callable[[int, int], List[int]]) -> Callable[[int, random.Random], Example]:
    """Two little-endian numbers (random widths summing to n - 1) separated by 2 -> result, 2, zeros to n + extra.

    n <= 2 (no room for two numbers and the separator): a number in [0, 2^n - 2] on n bits and the result
    ``short(number, n)`` (cs/binary_addition.py: the number; cs/binary_multiplication.py: n - 1 zeros)."""
    def make(n: int, rng: random.Random) -> Example:
        if n <= 2:
            number = rng.randrange(2**n - 1)
            result = short(number, n)
            return to_binary(number, n), result + [2] + [0] * (n + extra - 1 - len(result))
        width_a = rng.randint(1, n - 2)
        width_b = n - 1 - width_a
        a, b = rng.randint(1, 2**width_a - 1), rng.randint(1, 2**width_b - 1)
        out = to_binary(operation(a, b)) + [2]
        return to_binary(a, width_a) + [2] + to_binary(b, width_b), out + [0] * (n + extra - len(out))
    return make


def compute_sqrt(n: int, rng: random.Random) -> Example:
    x = rng.randint(1, 2**n - 1)
    return to_binary(x, n, little_endian=False), to_binary(math.isqrt(x), (n + 1) // 2, little_endian=False)


def modular_arithmetic(n: int, rng: random.Random) -> Example:
    """Digits alternating with operators (n odd); multiplication binds first."""
    text = "".join(str(rng.randrange(5)) if i % 2 == 0 else rng.choice("+-*") for i in range(n))
    total, sign, term = 0, 1, int(text[0])
    for op, digit in zip(text[1::2], text[2::2]):
        if op == "*":
            term *= int(digit)
        else:
            total, sign, term = total + sign * term, 1 if op == "+" else -1, int(digit)
    return encode(text, MODULAR), [(total + sign * term) % 5]


def _map(fn: Callable[[List[int]], List[int]], k: int = 2) -> Callable[[int, random.Random], Example]:
    def make(n: int, rng: random.Random) -> Example:
        s = bits(n, rng, k)
        return s, fn(s)
    return make


@dataclass(frozen=True)
class Spec:
    """level: regular | dcf | cs; input_size: input units (the empty token is input_size); output_size: classes;
    make(n, rng) -> (input, output); odd: even n become n - 1; terminator: the output class that ends the answer
    (accuracy stops after it, the references' ``accuracy_mask``)."""

    level: str
    input_size: int
    output_size: int
    make: Callable[[int, random.Random], Example]
    odd: bool = False
    terminator: Optional[int] = None


TASKS: Dict[str, Spec] = {
    "even_pairs": Spec("regular", 2, 2, _map(lambda s: [sum(a != b for a, b in zip(s, s[1:])) % 2])),
    "modular_arithmetic": Spec("regular", len(MODULAR), 5, modular_arithmetic, odd=True),
    "parity_check": Spec("regular", 2, 2, _map(lambda s: [sum(s) % 2])),
    "cycle_navigation": Spec("regular", 3, 5, _map(lambda s: [sum(a - 1 for a in s) % 5], k=3)),
    "stack_manipulation": Spec("dcf", 5, 3, stack_manipulation, terminator=2),
    "reverse_string": Spec("dcf", 2, 2, _map(lambda s: s[::-1])),
    "modular_arithmetic_brackets": Spec("dcf", len(BRACKETS), 5, modular_arithmetic_brackets),
    "solve_equation": Spec("dcf", len(EQUATION), 5, solve_equation),
    "duplicate_string": Spec("cs", 2, 2, _map(lambda s: s + s)),
    "missing_duplicate_string": Spec("cs", 4, 2, missing_duplicate),
    "odds_first": Spec("cs", 2, 2, _map(lambda s: s[1::2] + s[0::2])),
    "binary_addition": Spec("cs", 3, 3, binary_operation(lambda a, b: a + b, 1, lambda x, n: to_binary(x)),
                            terminator=2),
    "binary_multiplication": Spec("cs", 3, 3, binary_operation(lambda a, b: a * b, 0, lambda x, n: [0] * (n - 1)),
                                  terminator=2),
    "compute_sqrt": Spec("cs", 2, 2, compute_sqrt),
    "bucket_sort": Spec("cs", 5, 5, _map(sorted, k=5)),
}


class ChomskyTask(SequenceTask):
    """One of ``TASKS`` with train lengths ``train_lengths`` and test lengths ``test_lengths`` (inclusive, every
    ``test_length_step``-th), ``test_batch_size`` sequences per test length."""

    def __init__(self, task: str, train_lengths: Tuple[int, int] = (1, 40), test_lengths: Tuple[int, int] = (41, 500),
                 test_length_step: int = 1, test_batch_size: int = 32, eval_batch_size: int = 32):
        if task not in TASKS:
            raise ConfigError(f"env.task={task!r} is not a Chomsky-hierarchy task; choose one of: {', '.join(TASKS)}")
        if not (1 <= train_lengths[0] <= train_lengths[1]) or not (1 <= test_lengths[0] <= test_lengths[1]):
            raise ConfigError(f"env.train_lengths={list(train_lengths)} / env.test_lengths={list(test_lengths)}: "
                             "need 1 <= first <= last")
        self.name, self.spec = task, TASKS[task]
        self.train_lengths, self.test_lengths = train_lengths, test_lengths
        self.test_length_step, self.test_batch_size = test_length_step, test_batch_size
        self.empty = self.spec.input_size
        self.vocab_size = self.spec.input_size + 1
        self.num_classes = self.spec.output_size
        self.eval_batch_size = eval_batch_size

    def example(self, n: int, rng: random.Random) -> Example:
        """(input, output) of task length n (n - 1 for even n of an odd-length task)."""
        if self.spec.odd and n % 2 == 0:
            n -= 1
        return self.spec.make(n, rng)

    def sample(self, batch_size: int, generator: torch.Generator, length: Optional[int] = None) -> Batch:
        """A batch of one task length (uniform over the train lengths unless given): input, then one empty token
        per output symbol; targets at the empty tokens."""
        rng = python_rng(generator)
        n = length or rng.randint(*self.train_lengths)
        inputs, targets, scored = [], [], []
        for _ in range(batch_size):
            x, y = self.example(n, rng)
            inputs.append(x + [self.empty] * len(y))
            targets.append([IGNORE] * len(x) + y)
            scored.append(y.index(self.spec.terminator) + 1 if self.spec.terminator is not None else len(y))
        return pad_batch(inputs, targets, pad=self.empty, length=n, scored=scored)

    def eval_sets(self, generator: torch.Generator) -> Dict[str, List[Batch]]:
        """valid: one batch per train length; test: one batch per test length (every step-th)."""
        lo, hi = self.train_lengths
        test = range(self.test_lengths[0], self.test_lengths[1] + 1, self.test_length_step)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        return {"valid": LazyBatches(lambda n, g: self.sample(self.eval_batch_size, g, n), range(lo, hi + 1), seed),
                "test": LazyBatches(lambda n, g: self.sample(self.test_batch_size, g, n), test, seed + 1)}


def from_config(env) -> ChomskyTask:
    return ChomskyTask(env.task, tuple(env.train_lengths), tuple(env.test_lengths), env.test_length_step,
                       env.test_batch_size, env.eval_batch_size)


@dataclass
class ChomskyEnvConfig(TaskConfig):
    """``env=chomsky/<task>``: length generalisation; outputs read at appended empty tokens."""

    name: str = "chomsky"  # run name
    family: str = "chomsky"  # registered task (metarl.engine.registry.TASKS)
    task: str = "reverse_string"  # one of the 15 tasks (metarl.supervised.chomsky.TASKS)
    train_lengths: List[int] = field(default_factory=lambda: [1, 40])  # input lengths to train on (inclusive)
    test_lengths: List[int] = field(default_factory=lambda: [41, 500])  # input lengths to test on (inclusive)
    test_length_step: int = 10  # test every k-th length of test_lengths (1: all 460, as in the paper; slow on a CPU)
    test_batch_size: int = 8  # sequences per test length (a length-500 batch holds up to 1500 tokens per sequence)
    batch_size: int = 32  # sequences per update (one length per batch)
    eval_every: int = 500  # updates between in-distribution evaluations (the test lengths only at the end)
    eval_batch_size: int = 16  # sequences per train length in the in-distribution evaluation


register_sequence_task("chomsky", ChomskyEnvConfig, from_config)
