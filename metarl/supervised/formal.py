"""Formal languages in the character-prediction formulation (Gers & Schmidhuber 2001; Bhattamishra, Ahuja &
Goyal 2020), as used by Irie, Csordás & Schmidhuber (EMNLP 2023) to compare fast weight programmers.

A causal model reads a member x_1..x_n of the language; after x_t it outputs, for every symbol c of the
alphabet, whether c may come next (x_1..x_t c is still a prefix of a member) and, as a last output, whether the
string may end there (x_1..x_t is a member). Targets are multi-hot ``[n, |alphabet| + 1]``; a position is right
when all of its outputs are (sigmoid > 0.5), a string when all of its positions are (sequence accuracy).
Models train on lengths 1-50 (Bin0) and are tested on lengths 51-100 (Bin1).

Languages (``LANGUAGES``):

==============  ==========  ===============================================================================
name            alphabet    members
==============  ==========  ===============================================================================
parity          a b         an even number of b (every length); needs the parity of the prefix at each step
aa_star         a           (aa)*: even lengths (the issue's "aa*"; the papers use (aa)*, which needs counting
                            mod 2, while aa* would be trivial)
abab_star       a b         (abab)*: lengths that are multiples of 4 (the papers' (abab)*; ends only after a
                            whole "abab", so it is not (ab)*)
counter2        a b         a^n b^n, n >= 1
counter3        a b c       a^n b^n c^n, n >= 1
shuffle2        ( ) [ ]     interleavings of a Dyck-1 word over ( ) and one over [ ] (Shuffle-2)
dyck1           ( )         balanced brackets (Dyck-1)
reset_dyck1     ( ) 1       ``1`` resets the bracket counter; every segment between resets is a Dyck-1 prefix,
                            the last one a Dyck-1 word (Bhattamishra et al. use one reset; we draw 1-3)
==============  ==========  ===============================================================================

Strings of a given length are drawn uniformly where that is simple (Dyck words through the cycle lemma, every
parity string); the bins hold every valid length with equal probability.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Tuple

import torch

from ..engine import TaskConfig
from .sequence import register_sequence_task
from .tasks import Batch, SequenceTask, pad_batch, python_rng

END = "$"  # the last output: the string may end here


# ---------------------------------------------------------------- next-symbol sets (the targets)
def parity_next(s: str) -> List[str]:
    """For each prefix of s: the symbols that may follow (``END`` when the prefix is a member)."""
    out, odd = [], False
    for c in s:
        odd ^= c == "b"
        out.append("ab" if odd else "ab" + END)
    return out


def star_next(unit: str) -> Callable[[str], List[str]]:
    """(unit)*: after t symbols the next one is unit[t mod |unit|]; a member when t is a multiple of |unit|."""
    def follow(s: str) -> List[str]:
        phases = [(t + 1) % len(unit) for t in range(len(s))]
        return [unit[p] + (END if p == 0 else "") for p in phases]
    return follow


def counter_next(k: int) -> Callable[[str], List[str]]:
    """a^n b^n (k = 2), a^n b^n c^n (k = 3): while reading a's, a or b; then the letter of the current block."""
    def follow(s: str) -> List[str]:
        n = s.count("a")
        return ["ab" if p <= n else END if p == k * n else "abc"[p // n] for p in range(1, len(s) + 1)]
    return follow


def bracket_next(pairs: str, reset: str = "") -> Callable[[str], List[str]]:
    """Dyck/shuffle languages: openers always, a closer while its counter is positive, the reset symbol (if
    any) always, the end when every counter is zero. pairs: opener/closer characters, e.g. "()[]"."""
    openers, closers = pairs[0::2], pairs[1::2]

    def follow(s: str) -> List[str]:
        depth, out = [0] * len(openers), []
        for c in s:
            if c == reset:
                depth = [0] * len(openers)
            elif c in openers:
                depth[openers.index(c)] += 1
            else:
                depth[closers.index(c)] -= 1
            allowed = openers + "".join(cl for cl, d in zip(closers, depth) if d > 0) + reset
            out.append(allowed + ("" if any(depth) else END))
        return out
    return follow


# ---------------------------------------------------------------- string generators
def dyck_word(n: int, rng: random.Random, pair: str = "()") -> str:
    """A uniformly random Dyck word of (even) length n: shuffle n/2 + 1 openers and n/2 closers, rotate to start
    after the last minimum of the running sum (cycle lemma: the only rotation that stays positive), drop the
    first opener."""
    m = n // 2
    steps = [1] * (m + 1) + [-1] * m
    rng.shuffle(steps)
    running, low, start = 0, 0, 0
    for i, step in enumerate(steps):
        running += step
        if running <= low:
            low, start = running, i + 1
    rotated = steps[start:] + steps[:start]
    return "".join(pair[0] if step > 0 else pair[1] for step in rotated[1:])


def dyck_prefix(n: int, rng: random.Random) -> str:
    """A random walk of n brackets that never closes below zero (a prefix of some Dyck word)."""
    depth, out = 0, []
    for _ in range(n):
        opening = depth == 0 or rng.random() < 0.5
        depth += 1 if opening else -1
        out.append("(" if opening else ")")
    return "".join(out)


def shuffle_word(n: int, rng: random.Random) -> str:
    """Interleave a Dyck word over ( ) and one over [ ] (random semilengths, random interleaving)."""
    m = rng.randint(0, n // 2)
    first, second = iter(dyck_word(2 * m, rng, "()")), iter(dyck_word(n - 2 * m, rng, "[]"))
    slots = set(rng.sample(range(n), 2 * m))
    return "".join(next(first) if i in slots else next(second) for i in range(n))


def reset_dyck_word(n: int, rng: random.Random) -> str:
    """1-3 resets; the segments before them are Dyck prefixes, the last segment a Dyck word."""
    resets = rng.randint(1, min(3, n))
    last = 2 * rng.randint(0, (n - resets) // 2)
    cuts = sorted(rng.randint(0, n - resets - last) for _ in range(resets - 1))
    sizes = [b - a for a, b in zip([0] + cuts, cuts + [n - resets - last])]
    return "".join(dyck_prefix(size, rng) + "1" for size in sizes) + dyck_word(last, rng)


def parity_word(n: int, rng: random.Random) -> str:
    """Random a/b string whose last symbol makes the number of b even."""
    s = [rng.choice("ab") for _ in range(n - 1)]
    return "".join(s) + ("b" if s.count("b") % 2 else "a")


@dataclass(frozen=True)
class Language:
    """alphabet; valid(n): whether members of length n exist; sample(n, rng): a member of length n;
    next_sets(s): for each prefix of member s, the allowed next symbols (+ ``END``)."""

    alphabet: str
    valid: Callable[[int], bool]
    sample: Callable[[int, random.Random], str]
    next_sets: Callable[[str], List[str]]


def _multiple_of(k: int) -> Callable[[int], bool]:
    return lambda n: n >= k and n % k == 0


LANGUAGES: Dict[str, Language] = {
    "parity": Language("ab", lambda n: n >= 1, parity_word, parity_next),
    "aa_star": Language("a", _multiple_of(2), lambda n, rng: "a" * n, star_next("aa")),
    "abab_star": Language("ab", _multiple_of(4), lambda n, rng: "ab" * (n // 2), star_next("abab")),
    "counter2": Language("ab", _multiple_of(2), lambda n, rng: "a" * (n // 2) + "b" * (n // 2), counter_next(2)),
    "counter3": Language("abc", _multiple_of(3), lambda n, rng: "".join(c * (n // 3) for c in "abc"),
                         counter_next(3)),
    "shuffle2": Language("()[]", _multiple_of(2), shuffle_word, bracket_next("()[]")),
    "dyck1": Language("()", _multiple_of(2), dyck_word, bracket_next("()")),
    "reset_dyck1": Language("()1", lambda n: n >= 1, reset_dyck_word, bracket_next("()", reset="1")),
}


class FormalLanguageTask(SequenceTask):
    """Character prediction on one of ``LANGUAGES``: train on ``train_lengths`` (Bin0), test on
    ``test_lengths`` (Bin1), both inclusive ranges of string lengths.

    Tokens: the alphabet's symbols in order, then the padding token. Outputs: one per symbol, then ``END``.
    """

    multilabel = True
    requires_causal = True

    def __init__(self, language: str, train_lengths: Tuple[int, int] = (1, 50), test_lengths: Tuple[int, int] = (51, 100),
                 eval_batch_size: int = 32, eval_batches: int = 8):
        if language not in LANGUAGES:
            raise ValueError(f"env.language={language!r} is not a formal language; choose one of: {', '.join(LANGUAGES)}")
        self.name, self.language = language, LANGUAGES[language]
        self.bins = {"bin0": self._lengths(train_lengths, "train_lengths"),
                     "bin1": self._lengths(test_lengths, "test_lengths")}
        self.symbols = self.language.alphabet + END
        self.vocab_size = len(self.language.alphabet) + 1  # + padding
        self.num_classes = len(self.symbols)
        self.eval_batch_size, self.eval_batches = eval_batch_size, eval_batches

    def _lengths(self, bounds, key: str) -> List[int]:
        lengths = [n for n in range(bounds[0], bounds[1] + 1) if self.language.valid(n)]
        if not lengths:
            raise ValueError(f"env.{key}={list(bounds)}: no string of {self.name} has a length in this range")
        return lengths

    def encode(self, strings: List[str]) -> Batch:
        """Member strings -> tokens and multi-hot targets (padded)."""
        inputs = [[self.symbols.index(c) for c in s] for s in strings]
        targets = [[[float(c in allowed) for c in self.symbols] for allowed in self.language.next_sets(s)]
                   for s in strings]
        return pad_batch(inputs, targets, pad=len(self.language.alphabet), multilabel_size=self.num_classes)

    def strings(self, batch_size: int, generator: torch.Generator, bin: str = "bin0") -> List[str]:
        rng = python_rng(generator)
        return [self.language.sample(rng.choice(self.bins[bin]), rng) for _ in range(batch_size)]

    def sample(self, batch_size: int, generator: torch.Generator, bin: str = "bin0") -> Batch:
        return self.encode(self.strings(batch_size, generator, bin))

    def eval_sets(self, generator: torch.Generator) -> Dict[str, List[Batch]]:
        return {name: [self.sample(self.eval_batch_size, generator, name) for _ in range(self.eval_batches)]
                for name in self.bins}


def from_config(env) -> FormalLanguageTask:
    return FormalLanguageTask(env.language, tuple(env.train_lengths), tuple(env.test_lengths), env.batch_size,
                              env.eval_batches)


@dataclass
class FormalEnvConfig(TaskConfig):
    """``env=formal/<language>``: character prediction on a formal language; train on Bin0, test on Bin1."""

    name: str = "formal"  # run name
    family: str = "formal"  # registered task (metarl.engine.registry.TASKS)
    language: str = "parity"  # parity | aa_star | abab_star | counter2 | counter3 | shuffle2 | dyck1 | reset_dyck1
    train_lengths: List[int] = field(default_factory=lambda: [1, 50])  # Bin0: string lengths to train on (inclusive)
    test_lengths: List[int] = field(default_factory=lambda: [51, 100])  # Bin1: string lengths to test on (inclusive)
    batch_size: int = 32  # strings per update (and per evaluation batch)
    eval_every: int = 500  # updates between Bin0 evaluations (Bin1 is tested once, at the end)
    eval_batches: int = 8  # batches per bin


register_sequence_task("formal", FormalEnvConfig, from_config)
