"""``python -m metarl.train env=lm ...``: the presets compose and run, the run folder records the data, a
missing dataset exits with status 2, and a small model learns more than bigram statistics of the default corpus."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np

from metarl.supervised.lm.data import default_corpus
from metarl.train import compose_config, run

TINY = ["agent.d_model=16", "agent.num_layers=1", "agent.num_heads=2", "agent.d_ff=32", "env.batch_size=2",
        "env.unroll=16", "env.memory=16", "env.eval_every=2", "env.eval_tokens=300", "optim.steps=3",
        "progress=false", "threads=1"]


def train(tmp_path, *overrides):
    return run(compose_config(*overrides), tmp_path)


def test_default_corpus_with_a_moe_transformer_runs_and_records_its_data(tmp_path):
    final = train(tmp_path, "env=lm", "agent=transformer", "agent.ff=moe", "+agent.ff_options.num_experts=4",
                  "+agent.ff_options.top_k=2", "env.train_tokens=5000", *TINY)
    for key in ("eval/valid/bpc", "test/valid/bpc", "test/test/bpc", "train/bpc", "losses/aux", "charts/tokens_per_s"):
        assert math.isfinite(final[key]), key
    assert (tmp_path / "best-valid-bpc.pt").is_file() and (tmp_path / "checkpoint.pt").is_file()
    manifest = json.loads((tmp_path / "data.json").read_text())
    assert manifest["corpus"] == "default" and manifest["tokens"]["train"] == 5000
    assert {"name", "bytes", "split"} <= set(manifest["files"][0]) and manifest["python"]
    assert json.loads((tmp_path / "tokenizer.json").read_text()) == {"name": "bytes"}
    assert compose_config("env=lm", "agent=moe").agent.options.positional == "relative"


def test_enwik8_and_wikitext_presets_run_on_fixture_files(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    text = ("<page><title>Anarchism</title> text [[link]] " * 60).encode()
    (root / "enwik8").write_bytes(text)
    n = len(text)
    final = train(tmp_path / "enwik8", "env=lm/enwik8", f"env.root={root}", "agent=lstm", *TINY)
    assert math.isfinite(final["test/test/bpc"])
    manifest = json.loads((tmp_path / "enwik8" / "data.json").read_text())
    assert manifest["files"] == [{"name": "enwik8", "bytes": n, "split": "train+valid+test"}]
    assert manifest["split_bytes"] == {"train": n - 2 * round(0.05 * n), "valid": round(0.05 * n),
                                       "test": round(0.05 * n)}
    for split in ("train", "valid", "test"):
        (root / f"wiki.{split}.tokens").write_text(" = Valkyria = \n\n the game began <unk> . \n" * 40)
    final = train(tmp_path / "wiki", "env=lm/wikitext2", f"env.root={root}", "agent=delta", *TINY)
    assert final["test/test/perplexity"] > 1 and "eval/valid/perplexity/best" in final


def test_missing_dataset_exits_with_status_2_naming_the_files(tmp_path):
    result = subprocess.run([sys.executable, "-m", "metarl.train", "env=lm/enwik8", f"env.root={tmp_path}",
                             f"hydra.run.dir={tmp_path / 'run'}", "progress=false"],
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "enwik8.zip" in result.stderr and "Traceback" not in result.stderr


def bigram_entropy(data: bytes) -> float:
    """H(X_t | X_{t-1}) in bits of the empirical byte-bigram distribution of ``data``: the cross-entropy of the
    best bigram model of that very text, so a bigram model cannot score below it on any part of the corpus."""
    a = np.frombuffer(data, np.uint8).astype(np.int64)
    counts = np.bincount(a[:-1] * 256 + a[1:], minlength=65536).reshape(256, 256).astype(float)
    conditional = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    seen = counts > 0
    return float(-(counts[seen] * np.log2(conditional[seen])).sum() / counts.sum())


def test_a_small_lstm_beats_the_bigram_entropy_of_the_default_corpus(tmp_path):
    corpus = default_corpus()
    bigram = bigram_entropy(b"\n".join(corpus.splits[s] for s in ("train", "valid", "test")))
    assert 3.0 < bigram < 4.0
    final = train(tmp_path, "env=lm", "agent=lstm", "agent.d_model=128", "agent.num_layers=1", "env.unroll=64",
                  "env.eval_tokens=40000", "env.eval_every=800", "optim.steps=800", "optim.lr=4e-3",
                  "optim.warmup_steps=20", "progress=false", "threads=1", "seed=0")
    # measured: 2.81 bpc against a bigram entropy of 3.52 bits
    assert final["eval/valid/bpc"] < bigram - 0.4, (final["eval/valid/bpc"], bigram)


def test_resume_continues_the_streams_and_the_carried_state_exactly(tmp_path):
    common = ["env=lm", "agent=delta", *TINY, "env.train_tokens=3000", "env.eval_every=100", "log_every=1",
              "optim.schedule=constant", "optim.warmup_steps=0"]  # the same learning rates in both runs
    whole = train(tmp_path / "whole", *common, "optim.steps=6")
    train(tmp_path / "first", *common, "optim.steps=3")
    resumed = train(tmp_path / "resumed", *common, "optim.steps=6", f"resume={tmp_path / 'first' / 'checkpoint.pt'}")
    assert resumed["losses/total"] == whole["losses/total"] and resumed["test/test/bpc"] == whole["test/test/bpc"]
