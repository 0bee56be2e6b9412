"""Tokenisers of the language-modelling task: raw text (bytes) -> 1-d ``torch.long`` ids and back.

=================  =========================================================================  ============
``env.tokenizer``  symbols                                                                    metric
=================  =========================================================================  ============
``bytes``          the 256 byte values (enwik8's convention: bits per byte, called bpc)        ``bpc``
``characters``     the Unicode characters of the training split, plus ``<unk>`` for the       ``bpc``
                   characters only valid/test hold (text8: 27 symbols)
``words``          whitespace-separated words, ``<eos>`` at the end of every line (the         ``perplexity``
                   WikiText convention of the PyTorch word-LM example); the vocabulary is the
                   training split's words by falling count; others map to ``<unk>``
``sentencepiece``  subwords of a SentencePiece unigram model trained on the training split     ``perplexity``
                   and cached (the optional ``sentencepiece`` package)
=================  =========================================================================  ============

Every tokeniser has ``name``, ``vocab_size``, ``unit`` (``"char"``: bits per character is the metric;
``"token"``: perplexity), ``encode(data: bytes) -> LongTensor [N]``, ``decode(ids) -> str`` and
``to_dict()`` / ``tokenizer_from_dict`` (the run folder's ``tokenizer.json``, read by ``scripts/sample_lm.py``).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch

from ...errors import ConfigError

UNK, EOS = "<unk>", "<eos>"
TOKENIZERS = ("bytes", "characters", "words", "sentencepiece")


class ByteTokenizer:
    """The 256 byte values; ``decode`` reads the bytes as UTF-8 (invalid sequences replaced)."""

    name, unit, vocab_size = "bytes", "char", 256

    def encode(self, data: bytes) -> torch.Tensor:
        return torch.from_numpy(np.frombuffer(data, dtype=np.uint8).astype(np.int64))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def to_dict(self) -> dict:
        return {"name": self.name}


def _codepoints(data: bytes) -> np.ndarray:
    """The Unicode code points of UTF-8 bytes (invalid bytes replaced by U+FFFD), as uint32."""
    text = data.decode("utf-8", errors="replace")
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


class CharTokenizer:
    """The characters of the training text, in code-point order; id ``len(chars)`` is ``<unk>``."""

    name, unit = "characters", "char"

    def __init__(self, chars: Sequence[str]):
        self.chars = list(chars)
        self.vocab_size = len(self.chars) + 1
        self._points = np.array([ord(c) for c in self.chars], dtype=np.uint32)  # sorted

    @classmethod
    def fit(cls, train: bytes) -> "CharTokenizer":
        return cls([chr(c) for c in np.unique(_codepoints(train))])

    def encode(self, data: bytes) -> torch.Tensor:
        points = _codepoints(data)
        index = np.searchsorted(self._points, points)
        index = np.minimum(index, len(self._points) - 1) if len(self._points) else index
        known = (self._points[index] == points) if len(self._points) else np.zeros(len(points), bool)
        return torch.from_numpy(np.where(known, index, len(self.chars)).astype(np.int64))

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] if i < len(self.chars) else "\ufffd" for i in map(int, ids))

    def to_dict(self) -> dict:
        return {"name": self.name, "chars": "".join(self.chars)}


def word_lines(data: bytes) -> List[List[str]]:
    """WikiText words: each line's whitespace-separated words followed by ``<eos>`` (empty lines too)."""
    return [line.split() + [EOS] for line in data.decode("utf-8", errors="replace").splitlines()]


class WordTokenizer:
    """Word vocabulary of the training split by falling count (ties: first appearance); ``<unk>`` and
    ``<eos>`` always in it. Unknown words map to ``<unk>`` (WikiText's valid/test have none)."""

    name, unit = "words", "token"

    def __init__(self, words: Sequence[str]):
        self.words = list(words)
        self.index: Dict[str, int] = {w: i for i, w in enumerate(self.words)}
        self.vocab_size = len(self.words)

    @classmethod
    def fit(cls, train: bytes) -> "WordTokenizer":
        counts = Counter(w for line in word_lines(train) for w in line)
        for special in (UNK, EOS):
            counts.setdefault(special, 0)
        return cls([w for w, _ in counts.most_common()])

    def encode(self, data: bytes) -> torch.Tensor:
        unk = self.index[UNK]
        ids = np.fromiter((self.index.get(w, unk) for line in word_lines(data) for w in line), dtype=np.int64)
        return torch.from_numpy(ids)

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.words[int(i)] for i in ids).replace(f" {EOS} ", "\n").replace(EOS, "\n")

    def to_dict(self) -> dict:
        return {"name": self.name, "words": self.words}


def _sentencepiece():
    try:
        import sentencepiece  # noqa: F401  (optional dependency)
    except ImportError:
        raise ConfigError("env.tokenizer=sentencepiece needs the optional package sentencepiece, which is not "
                          "installed: pip install sentencepiece (or choose env.tokenizer=bytes | characters | "
                          "words)") from None
    return sentencepiece


class SentencePieceTokenizer:
    """Subwords of a SentencePiece unigram model (``model`` holds the serialised model proto)."""

    name, unit = "sentencepiece", "token"

    def __init__(self, model: bytes):
        spm = _sentencepiece()
        self.model = model
        self.processor = spm.SentencePieceProcessor(model_proto=model)
        self.vocab_size = int(self.processor.get_piece_size())

    @classmethod
    def fit(cls, train: bytes, vocab_size: int, cache_dir: Path) -> "SentencePieceTokenizer":
        """Train on the training split once; the model is cached in ``cache_dir`` under a hash of the text
        and the vocabulary size, so later runs on the same split load it."""
        spm = _sentencepiece()
        key = hashlib.sha256(train[:1 << 24] + str(len(train)).encode() + str(vocab_size).encode()).hexdigest()[:16]
        cache_dir = Path(cache_dir).expanduser()
        path = cache_dir / f"spm-{vocab_size}-{key}.model"
        if not path.is_file():
            cache_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory() as tmp:
                text = Path(tmp) / "train.txt"
                text.write_bytes(train)
                spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(Path(tmp) / "spm"),
                                               vocab_size=vocab_size, model_type="unigram", character_coverage=1.0,
                                               input_sentence_size=2_000_000, shuffle_input_sentence=True,
                                               hard_vocab_limit=False)
                os.replace(Path(tmp) / "spm.model", path)
        return cls(path.read_bytes())

    def encode(self, data: bytes) -> torch.Tensor:
        ids: List[int] = []
        for line in data.decode("utf-8", errors="replace").splitlines(keepends=True):
            ids.extend(self.processor.encode(line))
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> str:
        return self.processor.decode([int(i) for i in ids])

    def to_dict(self) -> dict:
        return {"name": self.name, "model": self.model.hex()}


def fit_tokenizer(name: str, train: bytes, vocab_size: int = 8000, cache_dir: Optional[Path] = None):
    """The tokeniser ``name`` (one of ``TOKENIZERS``) fitted to the training split ``train``."""
    if name == "bytes":
        return ByteTokenizer()
    if name == "characters":
        return CharTokenizer.fit(train)
    if name == "words":
        return WordTokenizer.fit(train)
    if name == "sentencepiece":
        return SentencePieceTokenizer.fit(train, vocab_size, cache_dir or Path("~/.cache/metarl/sentencepiece"))
    raise ConfigError(f"env.tokenizer={name!r} is not valid; choose one of: {', '.join(TOKENIZERS)}")


def tokenizer_from_dict(d: dict):
    """The tokeniser ``to_dict`` described."""
    if d["name"] == "bytes":
        return ByteTokenizer()
    if d["name"] == "characters":
        return CharTokenizer(list(d["chars"]))
    if d["name"] == "words":
        return WordTokenizer(d["words"])
    if d["name"] == "sentencepiece":
        return SentencePieceTokenizer(bytes.fromhex(d["model"]))
    raise ConfigError(f"unknown tokenizer {d['name']!r} in tokenizer.json; known: {', '.join(TOKENIZERS)}")
