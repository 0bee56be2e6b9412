"""Formal languages in the character-prediction formulation (Gers & Schmidhuber 2001; Bhattamishra, Ahuja &
Goyal 2020), as used by Irie, Csordás & Schmidhuber (EMNLP 2023) to compare fast weight programmers.

A causal model reads a member x_1..x_n of the language; after x_t the target is the set of outputs that are
allowed there: every symbol c of the alphabet that may come next (x_1..x_t c is still a prefix of a member) and
``END`` when the string may end there (x_1..x_t is a member). A string is right when all of its positions are
(sequence accuracy). Models train on lengths 1-50 (Bin0) and are tested on lengths 51-100 (Bin1).

Two ways to score a target set (``env.loss``):

- ``"set_class"`` (default; IDSIA/fwp-formal-lang, EMNLP 2023): each target set is one class, and the loss is
  the cross-entropy over the classes (``main.py``: ``nn.CrossEntropyLoss`` over the target vocabulary of
  ``copy_task_data.py``, where every distinct whitespace-separated token of the ``.tgt`` files is a class; a
  position is right when the argmax is the target class). Those tokens are the per-position outputs of
  Bhattamishra et al.'s generators (satwik77/Transformer-Formal-Languages ``src/utils/*_generator.py``), which
  encode only the outputs that vary: the allowed closing brackets for the Dyck and shuffle languages (openers
  and the reset are always allowed, and the end is allowed exactly when no closer is), the whole set for the
  counter languages, and membership alone for parity, (aa)* and (abab)*. Here the class of a position is the
  bit pattern of those outputs (``Language.class_outputs``), ``2^len(class_outputs)`` classes in all; for every
  language but (abab)* the class determines the whole set. Differences: the reference has one class per
  distinct token of its training file plus an unused padding class, here every bit pattern is a class (the
  ones that never occur only get pushed down); for (abab)* the reference, and so this loss, asks for
  membership only, not for which letter comes next.
- ``"multilabel"`` (metarl's earlier default): a sigmoid per output (the symbols, then ``END``), binary
  cross-entropy summed over them; a position is right when all of its outputs are (sigmoid > 0.5).

The published data (``env.root``): see ``read_reference_split`` and ``ReferenceFormalData``.

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
                            the last one a Dyck-1 word. Strings hold ``env.resets`` = [fewest, most] resets:
                            [1, 1] (default) as Bhattamishra et al.'s generator (a Dyck-1 prefix, ``1``, a
                            Dyck-1 word; ``src/utils/reset_dyck_generator.py``), [1, 3] metarl's earlier draw
==============  ==========  ===============================================================================

Strings of a given length are drawn uniformly where that is simple (Dyck words through the cycle lemma, every
parity string); the bins hold every valid length with equal probability. Bhattamishra et al. draw strings from
PCFGs and random walks instead, so the distributions of lengths and depths differ: for the exact published
data, pass ``env.root``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..engine import TaskConfig
from ..errors import ConfigError, DataError, MissingPathError, check_choice
from .sequence import register_sequence_task
from .tasks import Batch, SequenceTask, pad_batch, python_rng

END = "$"  # the last output: the string may end here
LOSSES = ("set_class", "multilabel")


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


def reset_dyck_word(n: int, rng: random.Random, resets: Tuple[int, int] = (1, 1)) -> str:
    """A reset Dyck-1 string of length n >= resets[0] with resets[0]..resets[1] resets (uniform): the segments
    before the resets are Dyck prefixes, the last segment a Dyck word (each may be empty). With (1, 1), the shape
    of Bhattamishra et al.'s strings: a prefix of a Dyck word, ``1``, a Dyck word."""
    resets = rng.randint(resets[0], min(resets[1], n))
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
    next_sets(s): for each prefix of member s, the allowed next symbols (+ ``END``); class_outputs: the outputs
    (symbols or ``END``) whose bit pattern is the class of a target set for ``loss="set_class"``: those that
    Bhattamishra et al.'s target vectors encode; reference_folder: the language's folder in the published
    data of IDSIA/fwp-formal-lang."""

    alphabet: str
    valid: Callable[[int], bool]
    sample: Callable[[int, random.Random], str]
    next_sets: Callable[[str], List[str]]
    class_outputs: str
    reference_folder: str

    def set_class(self, allowed: str) -> int:
        """The class id of a target set: bit i set when ``class_outputs[i]`` is in it."""
        return sum(1 << i for i, c in enumerate(self.class_outputs) if c in allowed)


def reset_dyck_language(resets: Tuple[int, int] = (1, 1)) -> Language:
    """Reset Dyck-1 with resets[0]..resets[1] resets per string (1 <= resets[0] <= resets[1])."""
    lo, hi = int(resets[0]), int(resets[1])
    if not 1 <= lo <= hi:
        raise ConfigError(f"env.resets={[lo, hi]}: need 1 <= fewest <= most resets per string (reference: [1, 1])")
    return Language("()1", lambda n: n >= lo, lambda n, rng: reset_dyck_word(n, rng, (lo, hi)),
                    bracket_next("()", reset="1"), ")", "reset_dyck")


def _multiple_of(k: int) -> Callable[[int], bool]:
    return lambda n: n >= k and n % k == 0


LANGUAGES: Dict[str, Language] = {
    "parity": Language("ab", lambda n: n >= 1, parity_word, parity_next, END, "parity"),
    "aa_star": Language("a", _multiple_of(2), lambda n, rng: "a" * n, star_next("aa"), END, "aa-star"),
    "abab_star": Language("ab", _multiple_of(4), lambda n, rng: "ab" * (n // 2), star_next("abab"), END,
                          "abab-star"),
    "counter2": Language("ab", _multiple_of(2), lambda n, rng: "a" * (n // 2) + "b" * (n // 2), counter_next(2),
                         "ab" + END, "counter-2"),
    "counter3": Language("abc", _multiple_of(3), lambda n, rng: "".join(c * (n // 3) for c in "abc"),
                         counter_next(3), "abc" + END, "counter-3"),
    "shuffle2": Language("()[]", _multiple_of(2), shuffle_word, bracket_next("()[]"), ")]", "shuffle-2"),
    "dyck1": Language("()", _multiple_of(2), dyck_word, bracket_next("()"), ")", "dyck-1"),
    "reset_dyck1": reset_dyck_language((1, 1)),
}


def _language(name: str) -> Language:
    if name not in LANGUAGES:
        raise ConfigError(f"env.language={name!r} is not a formal language; choose one of: {', '.join(LANGUAGES)}")
    return LANGUAGES[name]


class FormalLanguageTask(SequenceTask):
    """Character prediction on one of ``LANGUAGES``: train on ``train_lengths`` (Bin0), test on
    ``test_lengths`` (Bin1), both inclusive ranges of string lengths.

    Tokens: the alphabet's symbols in order, then the padding token. Targets: with ``loss="set_class"`` the
    class id of each position's target set (``Language.set_class``, ``2^len(class_outputs)`` classes), with
    ``loss="multilabel"`` a multi-hot vector over the symbols, then ``END``. ``resets``: fewest and most resets
    per reset_dyck1 string (ignored by the other languages).
    """

    requires_causal = True

    def __init__(self, language: str, train_lengths: Tuple[int, int] = (1, 50), test_lengths: Tuple[int, int] = (51, 100),
                 eval_batch_size: int = 32, eval_batches: int = 8, loss: str = "set_class",
                 resets: Tuple[int, int] = (1, 1)):
        self.name, self.language = language, _language(language)
        check_choice("env.loss", loss, LOSSES)
        if language == "reset_dyck1":
            self.language = reset_dyck_language(tuple(resets))
        self.loss, self.multilabel = loss, loss == "multilabel"
        self.bins = {"bin0": self._lengths(train_lengths, "train_lengths"),
                     "bin1": self._lengths(test_lengths, "test_lengths")}
        self.symbols = self.language.alphabet + END
        self.vocab_size = len(self.language.alphabet) + 1  # + padding
        self.num_classes = len(self.symbols) if self.multilabel else 2 ** len(self.language.class_outputs)
        self.eval_batch_size, self.eval_batches = eval_batch_size, eval_batches

    def _lengths(self, bounds, key: str) -> List[int]:
        lengths = [n for n in range(bounds[0], bounds[1] + 1) if self.language.valid(n)]
        if not lengths:
            raise ValueError(f"env.{key}={list(bounds)}: no string of {self.name} has a length in this range")
        return lengths

    def encode(self, strings: List[str]) -> Batch:
        """Member strings -> tokens and targets (padded): class ids or multi-hot vectors (see the class)."""
        inputs = [[self.symbols.index(c) for c in s] for s in strings]
        if self.multilabel:
            targets = [[[float(c in allowed) for c in self.symbols] for allowed in self.language.next_sets(s)]
                       for s in strings]
            return pad_batch(inputs, targets, pad=len(self.language.alphabet), multilabel_size=self.num_classes)
        targets = [[self.language.set_class(allowed) for allowed in self.language.next_sets(s)] for s in strings]
        return pad_batch(inputs, targets, pad=len(self.language.alphabet))

    def strings(self, batch_size: int, generator: torch.Generator, bin: str = "bin0") -> List[str]:
        rng = python_rng(generator)
        return [self.language.sample(rng.choice(self.bins[bin]), rng) for _ in range(batch_size)]

    def sample(self, batch_size: int, generator: torch.Generator, bin: str = "bin0") -> Batch:
        return self.encode(self.strings(batch_size, generator, bin))

    def eval_sets(self, generator: torch.Generator) -> Dict[str, List[Batch]]:
        return {name: [self.sample(self.eval_batch_size, generator, name) for _ in range(self.eval_batches)]
                for name in self.bins}


# ---------------------------------------------------------------- the published data (env.root)
LEVEL = 50  # the only "level" of the published files (fwp-formal-lang README: keep --level 50)
REFERENCE_SPLITS = {"train": "train", "bin0": "valid", "bin1": "test"}  # our name -> file stem ("test" = valid2)


def reference_file_names() -> List[str]:
    """The six files of one language: train_50.src, train_50.tgt, valid_50.src, ..., test_50.tgt."""
    return [f"{stem}_{LEVEL}.{ext}" for stem in REFERENCE_SPLITS.values() for ext in ("src", "tgt")]


def reference_folder(root, language: str) -> Path:
    """The folder of ``language`` under ``root``: ``root`` itself when it holds the six files, else
    ``root/<folder name of fwp-formal-lang>`` (parity, aa-star, abab-star, counter-2, counter-3, shuffle-2,
    dyck-1, reset_dyck). A missing file raises MissingPathError naming the files expected."""
    root = Path(root).expanduser()
    names = reference_file_names()
    candidates = [root, root / _language(language).reference_folder]
    for folder in candidates:
        if all((folder / name).is_file() for name in names):
            return folder
    sub = candidates[1]
    if sub.is_dir():
        where = f"{sub} lacks {', '.join(n for n in names if not (sub / n).is_file())}"
    elif root.is_dir():
        where = f"neither {root} nor {sub} holds the six files"
    else:
        where = f"{root} is not a folder"
    raise MissingPathError(
        f"env.root={root}: {where}. Pass the folder of one language of the published data of IDSIA/fwp-formal-lang "
        f"({sub.name}/ for {language}) or its parent; each language folder holds {', '.join(names)}: one string "
        f"per line, its tokens separated by spaces, and on the same line of the .tgt file one target token per "
        f"input token")


def read_reference_split(src: Path, tgt: Path) -> List[Tuple[List[str], List[str]]]:
    """The (input tokens, target tokens) pairs of one split, in file order.

    The format of IDSIA/fwp-formal-lang ``copy_task_data.py``: line i of the ``.src`` file is a string, line i
    of the ``.tgt`` file its targets, both split on whitespace (``line.split()``); each target token names a
    class. Here the two lines must have the same number of tokens (the reference pads them separately and
    assumes they align); blank lines (empty strings, nothing to predict) are skipped.
    """
    src_lines = src.read_text().splitlines()
    tgt_lines = tgt.read_text().splitlines()
    if len(src_lines) != len(tgt_lines):
        raise DataError(f"{src} has {len(src_lines)} lines but {tgt} has {len(tgt_lines)}; they must align")
    pairs = []
    for number, (s, t) in enumerate(zip(src_lines, tgt_lines), start=1):
        tokens, targets = s.split(), t.split()
        if len(tokens) != len(targets):
            raise DataError(f"{src}:{number} has {len(tokens)} tokens but {tgt}:{number} has {len(targets)}; "
                            "each input token needs one target token")
        if tokens:
            pairs.append((tokens, targets))
    return pairs


class ReferenceFormalData(SequenceTask):
    """The published .src/.tgt data of one language (IDSIA/fwp-formal-lang, from Bhattamishra et al. 2020).

    Train on ``train_50``, evaluate ``valid_50`` as ``bin0`` (lengths of the training set) and ``test_50`` as
    ``bin1`` (longer strings; "valid2" in the reference's logs). As the reference: the input vocabulary is the
    training file's tokens in order of first appearance, then padding; the classes are the training targets'
    tokens in order of first appearance (a token only in valid/test is an error here, a KeyError there); the
    loss is the cross-entropy over the classes. Training batches draw ``batch_size`` strings uniformly (the
    reference shuffles epochs); the evaluation sets are every string of the file, in order, in batches of
    ``eval_batch_size``.
    """

    multilabel = False
    requires_causal = True

    def __init__(self, language: str, root, eval_batch_size: int = 32):
        self.name = language
        folder = reference_folder(root, language)
        splits = {name: read_reference_split(folder / f"{stem}_{LEVEL}.src", folder / f"{stem}_{LEVEL}.tgt")
                  for name, stem in REFERENCE_SPLITS.items()}
        if not splits["train"]:
            raise DataError(f"{folder / f'train_{LEVEL}.src'} holds no string")
        self.tokens: Dict[str, int] = {}
        self.classes: Dict[str, int] = {}
        for tokens, targets in splits["train"]:
            for token in tokens:
                self.tokens.setdefault(token, len(self.tokens))
            for target in targets:
                self.classes.setdefault(target, len(self.classes))
        self.pad = len(self.tokens)
        self.vocab_size, self.num_classes = len(self.tokens) + 1, len(self.classes)
        self.rows = {name: [self._ids(pair, folder / f"{REFERENCE_SPLITS[name]}_{LEVEL}") for pair in pairs]
                     for name, pairs in splits.items()}
        self.eval_batch_size = eval_batch_size

    def _ids(self, pair, stem: Path) -> Tuple[List[int], List[int]]:
        tokens, targets = pair
        for token, table, ext in ((tokens, self.tokens, "src"), (targets, self.classes, "tgt")):
            unknown = sorted(set(token) - set(table))
            if unknown:
                raise DataError(f"{stem}.{ext}: token(s) {', '.join(map(repr, unknown))} do not occur in the training "
                                f"file {stem.parent / f'train_{LEVEL}.{ext}'}")
        return [self.tokens[t] for t in tokens], [self.classes[t] for t in targets]

    def _batch(self, rows: Sequence[Tuple[List[int], List[int]]]) -> Batch:
        return pad_batch([r[0] for r in rows], [r[1] for r in rows], pad=self.pad)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        train = self.rows["train"]
        picks = torch.randint(0, len(train), (batch_size,), generator=generator).tolist()
        return self._batch([train[i] for i in picks])

    def eval_sets(self, generator: torch.Generator) -> Dict[str, List[Batch]]:
        size = self.eval_batch_size
        return {name: [self._batch(self.rows[name][i:i + size]) for i in range(0, len(self.rows[name]), size)]
                for name in ("bin0", "bin1") if self.rows[name]}


def from_config(env) -> SequenceTask:
    check_choice("env.loss", env.loss, LOSSES)
    if env.root:
        if env.loss != "set_class":
            raise ConfigError(f"env.root: the published targets are class tokens, so env.loss must be set_class "
                              f"(got {env.loss!r})")
        return ReferenceFormalData(env.language, env.root, env.batch_size)
    return FormalLanguageTask(env.language, tuple(env.train_lengths), tuple(env.test_lengths), env.batch_size,
                              env.eval_batches, env.loss, tuple(env.resets))


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
    loss: str = "set_class"  # set_class: each target set one class, cross-entropy (fwp-formal-lang) | multilabel: a sigmoid per output
    resets: List[int] = field(default_factory=lambda: [1, 1])  # reset_dyck1: fewest, most resets per string ([1, 1]: reference)
    # folder of the published .src/.tgt data (a language's folder or its parent): train on it, test on its valid
    # (bin0) and test (bin1) files; lengths, eval_batches and resets then do not apply. None: generate strings
    root: Optional[str] = None


register_sequence_task("formal", FormalEnvConfig, from_config)
