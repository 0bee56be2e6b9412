"""A core as the prior over VQ-VAE codes (``env=vq_prior/<dataset>``): encoding with a VQ-VAE trained a few
updates (code grids of the right shape and range, cached; their decoding is the VQ-VAE's own reconstruction),
a prior that learns (held-out nll well below the uniform and the unigram priors), sampling that follows the
carried state, the PNG of samples from the run and from the script, and the procgen preset end to end."""
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from metarl.engine import save_checkpoint
from metarl.errors import ConfigError
from metarl.supervised.lm.task import build_language_model
from metarl.supervised.vision.data import load_dataset, to_float
from metarl.supervised.vision.vq_prior import (VQPrior, code_sequences, encode_images, load_vqvae, sample_codes,
                                               vqvae_checkpoint_file)
from metarl.supervised.vision.vqvae import VQVAE
from metarl.train import compose_config, run

torch.set_num_threads(1)
SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "sample_vq_prior.py"
CODES = 32
TINY_LSTM = ["agent=lstm", "agent.d_model=32", "progress=false", "checkpoint_minutes=100"]


@pytest.fixture(scope="module")
def glyph_vqvae(tmp_path_factory):
    """The run folder of a tiny VQ-VAE trained 40 updates on the glyphs (7x7 grids of 32 codes)."""
    folder = tmp_path_factory.mktemp("vqvae")
    run(compose_config("env=vqvae/glyphs", "env.samples=20", "env.hidden=16", "env.residual_hidden=8",
                       "env.embedding_dim=8", f"env.num_codes={CODES}", "optim.steps=40", "env.eval_every=40",
                       "env.eval_images=64", "env.pictures=4", "progress=false", "checkpoint_minutes=100"), folder)
    return folder


def pixel_size(columns: int, rows: int, side: int) -> tuple:
    return (columns * (side + 1) + 1, rows * (side + 1) + 1)  # save_grid: a 1-pixel border around each image


def test_encoding_gives_code_grids_whose_decoding_is_the_reconstruction(glyph_vqvae):
    vqvae, env = load_vqvae(vqvae_checkpoint_file(str(glyph_vqvae)))  # the run folder: its best checkpoint
    assert env["family"] == "vqvae" and not vqvae.training
    images = load_dataset("glyphs", samples=20).val.images[:24]
    codes = encode_images(vqvae, images, batch_size=10)
    assert codes.shape == (24, 7, 7) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < CODES and len(codes.unique()) >= 2
    with torch.no_grad():
        reconstruction, out = vqvae(to_float(images))
        assert torch.equal(out.codes, codes)
        torch.testing.assert_close(vqvae.decode_codes(codes), reconstruction, rtol=1e-5, atol=1e-5)
    batch = code_sequences(codes, torch.full((24,), CODES))  # raster order after the start token K
    assert batch.inputs.shape == batch.targets.shape == (24, 49)
    assert (batch.inputs[:, 0] == CODES).all() and torch.equal(batch.inputs[:, 1:], batch.targets[:, :-1])
    assert batch.targets[5, 3 * 7 + 4] == codes[5, 3, 4]


def test_prior_learns_and_draws_samples(glyph_vqvae, tmp_path):
    cfg = compose_config("env=vq_prior/glyphs", f"env.vqvae_checkpoint={glyph_vqvae}", "env.samples=20",
                         f"env.cache_dir={tmp_path / 'cache'}", "optim.steps=80", "optim.warmup_steps=10",
                         "optim.lr=3e-3", "env.eval_every=40", "env.eval_images=64", "env.sample_images=6", *TINY_LSTM)
    metrics = run(cfg, tmp_path / "run")
    info = json.loads((tmp_path / "run" / "data.json").read_text())
    assert info["grid"] == [7, 7] and info["vocab_size"] == CODES + 1 and info["uniform_bits_per_code"] == 5.0
    nll, unigram = metrics["test/test/nll"], metrics["test/test/unigram_bits_per_code"] * math.log(2)
    assert nll < 0.45 * math.log(CODES), (nll, math.log(CODES))  # far below the uniform prior
    assert nll < unigram - 0.15, (nll, unigram)  # and below the code frequencies: the prior uses the context
    assert metrics["test/test/bits_per_code"] == pytest.approx(nll / math.log(2))
    assert (tmp_path / "run" / "best-valid-bits_per_code.pt").is_file()
    assert Image.open(tmp_path / "run" / "samples.png").size == pixel_size(3, 2, 28)  # 6 grids, 3 a row
    assert len(list((tmp_path / "cache" / "codes").glob("codes-*.npz"))) == 1
    cached = VQPrior(cfg).codes["test"]  # read from the cache: the test images encoded by the VQ-VAE
    vqvae, _ = load_vqvae(vqvae_checkpoint_file(str(glyph_vqvae)))
    assert torch.equal(cached, encode_images(vqvae, load_dataset("glyphs", samples=20).test.images))

    spec = importlib.util.spec_from_file_location("sample_vq_prior", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "x.png"
    assert script.main([str(tmp_path / "run" / "best-valid-bits_per_code.pt"), "--n", "4", "--out", str(out),
                        "--top-k", "5", "--temperature", "0.8"]) == 0
    assert Image.open(out).size == pixel_size(2, 2, 28)
    assert script.main([str(tmp_path / "nowhere.pt"), "--out", str(out)]) == 2


def test_sampling_follows_the_carried_state_and_draws_codes_only():
    torch.manual_seed(0)
    agent = compose_config("env=vq_prior/procgen", "agent=lstm", "agent.d_model=16").agent
    model = build_language_model(agent, vocab_size=9 + 2, memory=12)  # 9 codes, 2 start tokens
    starts = torch.tensor([9, 10, 10])
    greedy = sample_codes(model, starts, (3, 4), num_codes=9, temperature=0)
    assert greedy.shape == (3, 3, 4) and int(greedy.max()) < 9
    batch = code_sequences(greedy, starts)  # the whole grid read at once predicts the same codes
    logits, _ = model(batch.inputs)
    assert torch.equal(logits[..., :9].argmax(-1), batch.targets)
    assert torch.equal(sample_codes(model, starts, (3, 4), 9, temperature=1.0, top_k=1), greedy)
    drawn = sample_codes(model, starts, (3, 4), 9, generator=torch.Generator().manual_seed(0))
    assert int(drawn.max()) < 9 and not torch.equal(drawn, greedy)


def test_procgen_preset_runs_end_to_end(tmp_path):
    """env=vq_prior/procgen through metarl.train: 64x64 frames -> 16x16 codes of a (here untrained) VQ-VAE,
    an SRWM prior conditioned on the game, two updates, samples.png with one row per game."""
    with pytest.raises(ConfigError, match="env.vqvae_checkpoint"):
        VQPrior(compose_config("env=vq_prior/procgen"))
    vq_cfg = compose_config("env=vqvae/procgen", "env.hidden=8", "env.residual_hidden=4", "env.embedding_dim=4",
                            "env.num_codes=16")
    torch.manual_seed(0)
    vqvae = VQVAE(3, 8, 4, 2, 4, 16, "ksom")
    checkpoint = save_checkpoint(tmp_path / "vqvae" / "checkpoint.pt", vqvae, counters={"step": 0}, config=vq_cfg)
    cfg = compose_config("env=vq_prior/procgen", f"env.vqvae_checkpoint={checkpoint}", "env.frames=8",
                         f"env.cache_dir={tmp_path / 'cache'}", "env.conditional=true", "env.batch_size=2",
                         "agent=srwm", "agent.d_model=16", "agent.num_layers=1", "agent.num_heads=2", "agent.d_ff=32",
                         "agent.options.d_head=8", "optim.steps=2", "env.eval_every=2", "env.eval_images=4",
                         "env.sample_images=2", "progress=false", "checkpoint_minutes=100")
    metrics = run(cfg, tmp_path / "run")
    assert metrics["step"] == 2 and 0 < metrics["test/test/bits_per_code"] < 10
    info = json.loads((tmp_path / "run" / "data.json").read_text())
    assert info["grid"] == [16, 16] and info["vocab_size"] == 16 + 2 and info["classes"] == ["coinrun", "starpilot"]
    assert Image.open(tmp_path / "run" / "samples.png").size == pixel_size(1, 2, 64)
