"""Formal languages: targets checked against membership functions written independently of the generators,
the reference's class targets (Bhattamishra et al.'s output encodings, IDSIA/fwp-formal-lang's loss), the
reader of the published .src/.tgt files, the reference presets, length bins, and a short training run."""
from __future__ import annotations

import itertools
import math
import re
from collections import Counter

import pytest
import torch

from metarl import cores
from metarl.errors import ConfigError, DataError, MissingPathError
from metarl.supervised.formal import END, LANGUAGES, FormalLanguageTask, ReferenceFormalData
from tests.supervised.helpers import config, train


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
    task = FormalLanguageTask(name, train_lengths=(1, 8), test_lengths=(51, 100), loss="multilabel")
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


# ---------------------------------------------------------------- the reference's class targets
def bhattamishra_outputs(name: str, s: str) -> list:
    """Per position, the target token Bhattamishra et al.'s generators write (satwik77/Transformer-Formal-
    Languages src/utils/*_generator.py ``output_generator``), in our alphabets; the fwp-formal-lang .tgt files
    hold these tokens, and each distinct token is one class of its cross-entropy."""
    out = []
    for t in range(1, len(s) + 1):
        prefix = s[:t]
        if name in ("parity", "aa_star", "abab_star"):  # membership of the prefix
            out.append(str(int(MEMBER[name](prefix))))
        elif name in ("dyck1", "reset_dyck1"):  # 1 while the current segment's depth is positive
            segment = prefix.split("1")[-1]
            out.append(str(int(segment.count("(") > segment.count(")"))))
        elif name == "shuffle2":  # one bit per bracket pair: its depth is positive
            out.append("".join(str(int(prefix.count(o) > prefix.count(c))) for o, c in ("()", "[]")))
        else:  # counters: x (a or b) while reading a's, then the letter that must follow, T at the end
            k, n = len(LANGUAGES[name].alphabet), s.count("a")
            out.append("x" if t <= n else "T" if t == k * n else "abc"[t // n])
    return out


@pytest.mark.parametrize("name", sorted(LANGUAGES))
def test_set_classes_are_the_reference_classes(name):
    """The class of each position is a function of the reference's target token and back (the same partition)."""
    task = FormalLanguageTask(name)
    assert not task.multilabel and task.num_classes == 2 ** len(LANGUAGES[name].class_outputs)
    strings = task.strings(200, torch.Generator().manual_seed(3), "bin0")
    batch = task.encode(strings)
    ours_to_theirs, theirs_to_ours = {}, {}
    for b, s in enumerate(strings):
        targets = batch.targets[b, : len(s)].tolist()
        assert (batch.targets[b, len(s):] == -100).all()
        assert targets == [LANGUAGES[name].set_class(a) for a in task.language.next_sets(s)]
        for ours, theirs in zip(targets, bhattamishra_outputs(name, s)):
            assert ours_to_theirs.setdefault(ours, theirs) == theirs, (name, s)
            assert theirs_to_ours.setdefault(theirs, ours) == ours, (name, s)
    assert len(ours_to_theirs) >= 2


@pytest.mark.parametrize("name", sorted(set(LANGUAGES) - {"abab_star"}))
def test_set_class_determines_the_whole_target_set(name):
    task = FormalLanguageTask(name, loss="multilabel")
    seen = {}
    for s in task.strings(100, torch.Generator().manual_seed(4), "bin0"):
        for allowed in task.language.next_sets(s):
            full = "".join(sorted(allowed))
            assert seen.setdefault(task.language.set_class(allowed), full) == full, (name, s)


def test_set_class_loss_is_cross_entropy_over_classes():
    task = FormalLanguageTask("dyck1")
    batch = task.encode(["(())", "()"])
    assert batch.targets.tolist() == [[1, 1, 1, 0], [1, 0, -100, -100]]  # class bit 0: ")" may follow
    assert task.num_classes == 2 and task.vocab_size == 3


def test_reset_dyck_has_exactly_one_reset_unless_asked():
    generator = torch.Generator().manual_seed(5)
    task = FormalLanguageTask("reset_dyck1")
    for bin in ("bin0", "bin1"):
        assert {s.count("1") for s in task.strings(300, generator, bin)} == {1}
    counts = Counter(s.count("1") for s in FormalLanguageTask("reset_dyck1", resets=(1, 3)).strings(300, generator))
    assert set(counts) == {1, 2, 3}
    with pytest.raises(ConfigError, match="env.resets"):
        FormalLanguageTask("reset_dyck1", resets=(0, 2))
    with pytest.raises(ConfigError, match="env.loss='softmax'"):
        FormalLanguageTask("dyck1", loss="softmax")


def test_presets_build_the_reference_models():
    assert config("formal/parity").env.loss == "set_class"
    assert config("formal/reset_dyck1").env.resets == [1, 1]
    lt = cores.from_config(config("formal/parity", "agent=lt").agent).blocks[0].mixer
    assert lt.sum_normalise is False
    assert cores.from_config(config("recall", "agent=lt").agent).blocks[0].mixer.sum_normalise is True
    torch.manual_seed(0)
    srwm = cores.from_config(config("formal/dyck1", "agent=srwm").agent).blocks[0].mixer
    scale = 1 / math.sqrt(srwm.d_head)
    assert abs(srwm.Wq.std().item() - 0.01 * scale) < 0.002 * scale and abs(srwm.Wk.std().item() - scale) < 0.2 * scale
    assert srwm.norm_position == "skip" and not srwm.input_softmax and srwm.wb.mean().item() < -0.8
    assert cores.from_config(config("formal/dyck1", "agent=lstm").agent).name == "lstm"


# ---------------------------------------------------------------- the published .src/.tgt files
REFERENCE = {  # split -> (src lines, tgt lines), parity in the published alphabet (0/1; target: prefix is a member)
    "train": (["0 1 1", "1 1", "0"], ["1 0 1", "0 1", "1"]),
    "valid": (["1 0 1 0", "", "0 0"], ["0 0 1 1", "", "1 1"]),
    "test": (["1 1 0 0 1 1"], ["0 1 1 1 0 1"]),
}


def write_reference(folder, data=REFERENCE):
    folder.mkdir(parents=True, exist_ok=True)
    for stem, (src, tgt) in data.items():
        (folder / f"{stem}_50.src").write_text("\n".join(src) + "\n")
        (folder / f"{stem}_50.tgt").write_text("\n".join(tgt) + "\n")


def test_reference_files_are_read_as_the_reference_reads_them(tmp_path):
    write_reference(tmp_path / "parity")
    for root in (tmp_path, tmp_path / "parity"):  # the parent of the language folders, or the folder itself
        data = ReferenceFormalData("parity", root, eval_batch_size=2)
        assert data.tokens == {"0": 0, "1": 1} and data.pad == 2 and data.vocab_size == 3
        assert data.classes == {"1": 0, "0": 1} and data.num_classes == 2  # first appearance in train_50.tgt
    sets = data.eval_sets(torch.Generator())
    assert list(sets) == ["bin0", "bin1"] and [len(v) for v in sets.values()] == [1, 1]  # the blank line is skipped
    bin0 = sets["bin0"][0]
    assert bin0.tokens.tolist() == [[1, 0, 1, 0], [0, 0, 2, 2]]
    assert bin0.targets.tolist() == [[1, 1, 0, 0], [0, 0, -100, -100]]
    batch = data.sample(5, torch.Generator().manual_seed(0))
    assert batch.tokens.shape[0] == 5 and set(batch.tokens.flatten().tolist()) <= {0, 1, 2}


def test_missing_or_broken_reference_files_are_named(tmp_path):
    with pytest.raises(MissingPathError, match="train_50.src.*test_50.tgt"):
        ReferenceFormalData("dyck1", tmp_path / "nowhere")
    (tmp_path / "dyck-1").mkdir()
    with pytest.raises(MissingPathError, match="dyck-1 lacks train_50.src"):
        ReferenceFormalData("dyck1", tmp_path)
    write_reference(tmp_path / "a", {**REFERENCE, "test": (["1 1 0"], ["0 1"])})
    with pytest.raises(DataError, match="test_50.src:1 has 3 tokens"):
        ReferenceFormalData("parity", tmp_path / "a")
    write_reference(tmp_path / "b", {**REFERENCE, "test": (["1 2"], ["0 1"])})
    with pytest.raises(DataError, match="'2' do not occur in the training file"):
        ReferenceFormalData("parity", tmp_path / "b")
    with pytest.raises(ConfigError, match="env.loss must be set_class"):
        train("formal/parity", f"env.root={tmp_path / 'a'}", "env.loss=multilabel", "agent=lstm")


def test_training_on_reference_files(tmp_path):
    write_reference(tmp_path / "parity")
    metrics = train("formal/parity", f"env.root={tmp_path}", "agent=lstm", "agent.d_model=16", "optim.steps=5",
                    "env.eval_every=5")
    assert 0.0 <= metrics["test/bin1/sequence_accuracy"] <= 1.0 and "test/bin0/accuracy" in metrics
