"""CTL++ (Csordás, Irie & Schmidhuber, EMNLP 2022): compositions of known functions in never-seen patterns.

``num_functions`` (32) random bijections on ``num_symbols`` (8) symbols are split into groups. A sample applies a
chain of functions f_1, ..., f_L (L in ``chain_lengths``, 2-6) to a symbol x, written right to left,
``f_L ... f_2 f_1 x``, then a query token; the model outputs f_L(...f_1(x)) at the query (chance: 1/num_symbols).
A *pattern* says which group may start a chain, which may follow which (f_{i+1} after f_i) and which may end it;
each variant trains on one pattern and tests on others:

- ``r``: groups a, b. Train within a group (a -> a, b -> b); test ``ood``: alternating (a -> b -> a ...).
- ``a``: groups a, b. Train alternating (the reverse of r); test ``ood``: within a group.
- ``s``: groups a1, b1 (first stage), a2, b2 (second stage) and o (shared, ``overlap`` functions). Train on chains
  of stages a1 a2 | b1 b2 | a1 o | b1 o, where a function of o follows a1 (b1) only on the input symbols allowed
  for that pair: ``symbol_overlap`` of them shared by a1 and b1, the others split between the two. Test splits:
  ``test_group_alternate`` (stages a1 b2 | b1 a2), ``test_unseen_pairs`` (every pair never trained on: a1 b2,
  b1 a2, and a1 o / b1 o on the symbols held out for that pair), ``test_cross_unseen_symbols`` (only those o
  pairs) and ``test_all`` (any group after any).

In every variant the IID split ``iid`` is held out of the training set; results are ``test/<split>/...``.

Reference: RobertCsordas/ctlpp. ``dataset/function_interface_test_base.py`` (groups ``generate_groups``, restricted
symbol overlaps ``generate_restricted_overlaps`` / ``invert_restricted_overlaps``, the rollout plans and per-step
sampling ``sample_one``, split sizes ``sample``), ``function_interface_test_parallel_branch.py`` with ``overlap=0``
(r; its OOD split is ``test_group_alternate``), ``function_interface_test_alternate.py`` (a; ``test_self_loop``),
``function_interface_test_parallel_branch_2stage.py`` (s), ``tasks/simple/fit_parallel_branch_*_classifier.py``
(the training set is ``train`` plus ``pairs`` when ``fit.train_on_pairs``) and the sweeps
``fit_parallel_branches_ababab_many_*.yaml`` (r, a) and ``fit_parallel_branches_2stage_overlap_*.yaml`` (s:
``fit.overlap`` in 4, 8, 12, 16 and ``fit.symbol_overlap`` in 2-6, N = 300000, depth 2-6, reversed, train on pairs;
the paper's variant-S figure reads ``test_group_alternate``). As there:

- groups are contiguous blocks of the (randomly drawn) functions: o first, then a1, a2, b1, b2 (or a, b) of
  ceil(rest / 4) (ceil(rest / 2)) functions each;
- a chain of length L is drawn by choosing x uniformly, then at each step one function uniformly among those the
  pattern allows after the previous one (a function of o only if the current symbol is allowed for that pair),
  redrawing the whole chain if it may not end there;
- a split of n distinct chains is spread evenly over its lengths, each length capped at ``fill`` times the number
  of chains of that length (``fill`` 0.5 for the training set, 1 for the test splits; ``n=None``: all of them);
- the training set is ``train_size`` + ``test_size`` distinct training chains, of which a random ``test_size`` are
  the ``iid`` split; with ``train_on_pairs``, every training chain of length 2 (``pairs``) is added to it.

Where metarl differs: chains per length are counted exactly (the reference's ``length_count`` over-counts after a
restricted edge, which only moves a few chains between the capped lengths); ``pairs`` chains that are in ``iid``
are not trained on (the reference trains on the about 2 of them); chains end with a query token and the answer is
read there (the reference classifies the whole sequence); training batches are drawn uniformly from the training
set (the reference batches by length); test splits of a pattern that has no chains (``test_cross_unseen_symbols``
when every symbol is shared) are left out.
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

import torch

from ..engine import TaskConfig
from ..errors import ConfigError
from .sequence import register_sequence_task
from .tasks import IGNORE, Batch, SequenceTask, pad_batch, python_rng

VARIANTS = ("r", "a", "s")
IN, OUT = "IN", "OUT"
TRAIN_FILL = 0.5  # the reference's fill_factor of the training set (test splits: 1)
Chain = Tuple[int, ...]  # tokens f_L ... f_1 x (function ids, then the symbol token num_functions + x)
Restricted = Tuple[str, FrozenSet[int], int]  # (previous group, symbols allowed as the function's input, function)


@dataclass(frozen=True)
class Pattern:
    """Which group may follow which: ``edges[node]`` is the set of groups (or ``OUT``: the chain may end) allowed
    after a function of group ``node`` (``IN``: at the start); ``restricted``: single functions allowed after a
    group only on some input symbols (the reference's ``restricted_edges``)."""

    edges: Dict[str, FrozenSet[str]]
    restricted: Tuple[Restricted, ...] = ()


def pattern(pairs: Sequence[Tuple[Sequence[str], Sequence[str]]], restricted: Sequence[Restricted] = ()) -> Pattern:
    """A Pattern from (sources, targets) pairs: every source may be followed by every target (the reference's
    edges with sets on both sides)."""
    edges: Dict[str, Set[str]] = {}
    for sources, targets in pairs:
        for s in sources:
            edges.setdefault(s, set()).update(targets)
    return Pattern({k: frozenset(v) for k, v in edges.items()}, tuple(restricted))


def equal_split(items: List, slices: int, rng: Optional[random.Random] = None) -> List[List]:
    """The reference's ``equal_split``: blocks of ceil(len / slices); with fewer items than slices (and an rng), each
    item alone in a random slice, the others empty."""
    if rng is not None and len(items) < slices:
        out: List[List] = [[] for _ in range(slices)]
        for item, where in zip(items, rng.sample(range(slices), len(items))):
            out[where] = [item]
        return out
    block = -(-len(items) // slices)
    return [items[i:i + block] for i in range(0, len(items), block)]


class CTLPPTask(SequenceTask):
    """Variant ``variant`` (r | a | s) of CTL++. Tokens: functions 0..F-1, symbols F..F+S-1, the query token,
    padding. Classes: the S symbols. ``data_seed`` fixes the functions, groups, symbol overlaps and all splits."""

    def __init__(self, variant: str = "r", num_symbols: int = 8, num_functions: int = 32,
                 chain_lengths: Tuple[int, int] = (2, 6), overlap: int = 8, symbol_overlap: int = 4,
                 imbalance: int = 0, train_size: int = 300_000, train_on_pairs: bool = True, test_size: int = 1000,
                 data_seed: int = 0, eval_batch_size: int = 100):
        if variant not in VARIANTS:
            raise ConfigError(f"env.variant={variant!r} is not a CTL++ variant; choose one of: {', '.join(VARIANTS)}")
        if not 2 <= chain_lengths[0] <= chain_lengths[1]:
            raise ConfigError(f"env.chain_lengths={list(chain_lengths)}: need 2 <= shortest <= longest")
        if num_symbols < 2 or num_functions < 2:
            raise ConfigError(f"env.num_symbols={num_symbols} / env.num_functions={num_functions}: need 2 or more")
        if num_functions > math.factorial(num_symbols):
            raise ConfigError(f"env.num_functions={num_functions}: only {math.factorial(num_symbols)} distinct bijections "
                              f"exist on env.num_symbols={num_symbols} symbols; lower num_functions or raise num_symbols")
        symbol_overlap = symbol_overlap or num_symbols  # 0: every symbol shared (the reference's None)
        if variant == "s":
            if not 0 <= overlap <= num_functions - 4:
                raise ConfigError(f"env.overlap={overlap}: the shared group o needs 0..num_functions - 4 functions "
                                  "(a1, a2, b1, b2 need one each)")
            if not 1 <= symbol_overlap <= num_symbols:
                raise ConfigError(f"env.symbol_overlap={symbol_overlap}: need 0 (all) or 1..num_symbols")
            if not 0 <= imbalance <= num_symbols - symbol_overlap:
                raise ConfigError(f"env.imbalance={imbalance}: need 0..num_symbols - symbol_overlap")
        if train_size < 1 or test_size < 1:
            raise ConfigError(f"env.train_size={train_size} / env.test_size={test_size}: need 1 or more")
        self.variant, self.chain_lengths = variant, tuple(chain_lengths)
        self.num_symbols, self.num_functions = num_symbols, num_functions
        self.overlap, self.symbol_overlap, self.imbalance = overlap, symbol_overlap, imbalance
        self.query, self.pad = num_functions + num_symbols, num_functions + num_symbols + 1
        self.vocab_size, self.num_classes = num_functions + num_symbols + 2, num_symbols
        self.eval_batch_size = eval_batch_size
        self._options: Dict[Tuple[str, str, int], List[Tuple[int, str]]] = {}

        rng = random.Random(data_seed)
        permutations: Set[Tuple[int, ...]] = set()
        while len(permutations) < num_functions:
            permutations.add(tuple(rng.sample(range(num_symbols), num_symbols)))
        self.functions: List[Tuple[int, ...]] = sorted(permutations)
        rng.shuffle(self.functions)
        if variant == "s":
            names, sizes = ["a1", "a2", "b1", "b2"], {"o": overlap}
        else:
            names, sizes = ["a", "b"], {}
        self.groups: Dict[str, List[int]] = {}
        first = 0
        for name, size in sizes.items():
            self.groups[name], first = list(range(first, first + size)), first + size
        blocks = equal_split(list(range(first, num_functions)), len(names))
        if len(blocks) < len(names):
            raise ConfigError(f"env.num_functions={num_functions}, env.overlap={overlap}: the {num_functions - first} "
                              f"functions outside o leave group {names[-1]} empty; change either")
        self.groups.update(zip(names, blocks))
        self.group = {f: g for g, fs in self.groups.items() for f in fs}
        self.restricted = self._restricted_overlaps(["a1", "b1"], "o", rng) if variant == "s" else []
        self.patterns = self._patterns()

        lo, hi = self.chain_lengths
        test_lengths = (max(2, lo), hi)
        drawn = self.sample_split("train", train_size + test_size, (lo, hi), rng, TRAIN_FILL,
                                  f"env.train_size={train_size} + env.test_size={test_size} (iid)")
        rng.shuffle(drawn)
        self.iid, self.train = drawn[:test_size], drawn[test_size:]
        if train_on_pairs and lo <= 2:
            held_out = set(self.iid)
            self.pairs = [c for c in self.sample_split("train", None, (2, 2), rng) if c not in held_out]
            self.train = self.train + self.pairs
        self.tests: Dict[str, List[Chain]] = {}
        for name, lengths, size in self._test_splits(test_lengths, test_size):
            chains = self.sample_split(name, size, lengths, rng, 1.0, f"env.test_size={test_size}")
            if chains:
                self.tests[name] = chains

    # --- groups, overlaps, patterns --------------------------------------------------------------------------

    def _restricted_overlaps(self, sources: List[str], target: str, rng: random.Random) -> List[Restricted]:
        """generate_restricted_overlaps: the k-th function of ``target`` may follow each source group on
        ``symbol_overlap`` shared symbols (the next ones of a running order of all symbols, reshuffled once every
        symbol was used) plus its own share of the other symbols (split evenly, the first ``imbalance`` of them to
        the first source)."""
        S, shared = self.num_symbols, self.symbol_overlap
        remap_every = -(-S // shared)
        order = list(range(S))
        out: List[Restricted] = []
        for k, f in enumerate(sorted(self.groups[target])):
            common = {order[i % S] for i in range(k * shared, (k + 1) * shared)}
            others = [s for s in range(S) if s not in common]
            own = equal_split(others[self.imbalance:], len(sources), rng)
            own[0] = own[0] + others[:self.imbalance]
            if k % remap_every == remap_every - 1:
                order = rng.sample(range(S), S)
            out += [(source, frozenset(common | set(mine)), f) for source, mine in zip(sources, own)]
        return out

    def inverted(self) -> List[Restricted]:
        """invert_restricted_overlaps: the same pairs on the symbols they were not allowed on."""
        every = frozenset(range(self.num_symbols))
        return [(source, every - allowed, f) for source, allowed, f in self.restricted]

    def _patterns(self) -> Dict[str, Pattern]:
        if self.variant == "r":
            return {"train": pattern([([IN], "ab"), (["a"], ["a", OUT]), (["b"], ["b", OUT])]),
                    "ood": pattern([([IN], "ab"), (["a"], ["b", OUT]), (["b"], ["a", OUT])])}
        if self.variant == "a":
            return {"train": pattern([([IN], "ab"), (["a"], ["b", OUT]), (["b"], ["a", OUT])]),
                    "ood": pattern([([IN], "ab"), (["a"], ["a", OUT]), (["b"], ["b", OUT])])}
        first, every = ["a1", "b1"], ["a1", "b1", "a2", "b2", "o"]
        return {
            "train": pattern([([IN], first), (["a1"], ["a2"]), (["b1"], ["b2"]), (["a2", "b2", "o"], first + [OUT])],
                             self.restricted),
            "test_group_alternate": pattern([([IN], first), (["a1"], ["b2"]), (["b1"], ["a2"]),
                                             (["a2", "b2"], first + [OUT])]),
            "test_unseen_pairs": pattern([([IN], first), (["a1"], ["b2"]), (["b1"], ["a2"]),
                                          (["a2", "b2", "o"], [OUT])], self.inverted()),
            "test_cross_unseen_symbols": pattern([([IN], first), (["o"], [OUT])], self.inverted()),
            "test_all": pattern([([IN] + every, every + [OUT])]),
        }

    def _test_splits(self, lengths: Tuple[int, int], size: int):
        """(pattern name, lengths, chains: None = all) of each test split, in the reference's order."""
        if self.variant != "s":
            return [("ood", lengths, size)]
        splits = [("test_group_alternate", lengths, size), ("test_all", lengths, size)]
        if self.overlap > 0:
            splits.append(("test_cross_unseen_symbols", (2, 2), None))
        return splits + [("test_unseen_pairs", (2, 2), None)]

    # --- chains ----------------------------------------------------------------------------------------------

    def options(self, name: str, node: str, symbol: int) -> List[Tuple[int, str]]:
        """(function, its group) allowed after ``node`` when the current symbol is ``symbol``."""
        key = (name, node, symbol)
        cache = self._options
        if key not in cache:
            p = self.patterns[name]
            allowed = [(f, g) for g in sorted(p.edges.get(node, ())) if g != OUT for f in self.groups[g]]
            allowed += [(f, self.group[f]) for source, symbols, f in p.restricted
                        if source == node and symbol in symbols]
            cache[key] = list(dict.fromkeys(allowed))
        return cache[key]

    def can_end(self, name: str, node: str) -> bool:
        return OUT in self.patterns[name].edges.get(node, ())

    def tokens(self, x: int, functions: Sequence[int]) -> Chain:
        return tuple(reversed(functions)) + (self.num_functions + x,)

    def walk(self, name: str, length: int, rng: random.Random) -> Optional[Chain]:
        """sample_one: x uniform, then one allowed function uniformly per step; None if the chain may not end."""
        x = symbol = rng.randrange(self.num_symbols)
        node, functions = IN, []
        for _ in range(length):
            allowed = self.options(name, node, symbol)
            if not allowed:
                return None
            f, node = allowed[rng.randrange(len(allowed))]
            functions.append(f)
            symbol = self.functions[f][symbol]
        return self.tokens(x, functions) if self.can_end(name, node) else None

    def counts(self, name: str, longest: int) -> Dict[int, int]:
        """Number of distinct chains of each length 1..longest that follow pattern ``name`` (exact)."""
        states = {(IN, x): 1 for x in range(self.num_symbols)}
        out = {}
        for length in range(1, longest + 1):
            nxt: Dict[Tuple[str, int], int] = {}
            for (node, symbol), n in states.items():
                for f, g in self.options(name, node, symbol):
                    key = (g, self.functions[f][symbol])
                    nxt[key] = nxt.get(key, 0) + n
            states = nxt
            out[length] = sum(n for (node, _), n in states.items() if self.can_end(name, node))
        return out

    def enumerate(self, name: str, length: int) -> List[Chain]:
        """Every chain of pattern ``name`` and this length."""
        out = []

        def extend(x, symbol, node, functions):
            if len(functions) == length:
                if self.can_end(name, node):
                    out.append(self.tokens(x, functions))
                return
            for f, g in self.options(name, node, symbol):
                extend(x, self.functions[f][symbol], g, functions + [f])

        for x in range(self.num_symbols):
            extend(x, x, IN, [])
        return out

    def sample_split(self, name: str, n: Optional[int], lengths: Tuple[int, int], rng: random.Random,
                     fill: float = 1.0, asked: str = "") -> List[Chain]:
        """The reference's ``sample``: n distinct chains (None: all at ``fill``) spread evenly over the lengths
        that have chains, each length capped at ``fill`` times its number of chains. ``asked``: the config values
        that set n, for the error when there are fewer chains."""
        counts = self.counts(name, lengths[1])
        valid = [length for length in range(lengths[0], lengths[1] + 1) if counts[length] > 0]
        per_length, total = {}, 0
        for i, length in enumerate(valid):
            c = int(counts[length] * fill)
            if n is not None:
                left = len(valid) - i
                c = min(c, (n - total + left - 1) // left)
            per_length[length], total = c, total + c
        if n is not None and total != n:
            raise ConfigError(f"{asked}: split {name!r} of variant {self.variant} has only {total} distinct chains of "
                              f"lengths {list(lengths)} (taking at most {fill:g} of each length's); lower "
                              f"{asked.split('=')[0]}, or use more functions or longer chains")
        chains: List[Chain] = []
        for length, c in per_length.items():
            if c == counts[length]:
                chains += self.enumerate(name, length)
                continue
            seen: Dict[Chain, None] = {}
            while len(seen) < c:
                chain = self.walk(name, length, rng)
                if chain is not None:
                    seen[chain] = None
            chains += list(seen)
        return chains

    def groups_of(self, chain: Chain) -> List[str]:
        """Groups of the functions of a chain in application order."""
        return [self.group[f] for f in reversed(chain[:-1])]

    def answer(self, tokens: Sequence[int]) -> int:
        """The symbol f_L(...f_1(x)) for tokens f_L ... f_1 x."""
        symbol = tokens[-1] - self.num_functions
        for f in reversed(tokens[:-1]):
            symbol = self.functions[f][symbol]
        return symbol

    # --- the task protocol -----------------------------------------------------------------------------------

    def encode(self, chains: Sequence[Chain]) -> Batch:
        inputs = [list(c) + [self.query] for c in chains]
        targets = [[IGNORE] * len(c) + [self.answer(c)] for c in chains]
        return pad_batch(inputs, targets, pad=self.pad)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """Training batch: chains drawn uniformly from the training set (never one of the IID split)."""
        rng = python_rng(generator)
        return self.encode([self.train[rng.randrange(len(self.train))] for _ in range(batch_size)])

    def eval_sets(self, generator: torch.Generator) -> Dict[str, List[Batch]]:
        """``iid`` first (evaluated during training), then the test splits of the variant."""
        size = self.eval_batch_size
        return {name: [self.encode(split[i:i + size]) for i in range(0, len(split), size)]
                for name, split in itertools.chain([("iid", self.iid)], self.tests.items())}


def from_config(env) -> CTLPPTask:
    return CTLPPTask(env.variant, env.num_symbols, env.num_functions, tuple(env.chain_lengths), env.overlap,
                     env.symbol_overlap, env.imbalance, env.train_size, env.train_on_pairs, env.test_size,
                     env.data_seed, env.batch_size)


@dataclass
class CTLPPEnvConfig(TaskConfig):
    """``env=ctlpp/<variant>``: chains of bijections; IID and never-seen-pattern test splits (RobertCsordas/ctlpp)."""

    name: str = "ctlpp"  # run name
    family: str = "ctlpp"  # registered task (metarl.engine.registry.TASKS)
    variant: str = "r"  # r (train within groups) | a (train alternating) | s (two stages and a shared group o)
    num_symbols: int = 8  # symbols the functions act on (chance accuracy 1/num_symbols)
    num_functions: int = 32  # random bijections
    chain_lengths: List[int] = field(default_factory=lambda: [2, 6])  # functions per chain (inclusive)
    overlap: int = 8  # variant s: functions in the shared group o (the paper's sweep: 4, 8, 12, 16)
    symbol_overlap: int = 4  # variant s: input symbols of each o function shared by a1 and b1 (2-6 swept; 0: all)
    imbalance: int = 0  # variant s: of the non-shared symbols, this many more go to a1 than to b1
    train_size: int = 300_000  # distinct training chains (the reference's N), drawn once
    train_on_pairs: bool = True  # also train on every training chain of length 2 (the reference's fit.train_on_pairs)
    test_size: int = 1000  # chains in the IID split and in each test split of fixed size
    data_seed: int = 0  # seed of the functions, groups, symbol overlaps and all splits
    batch_size: int = 64  # chains per update (and per evaluation batch)
    eval_every: int = 500  # updates between IID evaluations (the test splits once, at the end)


register_sequence_task("ctlpp", CTLPPEnvConfig, from_config)
