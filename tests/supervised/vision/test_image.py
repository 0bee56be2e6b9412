"""Image classification through the cores: patches in reading order, and a learning test on the glyphs."""
import tempfile
from pathlib import Path

import torch

from metarl.supervised.vision.image import patches
from metarl.train import compose_config, run

torch.set_num_threads(1)


def test_patches_in_reading_order():
    images = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    p = patches(images, 2)
    assert p.shape == (2, 6, 12)
    torch.testing.assert_close(p[1, 4].view(3, 2, 2), images[1, :, 2:4, 2:4])  # row 1, column 1
    assert torch.equal(patches(images, 1)[0, 7], images[0, :, 1, 1])  # pixels


def test_lstm_classifies_glyph_patches():
    """10 classes with balanced test sets: without the image no model beats 0.1; the LSTM over 16 patches
    reaches 0.9 in 300 updates (measured 0.94)."""
    cfg = compose_config("env=image/glyphs", "agent=lstm", "agent.d_model=64", "agent.num_layers=1",
                         "optim.steps=300", "env.eval_every=150", "env.eval_images=512", "progress=false",
                         "checkpoint_minutes=100")
    metrics = run(cfg, Path(tempfile.mkdtemp()))
    assert metrics["test/test/accuracy"] > 0.8, metrics["test/test/accuracy"]


def test_conv4_baseline_and_last_readout_run():
    for extra in (["env.model=conv4"], ["agent=delta", "env.readout=last", "agent.num_heads=4"]):
        cfg = compose_config("env=image/glyphs", "agent.d_model=32", "agent.num_layers=1", "optim.steps=20",
                             "env.eval_every=20", "env.eval_images=64", "progress=false", *extra)
        metrics = run(cfg, Path(tempfile.mkdtemp()))
        assert 0.0 <= metrics["test/test/accuracy"] <= 1.0 and metrics["losses/total"] < 10
