"""The reproduction scripts' plumbing at a tiny budget: each run goes through metarl.train, and the report
(<name>.md with the table and the paper's claim, <name>.json with every run, <name>.png) lands in --out."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load(name: str):
    sys.path.insert(0, str(SCRIPTS))  # the scripts import their shared helper, scripts/repro_lib.py
    try:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPTS))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def report(out: Path, name: str, runs: int) -> dict:
    md = (out / f"{name}.md").read_text()
    assert "What was measured" in md and "The paper's claim" in md and "|---|" in md
    assert (out / f"{name}.png").stat().st_size > 0
    data = json.loads((out / f"{name}.json").read_text())
    assert len(data["runs"]) == runs and data["wall_seconds"] > 0 and data["claim"]
    return data


def test_formal(tmp_path):
    load("reproduce_formal").main(["--languages", "parity", "--models", "lt", "lstm", "--seeds", "0", "--steps", "2",
                                   "--eval-batches", "1", "--d-model", "16", "--out", str(tmp_path)])
    data = report(tmp_path, "formal", runs=2)
    assert {r["model"] for r in data["runs"]} == {"lt", "lstm"}
    assert any("LT on parity" in line for line in data["comparison"])


def test_rpe(tmp_path):
    load("reproduce_rpe").main(["--tasks", "reverse_string", "--encodings", "rope", "--steps", "2", "--layers", "1",
                                "--d-model", "16", "--test-step", "400", "--test-batch", "2", "--out", str(tmp_path)])
    data = report(tmp_path, "rpe", runs=2)  # rope with and without randomization
    assert {r["randomized"] for r in data["runs"]} == {False, True}


def test_ctlpp(tmp_path):
    load("reproduce_ctlpp").main(["--overlaps", "2", "8", "--seeds", "0", "--steps", "2", "--eval-every", "2",
                                  "--train-size", "300", "--test-size", "20", "--d-model", "16", "--out",
                                  str(tmp_path)])
    data = report(tmp_path, "ctlpp", runs=4)  # r, a, s at two overlaps
    assert [(r["variant"], r["overlap"]) for r in data["runs"]] == [("r", None), ("a", None), ("s", 2), ("s", 8)]
    s = [r for r in data["runs"] if r["variant"] == "s"]
    assert all("test_unseen_pairs" in r and 0 <= r["score"] <= 1 for r in s)
