"""A sequence core as the prior over the codes of a trained VQ-VAE (``env=vq_prior/<dataset>``): the role of
the PixelCNN prior of van den Oord et al. (2017), played by any metarl core over the flattened code grid.

    images [N, C, H, W] --VQ-VAE encoder + quantiser (env.vqvae_checkpoint, frozen)--> codes [N, h, w]
        (h, w = H/4, W/4; encoded once per checkpoint and dataset, cached as .npz in env.cache_dir)
    one image = one sequence of L = h·w codes in raster order (row by row), after a start token:
        inputs  [s, c_0, ..., c_{L-2}]        targets [c_0, ..., c_{L-1}]
        s = K (one start token) or, with ``env.conditional``, K + the image's class (procgen: the game)
    the LM of metarl.supervised.lm (embedding -> core -> output layer over K + #start tokens), its loss
        (mean next-token cross-entropy + the core's auxiliary loss) and its evaluation of summed nll

Every image starts from the core's initial state (one image per batch row, no state carried across updates),
so the model is a proper density over whole code grids: nll = -log p(c_0..c_{L-1}) / L in nats per code.
Metrics: ``train/bits_per_code``; ``eval/valid/{nll, bits_per_code, perplexity, unigram_bits_per_code}``
over ``env.eval_images`` validation images (spread over the split), and the same as ``test/{valid,test}/...``
at the end on the model with the best ``valid/bits_per_code``. Baselines in ``data.json``: the uniform prior
(log2 K bits per code) and the unigram prior (the training codes' frequencies with add-one smoothing, its
cross-entropy on each split; also logged as ``unigram_bits_per_code``). The run folder gets ``samples.png``:
``env.sample_images`` code grids sampled from the prior (``env.temperature``, ``env.top_k``) and decoded by the
VQ-VAE's decoder (conditional: one row per class); ``scripts/sample_vq_prior.py`` does the same from a saved
prior.

Sampling feeds one token per call with the carried state (fast weights, LSTM state, the Transformer's
key/value cache; the Transformer's memory is the whole grid by default, ``env.memory``), so L calls per grid.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ...engine import StepOutput, Task, read_checkpoint, register_task
from ...errors import ConfigError, MissingPathError, UserError
from ..lm.streams import LMBatch
from ..lm.task import build_language_model, lm_loss, metrics_of, segment_nll
from .data import SPLITS, cache_folder, evaluation_subset, to_float
from .vqvae import VQVAE, VisionDataConfig, dataset_from_env, quantizer_options, save_grid

#: eval/test set names (the LM's) -> the image splits they read
SETS = {"train": "train", "valid": "val", "test": "test"}
#: run files of a VQ-VAE run, in the order a run folder given as env.vqvae_checkpoint is searched
VQVAE_FILES = ("best-val-reconstruction.pt", "checkpoint.pt")


@dataclass
class VQPriorConfig(VisionDataConfig):
    """``env=vq_prior/<dataset>``: a core as the autoregressive prior over a VQ-VAE's code grids."""

    name: str = "vq_prior"
    family: str = "vq_prior"
    vqvae_checkpoint: Optional[str] = None  # the VQ-VAE: an env=vqvae/<dataset> run folder (its best-val-reconstruction.pt, else checkpoint.pt) or checkpoint file
    conditional: bool = False  # the start token names the image's class (procgen: the game): p(codes | class)
    batch_size: int = 32  # images (sequences of h·w codes) per update
    eval_every: int = 250  # updates between evaluations of eval/valid/*
    eval_images: int = 1024  # images of each evaluation set (the first ones of the split)
    eval_batch_size: int = 64  # images per evaluation call
    memory: Optional[int] = None  # transformer: past steps each query attends to (default: the whole grid, h·w)
    tie_embeddings: bool = False  # the output layer's weight is the embedding matrix
    sample_images: int = 16  # code grids sampled into samples.png at the end
    temperature: float = 1.0  # sampling: softmax temperature (0: the most likely code)
    top_k: int = 0  # sampling: among the k most likely codes (0: all)
    sample_seed: int = 0  # sampling: seed


# ---------------------------------------------------------------------------------------------- the VQ-VAE
def vqvae_checkpoint_file(path: Optional[str]) -> Path:
    """The checkpoint file of ``env.vqvae_checkpoint`` (a file, or a run folder: ``VQVAE_FILES`` in order)."""
    if not path:
        raise ConfigError("env.vqvae_checkpoint is not set: train a VQ-VAE first (python -m metarl.train "
                          "env=vqvae/procgen) and pass its run folder, env.vqvae_checkpoint=runs/<run>")
    p = Path(path).expanduser()
    if p.is_dir():
        for name in VQVAE_FILES:
            if (p / name).is_file():
                return p / name
        raise MissingPathError(f"env.vqvae_checkpoint={path}: the folder has no {' or '.join(VQVAE_FILES)}; pass "
                               "the run folder of an env=vqvae/<dataset> run or one of its checkpoint files")
    if not p.is_file():
        raise MissingPathError(f"env.vqvae_checkpoint={path}: no such file or folder; pass the run folder of an "
                               "env=vqvae/<dataset> run (runs/<date>-vqvae_<dataset>-...) or its checkpoint file")
    return p


def load_vqvae(path) -> Tuple[VQVAE, dict]:
    """(the VQ-VAE in eval mode, its run's env config as a dict) of a checkpoint written by ``env=vqvae/*``."""
    payload = read_checkpoint(path)
    env = (payload.get("config") or {}).get("env") or {}
    if env.get("family") != "vqvae":
        raise UserError(f"{path} is not a checkpoint of an env=vqvae/<dataset> run (its env.family is "
                        f"{env.get('family')!r}); pass the VQ-VAE's run folder as env.vqvae_checkpoint")
    state = payload["model"]
    channels = state["encoder.net.0.weight"].shape[1]
    model = VQVAE(channels, env["hidden"], env["residual_hidden"], env["residual_layers"], env["embedding_dim"],
                  env["num_codes"], env["quantizer"], **quantizer_options(OmegaConf.create(env)))
    model.load_state_dict(state)
    return model.eval(), env


def file_digest(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@torch.no_grad()
def encode_images(vqvae: VQVAE, images: torch.Tensor, batch_size: int = 256, device="cpu") -> torch.Tensor:
    """uint8 images [N, C, H, W] -> codes long [N, H/4, W/4] (the quantiser's nearest codes, no update)."""
    was_training = vqvae.training
    vqvae.eval()
    try:
        parts = [vqvae.encode(to_float(chunk).to(device)).codes.cpu() for chunk in images.split(batch_size)]
    finally:
        vqvae.train(was_training)
    if not parts:
        return torch.zeros(0, images.shape[2] // 4, images.shape[3] // 4, dtype=torch.long)
    return torch.cat(parts)


# ---------------------------------------------------------------------------------------------- sequences
def code_sequences(codes: torch.Tensor, starts: torch.Tensor) -> LMBatch:
    """codes long [B, h, w], start tokens long [B] -> the LM batch of raster-order sequences (inputs: the start
    token and the first L - 1 codes; targets: the L codes)."""
    flat = codes.reshape(len(codes), -1)
    return LMBatch(torch.cat([starts.view(-1, 1), flat[:, :-1]], 1), flat)


def unigram_bits(train_codes: torch.Tensor, codes: torch.Tensor, num_codes: int) -> float:
    """Cross-entropy (bits per code) on ``codes`` of the add-one-smoothed code frequencies of ``train_codes``."""
    counts = torch.bincount(train_codes.reshape(-1), minlength=num_codes).double() + 1.0
    log_p = torch.log2(counts / counts.sum())
    return float(-log_p[codes.reshape(-1)].mean()) if codes.numel() else float("nan")


@torch.no_grad()
def sample_codes(model: nn.Module, starts: torch.Tensor, grid: Tuple[int, int], num_codes: int,
                 temperature: float = 1.0, top_k: int = 0, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Code grids long [n, h, w] sampled from ``model`` after the start tokens ``starts`` [n], in raster order,
    one token per call with the carried state. Only codes (ids < num_codes) are drawn; ``temperature`` 0:
    the most likely code; ``top_k`` > 0: among the k most likely."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        tokens, state, out = starts.to(device).view(-1, 1), None, []
        for _ in range(grid[0] * grid[1]):
            logits, state = model(tokens, state)
            last = logits[:, -1, :num_codes].float()
            if top_k > 0:
                kth = last.topk(min(top_k, num_codes), dim=-1).values[:, -1:]
                last = last.masked_fill(last < kth, float("-inf"))
            if temperature <= 0:
                code = last.argmax(-1)
            else:
                probs = torch.softmax(last / temperature, -1).cpu()
                code = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(device)
            out.append(code)
            tokens = code.view(-1, 1)
    finally:
        model.train(was_training)
    return torch.stack(out, 1).view(len(starts), *grid)


def sample_start_tokens(n: int, num_codes: int, num_classes: int, conditional: bool) -> Tuple[torch.Tensor, int]:
    """(start tokens [n], columns of the picture): conditional priors get n // classes images per class, a row each."""
    if not conditional:
        return torch.full((n,), num_codes, dtype=torch.long), int(math.ceil(math.sqrt(n)))
    per_class = max(1, n // num_classes)
    return num_codes + torch.arange(num_classes).repeat_interleave(per_class), per_class


@torch.no_grad()
def draw_samples(prior: nn.Module, vqvae: VQVAE, path: Path, n: int, grid: Tuple[int, int], num_classes: int,
                 conditional: bool, temperature: float = 1.0, top_k: int = 0, seed: int = 0) -> Path:
    """``n`` code grids sampled from ``prior``, decoded by ``vqvae`` into one PNG grid at ``path``."""
    num_codes = vqvae.quantizer.num_codes
    starts, columns = sample_start_tokens(n, num_codes, num_classes, conditional)
    generator = torch.Generator().manual_seed(seed)
    codes = sample_codes(prior, starts, grid, num_codes, temperature, top_k, generator)
    vqvae_device = next(vqvae.parameters()).device
    images = vqvae.eval().decode_codes(codes.to(vqvae_device)).clamp(-0.5, 0.5) + 0.5
    return save_grid(images, path, columns=columns)


# ---------------------------------------------------------------------------------------------- the task
class VQPrior(Task):
    """The prior task (module docstring). The model, the loss (``lm_loss``: the LM's, unchanged) and the nll
    sums are the LM's; this class supplies the code sequences, the evaluation and the pictures."""

    throughput_unit = "tokens"  # charts/tokens_per_s: codes (and start tokens) read
    carry_state = False  # every image starts from the initial state
    eval_sets = ["valid"]
    test_sets = ["valid", "test"]
    selection = {"valid/bits_per_code": "min"}
    unit = "token"  # the LM's nll/perplexity vocabulary; bits per code are added here

    def __init__(self, cfg: DictConfig):
        env = cfg.env
        for key in ("batch_size", "eval_every", "eval_images", "eval_batch_size", "sample_images"):
            if env[key] < 1:
                raise ConfigError(f"env.{key}={env[key]} must be positive")
        if env.memory is not None and env.memory < 1:
            raise ConfigError(f"env.memory={env.memory} must be positive (or null: the whole grid)")
        if env.top_k < 0:
            raise ConfigError(f"env.top_k={env.top_k} must be 0 (all codes) or positive")
        self.cfg, self.model = cfg, None
        self.vqvae_path = vqvae_checkpoint_file(env.vqvae_checkpoint).resolve()
        self.vqvae, self.vqvae_env = load_vqvae(self.vqvae_path)
        self.num_codes = int(self.vqvae.quantizer.num_codes)
        codes, labels, self.classes, self.cache_path = self._encoded(env)
        self.codes, self.labels = codes, labels
        self.grid = tuple(codes["train"].shape[1:])
        self.length = self.grid[0] * self.grid[1]
        self.num_classes = len(self.classes)
        self.memory = env.memory or self.length
        if len(codes["train"]) < 1:
            raise ConfigError(f"env.dataset={env.dataset} has no training images to learn a prior from")

    # -- data
    def _encoded(self, env):
        """({split: codes [N, h, w]}, {split: labels [N]}, class names, cache file): from the cache, else
        the dataset encoded by the VQ-VAE and cached."""
        fields = {k: env[k] for k in ("dataset", "root", "image_size", "channels", "val_fraction", "classes",
                                      "samples", "data_seed", "frames")}
        fields["games"] = list(env.games)
        key = hashlib.sha1(json.dumps([file_digest(self.vqvae_path), fields], sort_keys=True).encode()).hexdigest()
        path = cache_folder(env.cache_dir) / "codes" / f"codes-{key[:16]}.npz"
        if path.is_file():
            with np.load(path) as archive:
                codes = {s: torch.from_numpy(archive[f"{s}_codes"].astype(np.int64)) for s in SPLITS}
                labels = {s: torch.from_numpy(archive[f"{s}_labels"].astype(np.int64)) for s in SPLITS}
                classes = [str(c) for c in archive["classes"]]
            return codes, labels, classes, path
        data = dataset_from_env(env)
        channels, height, width = data.image_shape
        expected = self.vqvae.encoder.net[0].in_channels
        if channels != expected or height % 4 or width % 4:
            raise ConfigError(f"env.dataset={env.dataset} has {channels}x{height}x{width} images; the VQ-VAE in "
                              f"{self.vqvae_path} reads {expected} channels and sides that are multiples of 4: "
                              "use the dataset it was trained on")
        if env.dataset != self.vqvae_env.get("dataset"):
            print(f"[metarl] note: encoding {env.dataset} with a VQ-VAE trained on {self.vqvae_env.get('dataset')}")
        device = self.cfg.device
        self.vqvae.to(device)
        codes = {s: encode_images(self.vqvae, data.split(s).images, device=device) for s in SPLITS}
        self.vqvae.cpu()
        labels = {s: data.split(s).labels.long() for s in SPLITS}
        dtype = np.uint16 if self.num_codes <= 65536 else np.int64
        arrays = {f"{s}_codes": codes[s].numpy().astype(dtype) for s in SPLITS}
        arrays.update({f"{s}_labels": labels[s].numpy() for s in SPLITS})
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.npz")
        np.savez(tmp, classes=np.array(data.classes), **arrays)
        os.replace(tmp, path)
        return codes, labels, list(data.classes), path

    @property
    def vocab_size(self) -> int:
        """The K codes, then the start token (or one start token per class: ``env.conditional``)."""
        return self.num_codes + (self.num_classes if self.cfg.env.conditional else 1)

    def start_tokens(self, labels: torch.Tensor) -> torch.Tensor:
        if self.cfg.env.conditional:
            return self.num_codes + labels.long()
        return torch.full((len(labels),), self.num_codes, dtype=torch.long)

    def sequences(self, split: str, index: torch.Tensor) -> LMBatch:
        return code_sequences(self.codes[split][index], self.start_tokens(self.labels[split][index]))

    # -- the engine's Task
    def build_model(self) -> nn.Module:
        self.model = build_language_model(self.cfg.agent, self.vocab_size, self.memory, self.cfg.env.tie_embeddings)
        return self.model

    def train_batch(self, step: int, generator: torch.Generator) -> LMBatch:
        """``env.batch_size`` training images drawn uniformly (with replacement) by ``generator``."""
        index = torch.randint(0, len(self.codes["train"]), (self.cfg.env.batch_size,), generator=generator)
        return self.sequences("train", index)

    def loss(self, model: nn.Module, batch: LMBatch, state) -> StepOutput:
        out = lm_loss(model, batch, None, self.unit)  # the LM's loss; every image from the initial state
        out.metrics["bits_per_code"] = out.metrics["nll"] / math.log(2)
        out.state = None
        return out

    @torch.no_grad()
    def nll(self, model: nn.Module, split: str, images: Optional[int] = None) -> float:
        """Mean nll (nats per code) of ``model`` over ``images`` code grids spread over ``split`` (default: all)."""
        subset = evaluation_subset(len(self.codes[split]), images or len(self.codes[split]))
        total, count = torch.zeros((), dtype=torch.float64), 0
        for index in subset.split(self.cfg.env.eval_batch_size):
            summed, m, _ = segment_nll(model, self.sequences(split, index).to(self.cfg.device), None)
            total, count = total + summed.double().cpu(), count + m
        return float(total) / max(count, 1)

    def evaluate(self, model: nn.Module, name: str, progress: bool = False) -> Dict:
        split = SETS[name]
        nll = self.nll(model, split, self.cfg.env.eval_images)
        subset = evaluation_subset(len(self.codes[split]), self.cfg.env.eval_images)
        return {**metrics_of(nll, self.unit), "bits_per_code": nll / math.log(2),
                "unigram_bits_per_code": unigram_bits(self.codes["train"], self.codes[split][subset], self.num_codes)}

    # -- run files and pictures
    def manifest(self) -> dict:
        used = int((torch.bincount(self.codes["train"].reshape(-1), minlength=self.num_codes) > 0).sum())
        return {"vqvae_checkpoint": str(self.vqvae_path), "codes_cache": str(self.cache_path),
                "dataset": self.cfg.env.dataset, "classes": self.classes, "grid": list(self.grid),
                "sequence_length": self.length, "num_codes": self.num_codes, "vocab_size": self.vocab_size,
                "conditional": bool(self.cfg.env.conditional), "memory": self.memory,
                "images": {s: len(c) for s, c in self.codes.items()}, "train_codes_used": used,
                "uniform_bits_per_code": math.log2(self.num_codes),
                "unigram_bits_per_code": {s: unigram_bits(self.codes["train"], self.codes[s], self.num_codes)
                                          for s in SPLITS}}

    def prepare(self, run_dir: Path) -> None:
        """``data.json`` in the run folder: the VQ-VAE, the code grids, the uniform and unigram baselines."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "data.json").write_text(json.dumps(self.manifest(), indent=1))

    def pictures(self, run_dir: Path):
        """``samples.png``: ``env.sample_images`` code grids from the current prior, decoded by the VQ-VAE."""
        env = self.cfg.env
        path = draw_samples(self.model, self.vqvae, Path(run_dir) / "samples.png", env.sample_images, self.grid,
                            self.num_classes, env.conditional, env.temperature, env.top_k, env.sample_seed)
        return [path]


register_task("vq_prior", VQPriorConfig)(VQPrior)


# ---------------------------------------------------------------------------------------------- a saved prior
def load_prior(path, vqvae_path: Optional[str] = None, device="cpu") -> Tuple[nn.Module, VQVAE, dict]:
    """(prior model, VQ-VAE, its data.json or the rebuilt task's manifest) of a checkpoint of an
    ``env=vq_prior/*`` run; ``vqvae_path`` overrides the VQ-VAE the run used."""
    path = Path(path)
    payload = read_checkpoint(path)
    cfg = payload.get("config") or {}
    if cfg.get("env", {}).get("family") != "vq_prior":
        raise UserError(f"{path} is not a checkpoint of an env=vq_prior/<dataset> run")
    saved = path.parent / "data.json"
    if saved.is_file():
        info = json.loads(saved.read_text())
    else:  # rebuild the task (codes from the cache, or encoded again) for its manifest
        info = VQPrior(OmegaConf.create(cfg)).manifest()
    if vqvae_path is None:
        saved_path = info["vqvae_checkpoint"]  # absolute, as the run resolved it; else as the run's config says
        vqvae_path = saved_path if Path(saved_path).is_file() else cfg["env"]["vqvae_checkpoint"]
    vqvae, _ = load_vqvae(vqvae_checkpoint_file(str(vqvae_path)))
    if vqvae.quantizer.num_codes != info["num_codes"]:
        raise UserError(f"the VQ-VAE {vqvae_path} has {vqvae.quantizer.num_codes} codes, the prior {path} was "
                        f"trained on {info['num_codes']}: pass the VQ-VAE its run used (--vqvae)")
    model = build_language_model(cfg["agent"], info["vocab_size"], info["memory"], cfg["env"]["tie_embeddings"])
    model.load_state_dict(payload["model"])
    return model.to(device).eval(), vqvae.to(device), info
