"""Formal languages: targets checked against membership functions written independently of the generators,
length bins, and a short training run that beats chance."""
from __future__ import annotations

import itertools
import re

import pytest
import torch

from metarl.supervised.formal import END, LANGUAGES, FormalLanguageTask
from tests.supervised.helpers import train


def balanced(s: str, pair: str = "()") -> bool:
    """Dyck membership by deleting innermost pairs."""
    s = "".join(c for c in s if c in pair)
    while pair in s:
        s = s.replace(pair, "")
    return s == ""


def dyck_prefix(s: str) -> bool:
    """A prefix of a Dyck word: after deleting innermost pairs only openers remain."""
    while "()" in s:
        s = s.replace("()", "")
    return set(s) <= {"("}


MEMBER = {
    "parity": lambda s: re.fullmatch(r"a*(ba*ba*)*", s) is not None,
    "aa_star": lambda s: re.fullmatch(r"(aa)*", s) is not None,
    "abab_star": lambda s: re.fullmatch(r"(abab)*", s) is not None,
    "counter2": lambda s: len(s) >= 2 and s == "a" * (len(s) // 2) + "b" * (len(s) // 2),
    "counter3": lambda s: len(s) >= 3 and s == "".join(c * (len(s) // 3) for c in "abc"),
    "shuffle2": lambda s: balanced(s, "()") and balanced(s, "[]"),
    "dyck1": balanced,
    "reset_dyck1": lambda s: all(map(dyck_prefix, s.split("1"))) and balanced(s.split("1")[-1]),
}
# brute-force enumeration bound per alphabet size, and the longest completion a prefix of length m may need
ENUMERATE = {1: 14, 2: 14, 3: 10, 4: 8}
COMPLETION = {"counter3": lambda m: 2 * m, "parity": lambda m: 1, "aa_star": lambda m: 1,
              "abab_star": lambda m: 3}


def member_prefixes(name: str) -> set:
    """Every non-empty prefix of every member of length <= the enumeration bound."""
    alphabet = LANGUAGES[name].alphabet
    prefixes = set()
    for n in range(1, ENUMERATE[len(alphabet)] + 1):
        for letters in itertools.product(alphabet, repeat=n):
            s = "".join(letters)
            if MEMBER[name](s):
                prefixes.update(s[:i] for i in range(1, n + 1))
    return prefixes


@pytest.mark.parametrize("name", sorted(LANGUAGES))
def test_targets_match_brute_force_membership(name):
    task = FormalLanguageTask(name, train_lengths=(1, 8), test_lengths=(51, 100))
    symbols = task.symbols
    bound = ENUMERATE[len(LANGUAGES[name].alphabet)]
    completion = COMPLETION.get(name, lambda m: m)
    prefixes = member_prefixes(name)
    generator = torch.Generator().manual_seed(0)
    checked = 0
    for bin in ("bin0", "bin1"):
        strings = task.strings(40, generator, bin)
        batch = task.encode(strings)
        for b, s in enumerate(strings):
            assert MEMBER[name](s), f"{name}: generated a non-member {s!r}"
            assert batch.mask[b].sum() == len(s) and batch.tokens[b, : len(s)].tolist() == [symbols.index(c) for c in s]
            for t in range(len(s)):
                prefix, target = s[: t + 1], batch.targets[b, t]
                assert bool(target[symbols.index(END)]) == MEMBER[name](prefix), (name, prefix)
                if t + 1 < len(s):  # the symbol that does come next is allowed
                    assert target[symbols.index(s[t + 1])] == 1
                if (t + 2) + completion(t + 2) <= bound:  # every continuation fits in the enumeration
                    for c in LANGUAGES[name].alphabet:
                        assert bool(target[symbols.index(c)]) == (prefix + c in prefixes), (name, prefix, c)
                        checked += 1
    assert checked > 0, name


@pytest.mark.parametrize("name", sorted(LANGUAGES))
def test_length_bins(name):
    task = FormalLanguageTask(name)
    generator = torch.Generator().manual_seed(1)
    for bin, (lo, hi) in (("bin0", (1, 50)), ("bin1", (51, 100))):
        lengths = [len(s) for s in task.strings(200, generator, bin)]
        assert lo <= min(lengths) and max(lengths) <= hi, (name, bin, min(lengths), max(lengths))
        assert max(lengths) - min(lengths) >= 20, "the bin is covered, not one length"
        assert all(LANGUAGES[name].valid(n) for n in lengths)


def test_bad_language_and_empty_bin_are_named():
    with pytest.raises(ValueError, match="env.language='dyck2'.*dyck1"):
        FormalLanguageTask("dyck2")
    with pytest.raises(ValueError, match="env.train_lengths"):
        FormalLanguageTask("counter3", train_lengths=(1, 2))


def test_short_run_learns_dyck1():
    """LSTM, 200 updates. No constant output gets a Dyck string right (position 0 may not end, the last must)."""
    metrics = train("formal/dyck1", "agent=lstm", "agent.d_model=32", "optim.steps=200", "env.eval_every=100",
                    "optim.lr=3e-3")
    assert metrics["test/bin0/sequence_accuracy"] > 0.8, metrics
    assert 0.0 <= metrics["test/bin1/sequence_accuracy"] <= 1.0
