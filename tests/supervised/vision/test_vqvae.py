"""The VQ-VAE: shapes, a short training run on the generated glyphs through the configs (reconstruction
well below the variance of the pixels, the metrics and the pictures in the run folder), every quantiser."""
import json
import tempfile
from pathlib import Path

import pytest
import torch

from metarl.supervised.vision.data import evaluation_subset, load_dataset, to_float
from metarl.supervised.vision.vqvae import VQVAE
from metarl.train import compose_config, run

torch.set_num_threads(1)


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (64, 3)])
@pytest.mark.parametrize("quantizer", ["vq", "ema", "ksom"])
def test_shapes(size, channels, quantizer):
    torch.manual_seed(0)
    model = VQVAE(channels, hidden=16, residual_hidden=8, embedding_dim=4, num_codes=12, quantizer=quantizer)
    x = torch.rand(2, channels, size, size) - 0.5
    reconstruction, out = model(x)
    assert reconstruction.shape == x.shape and out.codes.shape == (2, size // 4, size // 4)
    assert model.decode_codes(out.codes).shape == x.shape
    (reconstruction.pow(2).mean() + out.loss).backward()
    assert model.encoder.net[0].weight.grad.abs().sum() > 0  # the straight-through gradient reaches the encoder


def test_vqvae_learns_to_reconstruct_glyphs_and_draws_pictures():
    run_dir = Path(tempfile.mkdtemp())
    cfg = compose_config("env=vqvae/glyphs", "optim.steps=150", "env.eval_every=75", "env.eval_images=256",
                         "progress=false", "checkpoint_minutes=100")
    metrics = run(cfg, run_dir)
    test = load_dataset("glyphs", samples=200).test.images
    test = test[evaluation_subset(len(test), 256)]  # the images the evaluation reads (spread over the classes)
    variance = to_float(test).var().item()  # the error of predicting the mean pixel
    assert metrics["test/test/reconstruction"] < 0.4 * variance, (metrics["test/test/reconstruction"], variance)
    assert metrics["test/test/perplexity"] > 2 and 0 <= metrics["test/test/dead_codes"] < 64
    assert "eval/val/topography" in metrics
    for name in ("reconstructions.png", "codebook.png", "codes.png", "curves.png", "best-val-reconstruction.pt"):
        assert (run_dir / name).is_file(), name
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/val/dead_codes" in row for row in logged)


def test_preset_has_the_reference_sizes():
    env = compose_config("env=vqvae/cifar10", "env.root=/data").env
    assert (env.hidden, env.residual_hidden, env.residual_layers, env.embedding_dim, env.num_codes) == (128, 32, 2, 64, 512)
    assert (env.quantizer, env.neighbourhood, env.shrink, env.decay, env.initial_count) == ("ksom", "hard", 0.1, 0.99, 0.0)


def test_missing_dataset_exits_with_a_message(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "metarl.train", "env=vqvae/cifar10", f"env.root={tmp_path}/none",
                             f"hydra.run.dir={tmp_path}/run"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "cifar10" in result.stderr and "env.root" in result.stderr
    assert "Traceback" not in result.stderr
