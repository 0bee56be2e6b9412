"""LM data: readers on small fixture files in each on-disk layout, tokenisers, the default corpus split
(stable, disjoint), contiguous streams."""
from __future__ import annotations

import sys
import zipfile

import pytest
import torch

from metarl.errors import ConfigError, MissingPathError
from metarl.supervised.lm import data, tokenizers
from metarl.supervised.lm.streams import Streams

WIKI = "\n = Title = \n\n the cat sat on the <unk> . \n"


def write_wikitext(folder, suffix="tokens"):
    folder.mkdir(parents=True, exist_ok=True)
    for split, extra in (("train", " a dog ran . \n"), ("valid", " the cat . \n"), ("test", " a cat ran . \n")):
        (folder / f"wiki.{split}.{suffix}").write_text(WIKI + extra)


@pytest.mark.parametrize("corpus", ["enwik8", "text8"])
@pytest.mark.parametrize("zipped", [False, True])
def test_hutter_layout_is_split_in_file_order(tmp_path, corpus, zipped):
    raw = bytes(range(256)) * 4 if corpus == "enwik8" else b"anarchism originated as a term " * 40
    raw = raw[:1000]
    if zipped:
        with zipfile.ZipFile(tmp_path / f"{corpus}.zip", "w") as z:
            z.writestr(corpus, raw)
    else:
        (tmp_path / corpus).write_bytes(raw)
    c = data.read_corpus(corpus, str(tmp_path))
    assert [len(c.splits[s]) for s in data.SPLITS] == [900, 50, 50]  # 90M / 5M / 5M of the real file
    assert c.splits["train"] + c.splits["valid"] + c.splits["test"] == raw
    assert c.files[0]["bytes"] == 1000 and c.manifest()["split_bytes"]["valid"] == 50
    c = data.read_corpus(corpus, str(tmp_path), split=[0.8, 0.1, 0.1])
    assert [len(c.splits[s]) for s in data.SPLITS] == [800, 100, 100]


@pytest.mark.parametrize("corpus, sub, suffix", [("wikitext103", "", "tokens"), ("wikitext103", "wikitext-103", "tokens"),
                                                 ("wikitext2", "wikitext-2", "tokens"), ("wikitext2", "wikitext-2-raw", "raw")])
def test_wikitext_layouts(tmp_path, corpus, sub, suffix):
    write_wikitext(tmp_path / sub if sub else tmp_path, suffix)
    c = data.read_corpus(corpus, str(tmp_path))
    assert c.splits["valid"].decode().endswith(" the cat . \n") and c.info["layout"] == suffix
    assert sorted(f["split"] for f in c.files) == ["test", "train", "valid"]


@pytest.mark.parametrize("corpus, names", [("enwik8", "enwik8"), ("text8", "text8"),
                                           ("wikitext103", "wiki.train.tokens"), ("wikitext2", "wiki.valid.tokens")])
def test_missing_root_or_files_name_what_is_expected(tmp_path, corpus, names):
    with pytest.raises(MissingPathError, match="env.root"):
        data.read_corpus(corpus, None)
    with pytest.raises(MissingPathError, match="no such folder"):
        data.read_corpus(corpus, str(tmp_path / "absent"))
    (tmp_path / "wiki.train.tokens").write_text("only one split")
    with pytest.raises(MissingPathError, match=names.replace(".", r"\.")):
        data.read_corpus(corpus, str(tmp_path))


def test_default_corpus_split_is_stable_and_disjoint():
    # fixed by the names alone (SHA-256), on every machine and run
    assert data.split_of("stdlib/os.py", 0.05, 0.05) == "train"
    assert data.split_of("stdlib/ipaddress.py", 0.05, 0.05) == "test"
    assert data.split_of("pydoc_data/assert", 0.05, 0.05) == "train"
    entries = data.default_entries()
    assert len(entries) > 100 and any(n.startswith("pydoc_data/") for n, _ in entries)
    first, second = data.default_corpus(), data.default_corpus()
    assert first.splits == second.splits and first.files == second.files
    names = [f["name"] for f in first.files]
    assert len(names) == len(set(names)) == len(entries)  # every entry in exactly one split
    by_split = {s: {f["name"] for f in first.files if f["split"] == s} for s in data.SPLITS}
    assert all(by_split[s] for s in data.SPLITS)
    assert sum(f["bytes"] for f in first.files) + len(entries) - 3 == sum(len(v) for v in first.splits.values())
    content = dict(entries)
    for name in sorted(by_split["valid"])[:3]:  # an entry's text is in its own split only
        assert content[name] in first.splits["valid"] and content[name] not in first.splits["train"]
    # adding an entry moves no other entry: the split is a function of each name
    more = data.default_corpus(entries=entries + [("stdlib/zz_new.py", b"x = 1\n")])
    assert [f for f in more.files if f["name"] != "stdlib/zz_new.py"] == first.files


def test_tokenizers_round_trip():
    text = "héllo wörld\n".encode()
    byte = tokenizers.ByteTokenizer()
    assert byte.encode(text).tolist() == list(text) and byte.decode(byte.encode(text)) == text.decode()
    char = tokenizers.CharTokenizer.fit(text)
    ids = char.encode("hé!".encode())
    assert char.vocab_size == len(set(text.decode())) + 1 and ids[-1] == char.vocab_size - 1  # "!" is <unk>
    assert char.decode(char.encode(text)) == text.decode()
    words = tokenizers.WordTokenizer.fit(WIKI.encode())
    ids = words.encode(b" the dog \n")
    assert [words.words[i] for i in ids] == ["the", "<unk>", "<eos>"]
    assert words.words[0] == "<eos>"  # by falling count: one per line
    for tok in (byte, char, words):
        again = tokenizers.tokenizer_from_dict(tok.to_dict())
        assert again.encode(WIKI.encode()).tolist() == tok.encode(WIKI.encode()).tolist()


def test_sentencepiece_subwords_are_trained_cached_and_round_trip(tmp_path):
    pytest.importorskip("sentencepiece")  # in the dev extra; optional for users (the lm extra)
    train = (WIKI * 50).encode()
    tok = tokenizers.fit_tokenizer("sentencepiece", train, 30, tmp_path)
    cached = list(tmp_path.glob("spm-30-*.model"))
    assert len(cached) == 1 and tok.unit == "token" and 0 < tok.vocab_size <= 30
    assert tok.decode(tok.encode(b"the cat")) == "the cat"
    ids = tok.encode(WIKI.encode())
    assert ids.dtype == torch.long and len(ids) < len(WIKI.encode())  # subwords: fewer tokens than bytes
    stamp = cached[0].stat().st_mtime_ns
    again = tokenizers.fit_tokenizer("sentencepiece", train, 30, tmp_path)  # the cache is used, not retrained
    assert cached[0].stat().st_mtime_ns == stamp and again.encode(WIKI.encode()).tolist() == ids.tolist()
    restored = tokenizers.tokenizer_from_dict(tok.to_dict())  # what tokenizer.json holds
    assert restored.encode(WIKI.encode()).tolist() == ids.tolist()


def test_sentencepiece_missing_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # import sentencepiece -> ImportError
    with pytest.raises(ConfigError, match="pip install sentencepiece"):
        tokenizers.fit_tokenizer("sentencepiece", WIKI.encode(), 50, tmp_path)


@pytest.mark.parametrize("n, batch", [(2, 1), (50, 3), (64, 7), (97, 4)])
def test_padded_streams_score_every_token_once(n, batch):
    tokens = torch.arange(n) + 10
    streams = Streams(tokens, batch, pad=True)
    targets = []
    for i in range(streams.num_segments(5)):
        seg = streams.segment(i, 5)
        mask = torch.ones_like(seg.targets, dtype=torch.bool) if seg.mask is None else seg.mask
        targets += seg.targets[mask].tolist()
        assert (seg.targets[mask] == seg.inputs[mask] + 1).all()  # the target is the next token
    assert sorted(targets) == tokens[1:].tolist() and streams.num_targets == n - 1


def test_training_streams_are_contiguous():
    streams = Streams(torch.arange(100), 3)
    assert streams.length == 33 and streams.full_segments(10) == 3
    first, second = streams.segment(0, 10), streams.segment(1, 10)
    assert first.first and not second.first and first.mask is None
    assert (second.inputs[:, 0] == first.inputs[:, -1] + 1).all()  # row b continues where it stopped
    assert (first.inputs[1:, 0] == first.inputs[:-1, 0] + 33).all()  # rows are consecutive pieces of the text
    with pytest.raises(ConfigError, match="streams"):
        Streams(torch.arange(3), 5)
