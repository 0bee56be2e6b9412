"""VQ-VAE (van den Oord et al. 2017) with a choice of quantiser: straight-through VQ, EMA-VQ or the Kohonen
SOM of Irie, Csordás & Schmidhuber (``env=vqvae/<dataset>``).

    images [B, C, H, W] in [-0.5, 0.5] -> Encoder -> 1x1 conv -> z [B, D, H/4, W/4]
    z -> quantiser (metarl.layers.quantizers, over the D channels of each position) -> z_q (straight-through)
    z_q -> Decoder -> reconstruction [B, C, H, W]
    loss = mean squared reconstruction error + the quantiser's loss (commitment; VQ: + codebook)

Encoder: conv 4x4/2 (hidden/2) - ReLU - conv 4x4/2 (hidden) - ReLU - conv 3x3 (hidden) - residual stack;
Decoder: conv 3x3 (hidden) - residual stack - transposed conv 4x4/2 (hidden/2) - ReLU - transposed conv
4x4/2 (C); a residual block is x + conv1x1(ReLU(conv3x3(ReLU(x)))) without biases, the stack ends in a ReLU.
These are the reference's layers (IDSIA/kohonen-vae ``models/vq_vae.py``, itself after zalandoresearch's
pytorch-vq-vae): its sizes (hidden 128, residual hidden 32, 2 residual layers, 512 codes of 64 dimensions,
commitment 0.25, decay 0.99) are the ``env=vqvae/cifar10`` preset; the schema's defaults are CPU-small.

Metrics: ``train/reconstruction``, ``train/perplexity``; ``eval/val/{reconstruction, perplexity,
dead_codes, topography}`` over ``env.eval_images`` validation images spread evenly over the split (perplexity
and dead codes of the code histogram over the whole set; topography over the codes that set uses, NaN when
fewer than two grid neighbours are among them), the same as ``test/test/...`` at the end on the model with the
best validation reconstruction. The run folder gets ``reconstructions.png`` (inputs above their reconstructions),
``codebook.png`` (the codebook projected on its first two principal components, grid neighbours joined) and
``codes.png`` (each code decoded as a constant latent map, laid out on its grid).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from ...engine import StepOutput, Task, TaskConfig, register_task
from ...errors import check_choice
from ...layers.quantizers import NEIGHBOURHOODS, QUANTIZERS, codebook_stats, make_quantizer, topography_score
from .data import DATASETS, ImageData, evaluation_subset, load_dataset, to_float


@dataclass
class VisionDataConfig(TaskConfig):
    """The dataset fields shared by the vision tasks (``metarl.supervised.vision.data``)."""

    kind: str = "supervised"  # the engine loop (runner=local or ray); it calls Task.pictures at the end
    dataset: str = "glyphs"  # glyphs | procgen | cifar10 | mnist | fashion_mnist | imagefolder
    root: Optional[str] = None  # the dataset folder (cifar10, mnist, fashion_mnist, imagefolder)
    image_size: Optional[int] = None  # imagefolder: images are resized to this (glyphs: default 28)
    channels: int = 3  # imagefolder: 1 (grey) or 3 (RGB)
    val_fraction: float = 0.1  # cifar10, mnist, imagefolder without val/: held-out part of the training set
    cache_dir: Optional[str] = None  # procgen: where the generated frames are cached (default ~/.cache/metarl/vision)
    classes: int = 10  # glyphs: number of characters
    samples: int = 100  # glyphs: images per character (70 / 15 / 15 % train / val / test)
    data_seed: int = 0  # glyphs, procgen: seed of the generated data
    games: List[str] = field(default_factory=lambda: ["coinrun", "starpilot"])  # procgen: the games
    frames: int = 2048  # procgen: frames per split and game
    eval_images: int = 1024  # images of each evaluation set (spread evenly over the split: every class)


@dataclass
class VQVAEConfig(VisionDataConfig):
    """``env=vqvae/<dataset>``: the VQ-VAE and its quantiser (defaults CPU-small; the presets set the rest)."""

    name: str = "vqvae"
    family: str = "vqvae"
    batch_size: int = 32
    eval_every: int = 200
    hidden: int = 32  # encoder/decoder channels (reference: 128)
    residual_hidden: int = 16  # channels inside a residual block (reference: 32)
    residual_layers: int = 2  # residual blocks per stack
    embedding_dim: int = 16  # code dimension D (reference: 64)
    num_codes: int = 64  # codebook size K (reference: 512)
    quantizer: str = "ksom"  # vq | ema | ksom
    neighbourhood: str = "hard"  # ksom: none | hard | gaussian
    grid_dim: int = 1  # ksom (and the topography score of all): 1-D or 2-D grid of codes
    shrink: float = 0.1  # ksom: neighbourhood shrink per update (the reference's count_unit)
    gaussian_base: float = 10.0  # ksom gaussian: initial width
    decay: float = 0.99  # ema, ksom: γ
    epsilon: float = 1e-5  # ema, ksom: Laplace smoothing
    initial_count: float = 0.0  # ema, ksom: N, the running count's start (the reference's 0; 1 keeps EMA's codes)
    commitment_cost: float = 0.25  # beta
    pictures: int = 16  # images in reconstructions.png


class Residual(nn.Module):
    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.block = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1, bias=False),
                                   nn.ReLU(), nn.Conv2d(hidden, channels, 1, bias=False))

    def forward(self, x):
        return x + self.block(x)


def residual_stack(channels: int, hidden: int, layers: int) -> nn.Sequential:
    return nn.Sequential(*[Residual(channels, hidden) for _ in range(layers)], nn.ReLU())


class Encoder(nn.Module):
    """[B, C, H, W] -> [B, hidden, H/4, W/4]."""

    def __init__(self, in_channels: int, hidden: int, residual_hidden: int, residual_layers: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, hidden // 2, 4, stride=2, padding=1), nn.ReLU(),
                                 nn.Conv2d(hidden // 2, hidden, 4, stride=2, padding=1), nn.ReLU(),
                                 nn.Conv2d(hidden, hidden, 3, padding=1),
                                 residual_stack(hidden, residual_hidden, residual_layers))

    def forward(self, x):
        return self.net(x)


class Decoder(nn.Module):
    """[B, D, h, w] -> [B, out_channels, 4h, 4w]."""

    def __init__(self, in_channels: int, hidden: int, residual_hidden: int, residual_layers: int, out_channels: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1),
                                 residual_stack(hidden, residual_hidden, residual_layers),
                                 nn.ConvTranspose2d(hidden, hidden // 2, 4, stride=2, padding=1), nn.ReLU(),
                                 nn.ConvTranspose2d(hidden // 2, out_channels, 4, stride=2, padding=1))

    def forward(self, z):
        return self.net(z)


class VQVAE(nn.Module):
    """images [B, C, H, W] (H, W multiples of 4) -> (reconstruction, QuantizerOutput with codes [B, H/4, W/4])."""

    def __init__(self, channels: int, hidden: int = 128, residual_hidden: int = 32, residual_layers: int = 2,
                 embedding_dim: int = 64, num_codes: int = 512, quantizer: str = "ksom", **quantizer_options):
        super().__init__()
        self.encoder = Encoder(channels, hidden, residual_hidden, residual_layers)
        self.pre_quantizer = nn.Conv2d(hidden, embedding_dim, 1)
        self.quantizer = make_quantizer(quantizer, num_codes, embedding_dim, **quantizer_options)
        self.decoder = Decoder(embedding_dim, hidden, residual_hidden, residual_layers, channels)

    def encode(self, x: torch.Tensor):
        z = self.pre_quantizer(self.encoder(x)).permute(0, 2, 3, 1)  # [B, h, w, D]
        return self.quantizer(z)

    def decode(self, quantized: torch.Tensor) -> torch.Tensor:
        """quantized [B, h, w, D] -> images [B, C, 4h, 4w]."""
        return self.decoder(quantized.permute(0, 3, 1, 2))

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes long [B, h, w] -> images."""
        return self.decode(self.quantizer.lookup(codes))

    def forward(self, x: torch.Tensor):
        out = self.encode(x)
        return self.decode(out.quantized), out


def quantizer_options(env) -> Dict:
    """The keyword arguments of ``make_quantizer`` that ``env`` sets for its quantiser."""
    options = {"commitment_cost": env.commitment_cost, "grid_dim": env.grid_dim}
    if env.quantizer in ("ema", "ksom"):
        options.update(decay=env.decay, epsilon=env.epsilon, initial_count=env.initial_count)
    if env.quantizer == "ksom":
        options.update(neighbourhood=env.neighbourhood, shrink=env.shrink, base=env.gaussian_base)
    return options


@lru_cache(maxsize=4)
def _cached_dataset(name, root, image_size, channels, val_fraction, cache_dir, classes, samples, seed, games, frames):
    return load_dataset(name, root, image_size, channels, val_fraction, cache_dir, classes, samples, seed,
                        list(games), frames)


def dataset_from_env(env) -> ImageData:
    """The dataset of a vision env config (loaded once per process for the same fields)."""
    check_choice("env.dataset", env.dataset, DATASETS)
    return _cached_dataset(env.dataset, env.root, env.image_size, env.channels, env.val_fraction, env.cache_dir,
                           env.classes, env.samples, env.data_seed, tuple(env.games), env.frames)


def sample_images(images: torch.Tensor, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """batch_size images drawn uniformly (with replacement) from uint8 ``images``, as floats."""
    index = torch.randint(0, len(images), (batch_size,), generator=generator)
    return to_float(images[index])


class VQVAETask(Task):
    """A VQ-VAE on the engine loop (see the module docstring for the metrics)."""

    eval_sets = ["val"]
    test_sets = ["test"]
    selection = {"val/reconstruction": "min"}

    def __init__(self, cfg: DictConfig):
        env = cfg.env
        check_choice("env.quantizer", env.quantizer, QUANTIZERS)
        check_choice("env.neighbourhood", env.neighbourhood, NEIGHBOURHOODS)
        check_choice("env.grid_dim", env.grid_dim, (1, 2))
        self.cfg, self.env = cfg, env
        self.data = dataset_from_env(env)
        self.model: Optional[VQVAE] = None

    def build_model(self) -> nn.Module:
        env = self.env
        self.model = VQVAE(self.data.image_shape[0], env.hidden, env.residual_hidden, env.residual_layers,
                           env.embedding_dim, env.num_codes, env.quantizer, **quantizer_options(env))
        return self.model

    def train_batch(self, step: int, generator: torch.Generator) -> torch.Tensor:
        return sample_images(self.data.train.images, self.env.batch_size, generator)

    def loss(self, model: nn.Module, batch: torch.Tensor, state) -> StepOutput:
        reconstruction, out = model(batch)
        mse = F.mse_loss(reconstruction, batch)
        metrics = {"reconstruction": mse.item(), "perplexity": out.stats["perplexity"]}
        metrics.update({f"losses/{k}": v.item() for k, v in out.losses.items()})
        return StepOutput(mse + out.loss, count=len(batch), metrics=metrics)

    def evaluate(self, model: nn.Module, name: str, progress: bool = False) -> Dict:
        images = self.data.split(name).images
        images = images[evaluation_subset(len(images), self.env.eval_images)]
        device = self.cfg.device
        squared, pixels = 0.0, 0
        counts = torch.zeros(self.env.num_codes, dtype=torch.long)
        for chunk in images.split(256):
            x = to_float(chunk).to(device)
            reconstruction, out = model(x)
            squared += (reconstruction - x).pow(2).sum().item()
            pixels += x.numel()
            counts += torch.bincount(out.codes.reshape(-1).cpu(), minlength=self.env.num_codes)
        stats = codebook_stats(counts)
        live = torch.nonzero(counts > 0).squeeze(1).to(model.quantizer.codebook.device)
        topography = topography_score(model.quantizer.codebook.detach(), model.quantizer.coordinates, live)
        return {"reconstruction": squared / max(pixels, 1), "perplexity": stats["perplexity"],
                "dead_codes": stats["dead_codes"], "topography": topography}

    @torch.no_grad()
    def pictures(self, run_dir: Path) -> List[Path]:
        """reconstructions.png, codebook.png and codes.png of the current model in ``run_dir``."""
        model = self.model
        was_training = model.training
        model.eval()
        try:
            device = next(model.parameters()).device
            test = self.data.test.images
            spread = torch.linspace(0, len(test) - 1, min(self.env.pictures, len(test))).long()  # across classes
            x = to_float(test[spread]).to(device)
            reconstruction, _ = model(x)
            paths = [save_grid(torch.cat([x, reconstruction.clamp(-0.5, 0.5)]) + 0.5, run_dir / "reconstructions.png",
                               columns=len(x))]
            used = torch.cat([model(to_float(part).to(device))[1].codes.reshape(-1)
                              for part in test[evaluation_subset(len(test), self.env.eval_images)].split(256)]).unique()
            paths.append(plot_codebook(model.quantizer, run_dir / "codebook.png", used.cpu()))
            h = max(1, self.data.image_shape[1] // 4)
            grid = model.quantizer.grid_shape
            codes = torch.arange(model.quantizer.num_codes, device=device).view(-1, 1, 1).expand(-1, h, h)
            decoded = torch.cat([model.decode_codes(part) for part in codes.split(256)]).clamp(-0.5, 0.5) + 0.5
            columns = grid[1] if len(grid) == 2 else int(math.ceil(math.sqrt(len(decoded))))
            paths.append(save_grid(decoded, run_dir / "codes.png", columns=columns))
            return paths
        finally:
            model.train(was_training)


def save_grid(images: torch.Tensor, path: Path, columns: int, pad: int = 1) -> Path:
    """images float [N, C, H, W] in [0, 1] -> one PNG of a grid with ``columns`` per row."""
    from PIL import Image

    images = images.detach().float().cpu().clamp(0, 1)
    N, C, H, W = images.shape
    rows = int(math.ceil(N / columns))
    canvas = torch.ones(C, rows * (H + pad) + pad, columns * (W + pad) + pad)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        canvas[:, pad + r * (H + pad): pad + r * (H + pad) + H, pad + c * (W + pad): pad + c * (W + pad) + W] = image
    array = (canvas * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array[..., 0] if C == 1 else array).save(path)
    return path


def plot_codebook(quantizer, path: Path, live: Optional[torch.Tensor] = None) -> Path:
    """The codebook on its first two principal components, each code joined to its grid neighbours; with
    ``live`` (code indices) only those codes (dead codes of EMA with N = 0 sit far away and would fill the plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    codebook = quantizer.codebook.detach().float().cpu()
    keep = torch.arange(len(codebook)) if live is None else live.long()
    codebook = codebook[keep]
    centred = codebook - codebook.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    xy = (centred @ v[:2].t()).numpy() if codebook.shape[1] >= 2 else np.stack([centred[:, 0], 0 * centred[:, 0]], 1)
    grid = quantizer.grid_distances.cpu()[keep][:, keep]
    fig, ax = plt.subplots(figsize=(5, 5))
    i, j = torch.nonzero(torch.triu((grid - 1).abs() < 1e-6, 1), as_tuple=True)
    for a, b in zip(i.tolist(), j.tolist()):
        ax.plot(xy[[a, b], 0], xy[[a, b], 1], color="0.6", linewidth=0.6)
    ax.scatter(xy[:, 0], xy[:, 1], c=keep.numpy(), cmap="viridis", s=10, zorder=3)
    score = topography_score(quantizer.codebook.detach().cpu(), quantizer.coordinates.cpu(), keep)
    ax.set_title(f"{len(keep)} of {quantizer.num_codes} codes, {'x'.join(map(str, quantizer.grid_shape))} grid "
                 f"(topography {score:.2f})", fontsize=10)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


register_task("vqvae", VQVAEConfig)(VQVAETask)

