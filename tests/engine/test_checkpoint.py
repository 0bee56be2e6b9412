"""Checkpoints: atomic, weights_only, RNG states, and one clear message for files that are not ours."""
import random

import numpy as np
import pytest
import torch
from torch import nn

from metarl.engine.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from metarl.errors import CheckpointError, MissingPathError


def test_round_trip_with_rng_states(tmp_path):
    model, other = nn.Linear(3, 2), nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    path = save_checkpoint(tmp_path / "c.pt", model, opt, counters={"step": 5}, config={"a": 1},
                           best={"val/accuracy": 0.5}, extra={"state": (torch.ones(2),)})
    assert not list(tmp_path.glob("*.tmp"))  # written to a temporary file, then renamed
    expected = torch.rand(3), np.random.rand(), random.random()
    raw = torch.load(path, weights_only=True)
    assert raw["counters"] == {"step": 5} and raw["config"] == {"a": 1} and raw["best"] == {"val/accuracy": 0.5}
    opt2 = torch.optim.Adam(other.parameters())
    load_checkpoint(path, other, opt2, restore_rng=True)
    assert torch.equal(torch.rand(3), expected[0]) and np.random.rand() == expected[1] and random.random() == expected[2]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    assert opt2.state_dict()["state"][0]["step"] == 1


def test_files_that_are_not_checkpoints_get_one_message(tmp_path):
    good = save_checkpoint(tmp_path / "good.pt", nn.Linear(2, 2), counters={"step": 1})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    junk = tmp_path / "junk.pt"
    junk.write_text("junk")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    for path in (truncated, junk, foreign):
        with pytest.raises(CheckpointError, match=f"{path.name} is not a metarl checkpoint"):
            read_checkpoint(path)
    with pytest.raises(MissingPathError, match="missing.pt does not exist"):
        read_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="different model"):
        load_checkpoint(good, nn.Linear(3, 2))
