"""The encoder use of the Transformer (``causal=False``), padding hidden by resets, and every task config."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import metarl.configs
from metarl.cores import make
from metarl.engine.registry import TASKS
from metarl.supervised.sequence import SequenceClassifier
from metarl.testing import assert_close
from tests.supervised.helpers import config, train

ENV_DIR = Path(metarl.configs.__file__).parent / "env"
SEQUENCE_FAMILIES = ("formal", "chomsky", "ctlpp")  # the folders of sequence-classification presets (lm/, vqvae/,
# image/ have their own tests)
CONFIGS = sorted(p.relative_to(ENV_DIR).with_suffix("").as_posix() for family in SEQUENCE_FAMILIES
                 for p in (ENV_DIR / family).glob("*.yaml"))


@pytest.mark.parametrize("positional", ["sinusoidal", "rope", "relative", "alibi", "none"])
def test_causal_false_sees_later_steps_and_keeps_episodes_apart(positional):
    torch.manual_seed(0)
    kwargs = dict(d_model=12, num_layers=2, num_heads=3, d_ff=16, positional=positional, max_len=64)
    encoder = make("transformer", causal=False, **kwargs).double()
    causal = make("transformer", **kwargs).double()
    causal.load_state_dict(encoder.state_dict())
    x = torch.randn(2, 7, 12, dtype=torch.float64)
    changed = x.clone()
    changed[:, -1] = torch.randn(2, 12, dtype=torch.float64)
    # the causal core ignores a change at the last step for earlier steps; the encoder does not
    assert_close("causal prefix", causal(x)[0][:, :-1], causal(changed)[0][:, :-1], 1e-12)
    assert (encoder(x)[0][:, 0] - encoder(changed)[0][:, 0]).abs().max() > 1e-6
    # a reset splits episodes: the first 4 steps are computed as if alone, whatever follows
    reset = torch.zeros(2, 7, dtype=torch.bool)
    reset[:, 4] = True
    assert_close("episode before a reset", encoder(x[:, :4])[0], encoder(x, reset=reset)[0][:, :4], 1e-12)
    assert_close("episode after a reset", encoder(x[:, 4:])[0], encoder(x, reset=reset)[0][:, 4:], 1e-12)


def test_causal_false_needs_no_context():
    with pytest.raises(ValueError, match="causal"):
        make("transformer", d_model=12, num_layers=1, num_heads=3, causal=False, context=4)


@pytest.mark.parametrize("name", ["transformer_encoder", "lstm"])
def test_padding_is_invisible(name):
    """A row padded to a longer batch gets the same logits as alone (encoder: via a reset at the padding)."""
    torch.manual_seed(0)
    options = dict(causal=False, positional="rope") if name == "transformer_encoder" else {}
    core = make("transformer" if options else name, d_model=16, num_layers=2, num_heads=2, d_ff=32, **options)
    model = SequenceClassifier(vocab_size=5, num_classes=3, core=core).double()
    tokens = torch.randint(0, 4, (2, 9))
    tokens[0, 6:] = 4
    padded = model(tokens, lengths=torch.tensor([6, 9]))
    assert_close("row 0 alone", model(tokens[:1, :6]), padded[:1, :6], 1e-10)
    assert_close("row 1 alone", model(tokens[1:]), padded[1:], 1e-10)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_task_config_composes_and_builds(name):
    assert len(CONFIGS) == 8 + 15 + 3
    cfg = config(name)
    task = TASKS[cfg.env.family](cfg)
    batch = task.train_batch(1, torch.Generator().manual_seed(0))
    assert cfg.env.name == name.replace("/", "_") and batch.tokens.max() < task.data.vocab_size
    assert task.build_model()(batch.tokens, batch.lengths).shape[-1] == task.data.num_classes


def test_wrong_keys_and_non_causal_character_prediction_fail_at_start(tmp_path):
    with pytest.raises(Exception, match="langauge"):
        config("formal/parity", "env.langauge=dyck1")
    with pytest.raises(ValueError, match="causal"):
        train("formal/parity", "agent=encoder", "optim.steps=1")
