"""CTL++ (Csordás, Irie & Schmidhuber, EMNLP 2022): compositions of known functions in never-seen patterns.

``num_functions`` (32) random bijections on ``num_symbols`` (8) symbols are split into groups ``a`` and ``b`` (and
a shared group ``o`` of ``overlap`` functions in variant S). A sample applies a chain of 2-6 functions to a symbol
x, written right to left, ``f_L ... f_2 f_1 x``, then a query token; the model outputs f_L(...f_1(x)) at the query
(chance: 1 / num_symbols). Which group may follow which defines the splits (f_{i+1} follows f_i):

=======  ========================================================  =================================================
variant  train (and the IID test split, held out from training)     OOD test split
=======  ========================================================  =================================================
r        within a group: a -> a, b -> b                              across groups at every step: a -> b, b -> a
a        across groups at every step (the reverse of r)              within a group
s        a -> a, b -> b, a -> o, b -> o; after o, back to the group  a -> o -> b or b -> o -> a at least once
         that came before it (chains start in a or b)                (alternating between {a, b} and o)
=======  ========================================================  =================================================

The IID split is a fixed set of ``test_size`` distinct training-rule samples that training never draws; the OOD
split is ``test_size`` distinct samples of the OOD rule, none of which follows the training rule.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..engine import TaskConfig
from .sequence import register_sequence_task
from .tasks import IGNORE, Batch, SequenceTask, pad_batch, python_rng

VARIANTS = ("r", "a", "s")


def follows(variant: str, split: str, groups: Sequence[str]) -> bool:
    """Whether a chain whose functions (in application order) are from ``groups`` obeys the rule of ``split``
    (train | ood) of ``variant``."""
    pairs = list(zip(groups, groups[1:]))
    if variant in ("r", "a"):
        same = [x == y for x, y in pairs]
        within = variant == "r" if split == "train" else variant == "a"
        return all(same) if within else not any(same)
    if groups[0] == "o":
        return False
    if split == "train":
        ok_pairs = all(y in (x, "o") for x, y in pairs if x != "o")
        returns = all(groups[i + 1] == groups[i - 1] for i in range(1, len(groups) - 1) if groups[i] == "o")
        return ok_pairs and returns
    alternates = all((x == "o") != (y == "o") for x, y in pairs)
    crosses = any(groups[i] == "o" and groups[i - 1] != groups[i + 1] for i in range(1, len(groups) - 1))
    return alternates and crosses


class CTLPPTask(SequenceTask):
    """Variant ``variant`` (r | a | s) of CTL++. Tokens: functions 0..F-1, symbols F..F+S-1, the query token,
    padding. Classes: the S symbols. ``data_seed`` fixes the functions, groups and test splits."""

    def __init__(self, variant: str = "r", num_symbols: int = 8, num_functions: int = 32,
                 chain_lengths: Tuple[int, int] = (2, 6), overlap: int = 8, test_size: int = 1000, data_seed: int = 0,
                 eval_batch_size: int = 100):
        if variant not in VARIANTS:
            raise ValueError(f"env.variant={variant!r} is not a CTL++ variant; choose one of: {', '.join(VARIANTS)}")
        if not 2 <= chain_lengths[0] <= chain_lengths[1]:
            raise ValueError(f"env.chain_lengths={list(chain_lengths)}: need 2 <= shortest <= longest")
        shared = overlap if variant == "s" else 0
        if variant == "s" and not 1 <= overlap <= num_functions - 2:
            raise ValueError(f"env.overlap={overlap}: the shared group needs 1..num_functions - 2 functions")
        if chain_lengths[1] < 3 and variant == "s":
            raise ValueError("env.chain_lengths: variant s needs chains of 3 or more for its OOD split")
        rng = random.Random(data_seed)
        permutations = set()
        while len(permutations) < num_functions:
            permutations.add(tuple(rng.sample(range(num_symbols), num_symbols)))
        self.functions: List[Tuple[int, ...]] = sorted(permutations)
        rng.shuffle(self.functions)
        half = (num_functions - shared) // 2
        self.group = ["o"] * shared + ["a"] * half + ["b"] * (num_functions - shared - half)
        self.members = {g: [f for f, h in enumerate(self.group) if h == g] for g in set(self.group)}
        self.variant, self.chain_lengths = variant, chain_lengths
        self.num_symbols, self.num_functions = num_symbols, num_functions
        self.query, self.pad = num_functions + num_symbols, num_functions + num_symbols + 1
        self.vocab_size, self.num_classes = num_functions + num_symbols + 2, num_symbols
        self.eval_batch_size = eval_batch_size
        self.iid = self._distinct("train", test_size, rng)
        self.ood = self._distinct("ood", test_size, rng)
        self.held_out = set(self.iid)

    def _next_groups(self, split: str, groups: List[str]) -> List[str]:
        """The groups the next function may come from (application order)."""
        start = ["a", "b"]
        if not groups:
            return start
        last = groups[-1]
        if self.variant in ("r", "a"):
            same = (self.variant == "r") == (split == "train")
            return [last] if same else [g for g in start if g != last]
        if split == "train":
            return [groups[-2]] if last == "o" else [last, "o"]
        return start if last == "o" else ["o"]

    def chain(self, split: str, rng: random.Random, length: Optional[int] = None) -> Tuple[int, ...]:
        """A sample of ``split``'s rule: tokens f_L ... f_1 x (no query); uniform over allowed functions at each step."""
        while True:
            n = length or rng.randint(*self.chain_lengths)
            groups, functions = [], []
            for _ in range(n):
                choices = [f for g in self._next_groups(split, groups) for f in self.members[g]]
                functions.append(rng.choice(choices))
                groups.append(self.group[functions[-1]])
            if follows(self.variant, split, groups):  # S-OOD: redraw chains without a cross-group step
                return tuple(reversed(functions)) + (self.num_functions + rng.randrange(self.num_symbols),)

    def answer(self, tokens: Sequence[int]) -> int:
        """The symbol f_L(...f_1(x)) for tokens f_L ... f_1 x."""
        symbol = tokens[-1] - self.num_functions
        for f in reversed(tokens[:-1]):
            symbol = self.functions[f][symbol]
        return symbol

    def _distinct(self, split: str, count: int, rng: random.Random) -> List[Tuple[int, ...]]:
        samples: Dict[Tuple[int, ...], None] = {}
        low = max(self.chain_lengths[0], 3) if (self.variant, split) == ("s", "ood") else self.chain_lengths[0]
        lengths = range(low, self.chain_lengths[1] + 1)
        for attempt in range(100 * count):
            samples[self.chain(split, rng, lengths[attempt % len(lengths)])] = None
            if len(samples) == count:
                return list(samples)
        raise ValueError(f"env.test_size={count}: found only {len(samples)} distinct {split} chains; lower test_size "
                         "or allow longer chains")

    def encode(self, chains: Sequence[Tuple[int, ...]]) -> Batch:
        inputs = [list(c) + [self.query] for c in chains]
        targets = [[IGNORE] * len(c) + [self.answer(c)] for c in chains]
        return pad_batch(inputs, targets, pad=self.pad)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """Training batch: training-rule chains, never one of the IID test samples."""
        rng, chains = python_rng(generator), []
        while len(chains) < batch_size:
            c = self.chain("train", rng)
            if c not in self.held_out:
                chains.append(c)
        return self.encode(chains)

    def eval_sets(self, generator: torch.Generator) -> Dict[str, List[Batch]]:
        size = self.eval_batch_size
        return {name: [self.encode(split[i:i + size]) for i in range(0, len(split), size)]
                for name, split in (("iid", self.iid), ("ood", self.ood))}


def from_config(env) -> CTLPPTask:
    return CTLPPTask(env.variant, env.num_symbols, env.num_functions, tuple(env.chain_lengths), env.overlap,
                     env.test_size, env.data_seed, env.batch_size)


@dataclass
class CTLPPEnvConfig(TaskConfig):
    """``env=ctlpp/<variant>``: chains of bijections, IID and OOD (never-seen group pattern) splits."""

    name: str = "ctlpp"  # run name
    family: str = "ctlpp"  # registered task (metarl.engine.registry.TASKS)
    variant: str = "r"  # r (train within groups) | a (train across groups) | s (shared group o)
    num_symbols: int = 8  # symbols the functions act on (chance accuracy 1/num_symbols)
    num_functions: int = 32  # random bijections
    chain_lengths: List[int] = field(default_factory=lambda: [2, 6])  # functions per chain (inclusive)
    overlap: int = 8  # variant s: functions in the shared group o
    test_size: int = 1000  # samples in each of the IID and OOD test splits
    data_seed: int = 0  # seed of the functions, groups and test splits
    batch_size: int = 64  # chains per update (and per evaluation batch)
    eval_every: int = 500  # updates between IID evaluations (OOD is tested once, at the end)


register_sequence_task("ctlpp", CTLPPEnvConfig, from_config)
