"""Sample code grids from a trained VQ prior (``env=vq_prior/<dataset>``) and decode them with its VQ-VAE.

    python scripts/sample_vq_prior.py runs/<run>/best-valid-bits_per_code.pt --n 16 --out samples.png \
        [--temperature 1.0] [--top-k 0] [--seed 0] [--vqvae <VQ-VAE run folder or checkpoint>] [--device cpu]

The grids are sampled in raster order, one code per call with the carried core state (h·w calls); a
conditional prior (``env.conditional=true``) draws ``n // classes`` images per class, one row each. The VQ-VAE
is the one the run used (its absolute path in the run's ``data.json``), or ``--vqvae``. Prints the PNG's path.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from metarl.errors import UserError
from metarl.supervised.vision.vq_prior import draw_samples, load_prior


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path,
                        help="best-valid-bits_per_code.pt or checkpoint.pt of an env=vq_prior run")
    parser.add_argument("--n", type=int, default=16, help="code grids to sample")
    parser.add_argument("--out", type=Path, default=Path("samples.png"), help="the PNG to write")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (0: the most likely code)")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k most likely codes (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the sampling")
    parser.add_argument("--vqvae", default=None, help="the VQ-VAE (run folder or checkpoint; default: the run's)")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.n < 1 or args.top_k < 0:
        print("[sample_vq_prior] error: --n must be positive and --top-k 0 or positive", file=sys.stderr)
        return 2
    try:
        prior, vqvae, info = load_prior(args.checkpoint, args.vqvae, args.device)
    except UserError as err:
        print(f"[sample_vq_prior] error: {err}", file=sys.stderr)
        return 2
    path = draw_samples(prior, vqvae, args.out, args.n, tuple(info["grid"]), len(info["classes"]),
                        info["conditional"], args.temperature, args.top_k, args.seed)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
