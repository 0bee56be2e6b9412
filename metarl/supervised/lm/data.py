"""Corpora of the language-modelling task: readers of the standard on-disk layouts and a default corpus
that needs no download. Nothing is downloaded: ``env.root`` names the folder.

=============  ====================================================================================
``corpus``     what ``env.root`` must hold (checked at start; a missing file names what is expected)
=============  ====================================================================================
``enwik8``     ``enwik8`` (the unzipped Hutter-prize file, 100,000,000 bytes) or ``enwik8.zip``; raw bytes
               split in order into the first 90M / next 5M / last 5M (``env.split``: fractions)
``text8``      ``text8`` or ``text8.zip`` (100,000,000 characters), the same split
``wikitext103`` ``wiki.train.tokens``, ``wiki.valid.tokens``, ``wiki.test.tokens`` as published
``wikitext2``  (word level with ``<unk>``, in ``env.root`` or its ``wikitext-103/`` / ``wikitext-2/``
               folder); the ``-raw`` releases' ``wiki.*.raw`` files are read when no ``.tokens`` are there
``default``    nothing: the sources of Python's standard library (its top-level ``*.py`` files) and the
               English prose of ``pydoc_data`` (one entry per help topic), each entry put in train / valid /
               test by a stable hash of its name (``split_of``); entries in name order, joined by newlines
=============  ====================================================================================

A ``Corpus`` has the raw bytes of each split and ``files``: the name, size and split of every file (or
entry) it read, which the task writes to ``data.json`` in the run folder. The default corpus depends on the
Python version (its file list is the standard library's); ``data.json`` records the version too.
"""
from __future__ import annotations

import hashlib
import sys
import sysconfig
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ...errors import ConfigError, DataError, MissingPathError

SPLITS = ("train", "valid", "test")
CORPORA = ("default", "enwik8", "text8", "wikitext103", "wikitext2")
#: the natural tokeniser of each corpus (``env.tokenizer=auto``)
DEFAULT_TOKENIZER = {"default": "bytes", "enwik8": "bytes", "text8": "characters", "wikitext103": "words",
                     "wikitext2": "words"}
WIKITEXT_FOLDERS = {"wikitext103": ("wikitext-103", "wikitext-103-raw"), "wikitext2": ("wikitext-2", "wikitext-2-raw")}


@dataclass
class Corpus:
    """name; splits: {"train" | "valid" | "test": raw bytes}; files: [{"name", "bytes", "split"}]; info: extra
    facts for ``data.json`` (the root, the Python version of the default corpus, ...)."""

    name: str
    splits: Dict[str, bytes]
    files: List[dict]
    info: Dict[str, object] = field(default_factory=dict)

    def manifest(self) -> dict:
        return {"corpus": self.name, **self.info,
                "split_bytes": {s: len(self.splits[s]) for s in SPLITS}, "files": self.files}


# ---------------------------------------------------------------------------------------------- the readers
def _root(root: Optional[str], corpus: str, expected: str) -> Path:
    if not root:
        raise MissingPathError(f"env=lm/{corpus} reads its data from a folder: set env.root=<folder> holding "
                               f"{expected} (nothing is downloaded)")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise MissingPathError(f"env.root={root}: no such folder; it must hold {expected}")
    return path


def _read_single(root: Path, name: str) -> Tuple[bytes, str]:
    """``root/name`` or the member ``name`` of ``root/name.zip`` -> (bytes, the file read)."""
    if (root / name).is_file():
        return (root / name).read_bytes(), name
    archive = root / f"{name}.zip"
    if archive.is_file():
        try:
            with zipfile.ZipFile(archive) as z:
                members = [m for m in z.namelist() if Path(m).name == name] or z.namelist()
                if len(members) != 1:
                    raise DataError(f"{archive}: expected one member named {name}, found {z.namelist()[:5]}")
                return z.read(members[0]), f"{name}.zip:{members[0]}"
        except zipfile.BadZipFile as err:
            raise DataError(f"{archive} is not a readable zip file ({err}); unzip it into env.root") from None
    raise MissingPathError(f"env.root={root} has neither {name} nor {name}.zip; put the {name} file there "
                           f"(unzipped, or the published {name}.zip)")


def split_in_order(data: bytes, fractions: Sequence[float]) -> Dict[str, bytes]:
    """train / valid / test = consecutive pieces of ``data``: the last two hold ``round(n * fraction)`` bytes
    (enwik8 and text8: 5,000,000 each of 100,000,000), train the rest."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not abs(sum(fractions) - 1) < 1e-6:
        raise ConfigError(f"env.split={list(fractions)}: need three non-negative fractions (train, valid, test) "
                          "that sum to 1 (enwik8/text8 standard: [0.9, 0.05, 0.05])")
    n = len(data)
    n_valid, n_test = round(n * fractions[1]), round(n * fractions[2])
    n_train = n - n_valid - n_test
    return {"train": data[:n_train], "valid": data[n_train:n_train + n_valid], "test": data[n_train + n_valid:]}


def read_hutter(corpus: str, root: Optional[str], fractions: Sequence[float] = (0.9, 0.05, 0.05)) -> Corpus:
    """enwik8 or text8 from ``root``: one file split in order (``split_in_order``)."""
    folder = _root(root, corpus, f"the {corpus} file (or {corpus}.zip)")
    data, name = _read_single(folder, corpus)
    splits = split_in_order(data, fractions)
    files = [{"name": name, "bytes": len(data), "split": "train+valid+test"}]
    return Corpus(corpus, splits, files, {"root": str(folder), "split_fractions": list(fractions)})


def read_wikitext(corpus: str, root: Optional[str]) -> Corpus:
    """WikiText-103 or -2 from ``root`` (or its ``wikitext-103/`` etc. folder): ``wiki.{split}.tokens``, else
    ``wiki.{split}.raw``."""
    expected = "wiki.train.tokens, wiki.valid.tokens and wiki.test.tokens"
    folder = _root(root, corpus, expected)
    candidates = [folder] + [folder / sub for sub in WIKITEXT_FOLDERS[corpus]]
    for place in candidates:
        for suffix in ("tokens", "raw"):
            paths = {s: place / f"wiki.{s}.{suffix}" for s in SPLITS}
            if all(p.is_file() for p in paths.values()):
                splits = {s: p.read_bytes() for s, p in paths.items()}
                files = [{"name": str(p.relative_to(folder)), "bytes": len(splits[s]), "split": s}
                         for s, p in paths.items()]
                return Corpus(corpus, splits, files, {"root": str(folder), "layout": suffix})
    found = sorted(p.name for place in candidates if place.is_dir() for p in place.glob("wiki.*"))
    raise MissingPathError(f"env.root={root} does not hold {expected} (the published {corpus} layout; also looked "
                           f"in {', '.join(WIKITEXT_FOLDERS[corpus])}/ and for the -raw release's wiki.*.raw); "
                           f"found: {', '.join(found) or 'no wiki.* files'}")


# ---------------------------------------------------------------------------------------- the default corpus
def split_of(name: str, valid_fraction: float, test_fraction: float) -> str:
    """The split of a default-corpus entry: a stable function of its name (the first 8 bytes of its SHA-256
    as a fraction u in [0, 1): valid if u < valid_fraction, test if u < valid_fraction + test_fraction)."""
    u = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") / 2**64
    if u < valid_fraction:
        return "valid"
    return "test" if u < valid_fraction + test_fraction else "train"


def default_entries() -> List[Tuple[str, bytes]]:
    """(name, bytes) of the default corpus: ``stdlib/<file>.py`` for the standard library's top-level modules and
    ``pydoc_data/<topic>`` for each help topic of ``pydoc_data.topics`` (when the installation ships it)."""
    entries = []
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py")):
        entries.append((f"stdlib/{path.name}", path.read_bytes()))
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip it
        topics = {}
    for key in sorted(topics):
        entries.append((f"pydoc_data/{key}", topics[key].encode("utf-8")))
    return entries


def default_corpus(valid_fraction: float = 0.05, test_fraction: float = 0.05,
                   entries: Optional[List[Tuple[str, bytes]]] = None) -> Corpus:
    """The corpus that ships with Python (``default_entries``), split by ``split_of``."""
    if not (0 < valid_fraction and 0 < test_fraction and valid_fraction + test_fraction < 1):
        raise ConfigError(f"env.valid_fraction={valid_fraction}, env.test_fraction={test_fraction}: both must be "
                          "positive with a sum below 1")
    entries = default_entries() if entries is None else entries
    parts: Dict[str, List[bytes]] = {s: [] for s in SPLITS}
    files = []
    for name, data in sorted(entries):
        split = split_of(name, valid_fraction, test_fraction)
        parts[split].append(data)
        files.append({"name": name, "bytes": len(data), "split": split})
    empty = [s for s in SPLITS if not parts[s]]
    if empty:
        raise DataError(f"the default corpus has no entry in {', '.join(empty)} ({len(entries)} entries): this "
                        "Python installation ships too few sources; pass env=lm/<corpus> env.root=<folder>")
    splits = {s: b"\n".join(parts[s]) for s in SPLITS}
    info = {"python": sys.version.split()[0], "stdlib": sysconfig.get_paths()["stdlib"],
            "valid_fraction": valid_fraction, "test_fraction": test_fraction}
    return Corpus("default", splits, files, info)


def read_corpus(corpus: str, root: Optional[str] = None, split: Sequence[float] = (0.9, 0.05, 0.05),
                valid_fraction: float = 0.05, test_fraction: float = 0.05) -> Corpus:
    """The corpus ``corpus`` (one of ``CORPORA``)."""
    if corpus == "default":
        return default_corpus(valid_fraction, test_fraction)
    if corpus in ("enwik8", "text8"):
        return read_hutter(corpus, root, split)
    if corpus in WIKITEXT_FOLDERS:
        return read_wikitext(corpus, root)
    raise ConfigError(f"env.corpus={corpus!r} is not valid; choose one of: {', '.join(CORPORA)}")
