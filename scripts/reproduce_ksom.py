"""Reproduce the KSOM paper's VQ-VAE comparison at CPU size: EMA-VQ (N = 1), EMA-VQ (N = 0), KSOM with the
hard and with the Gaussian neighbourhood (N = 0), on the generated glyphs (``env=vqvae/glyphs``), several seeds.

Irie, Csordás & Schmidhuber, "Topological Neural Discrete Representation Learning à la Kohonen": the KSOM
trains faster early on, gives topographic codes (grid neighbours are close), and is robust where EMA-VQ with
the initial count N = 0 fails (codes that get no write at the start are lost).

Per run: the final test reconstruction error, the first evaluated update whose validation error is within
1.1x of the best validation error any run of that seed reached (convergence speed), dead codes and
perplexity on the test set, and the topography score (mean distance between grid-neighbour codes over that
between all pairs, on the live codes). Writes docs/results/ksom.{md,json,png}.

    python scripts/reproduce_ksom.py                      # 4 variants x 3 seeds x 600 updates (~10 min, 1 thread)
    python scripts/reproduce_ksom.py --steps 200 --seeds 0   # a quick look
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List

import torch

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"

VARIANTS = {  # name -> env overrides
    "EMA (N=1)": ["env.quantizer=ema", "env.initial_count=1.0"],
    "EMA (N=0)": ["env.quantizer=ema", "env.initial_count=0.0"],
    "KSOM hard (N=0)": ["env.quantizer=ksom", "env.neighbourhood=hard", "env.initial_count=0.0"],
    "KSOM Gaussian (N=0)": ["env.quantizer=ksom", "env.neighbourhood=gaussian", "env.initial_count=0.0"],
}


@dataclass
class Args:
    """Command-line arguments (each has a --flag of the same name)."""

    steps: int = 600  # updates per run
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])  # seeds of model and data order
    eval_every: int = 50  # updates between validation evaluations
    eval_images: int = 512  # validation / test images evaluated
    num_codes: int = 64  # codebook size
    grid_dim: int = 1  # KSOM grid: 1-D or 2-D
    threads: int = 1  # torch threads
    out: str = str(RESULTS)  # folder of ksom.{md,json,png}
    from_json: str = ""  # rebuild the report from this ksom.json instead of training


def parse_args() -> Args:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Args()
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--seeds", type=int, nargs="+", default=defaults.seeds)
    parser.add_argument("--eval-every", dest="eval_every", type=int, default=defaults.eval_every)
    parser.add_argument("--eval-images", dest="eval_images", type=int, default=defaults.eval_images)
    parser.add_argument("--num-codes", dest="num_codes", type=int, default=defaults.num_codes)
    parser.add_argument("--grid-dim", dest="grid_dim", type=int, default=defaults.grid_dim, choices=(1, 2))
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--out", default=defaults.out)
    parser.add_argument("--from-json", dest="from_json", default="")
    return Args(**vars(parser.parse_args()))


def one_run(args: Args, variant: str, seed: int) -> Dict:
    """Train one VQ-VAE; returns its validation curve and final test metrics (with the live-code topography)."""
    from metarl.engine.logging import read_metrics
    from metarl.supervised.vision.data import to_float
    from metarl.supervised.vision.vqvae import VQVAETask
    from metarl.layers.quantizers import topography_score
    from metarl.train import compose_config, run

    overrides = ["env=vqvae/glyphs", f"seed={seed}", f"optim.steps={args.steps}", f"env.eval_every={args.eval_every}",
                 f"env.eval_images={args.eval_images}", f"env.num_codes={args.num_codes}", f"env.grid_dim={args.grid_dim}",
                 "progress=false", "checkpoint_minutes=1000", f"threads={args.threads}", *VARIANTS[variant]]
    with tempfile.TemporaryDirectory() as folder:
        started = time.time()
        cfg = compose_config(*overrides)
        metrics = run(cfg, Path(folder))
        rows = read_metrics(Path(folder))
        curve = [(row["step"], row["eval/val/reconstruction"]) for row in rows if "eval/val/reconstruction" in row]
        # the topography of the live codes (the dead ones of EMA with N = 0 sit far away and would dominate)
        task = VQVAETask(cfg)
        model = task.build_model()
        payload = torch.load(Path(folder) / "best-val-reconstruction.pt", weights_only=True)
        model.load_state_dict(payload["model"])
        model.eval()
        with torch.no_grad():
            codes = model(to_float(task.data.test.images[: args.eval_images]))[1].codes.unique()
        live = topography_score(model.quantizer.codebook, model.quantizer.coordinates, codes)
        seconds = time.time() - started
    return {"variant": variant, "seed": seed, "curve": curve, "seconds": seconds,
            "test_reconstruction": metrics["test/test/reconstruction"], "dead_codes": metrics["test/test/dead_codes"],
            "perplexity": metrics["test/test/perplexity"], "topography_all": metrics["test/test/topography"],
            "topography_live": live, "overrides": overrides}


def first_within(curve, target: float):
    for step, value in curve:
        if value <= target:
            return step
    return None


def mean_std(values):
    values = [v for v in values if v is not None and v == v]
    if not values:
        return "—"
    t = torch.tensor(values, dtype=torch.float64)
    return f"{t.mean():.4g} ± {t.std():.2g}" if len(values) > 1 else f"{t.mean():.4g}"


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    if args.from_json:  # rebuild the report from the runs of an earlier call
        saved = json.loads(Path(args.from_json).read_text())
        runs, wall = saved["runs"], saved["wall_seconds"]
        args = Args(**{**saved["args"], "out": args.out, "from_json": args.from_json})
    else:
        runs = []
        for seed in args.seeds:
            for variant in VARIANTS:
                result = one_run(args, variant, seed)
                runs.append(result)
                print(f"{variant:22s} seed {seed}: test reconstruction {result['test_reconstruction']:.4f}, dead codes "
                      f"{result['dead_codes']:.0f}, topography {result['topography_live']:.3f} "
                      f"({result['seconds']:.0f} s)", flush=True)
        wall = time.time() - started
    report(args, runs, wall)


def report(args: Args, runs: List[Dict], wall: float) -> None:
    """Convergence columns from the validation curves, then the table, ksom.json, ksom.png and ksom.md."""
    for seed in args.seeds:
        mine = [r for r in runs if r["seed"] == seed]
        best = min(v for r in mine for _, v in r["curve"])  # within 1.1x of the best of this seed's runs
        ema = min(v for r in mine if r["variant"] == "EMA (N=1)" for _, v in r["curve"])  # EMA (N=1)'s best
        for r in mine:
            r["steps_to_1.1x_best"] = first_within(r["curve"], 1.1 * best)
            r["steps_to_ema1_best"] = first_within(r["curve"], ema)
    header = ["quantiser", "test reconstruction", "updates to EMA (N=1)'s best val", "updates to 1.1x best val",
              "dead codes (of %d)" % args.num_codes, "perplexity", "topography (live codes)"]
    keys = ("test_reconstruction", "steps_to_ema1_best", "steps_to_1.1x_best", "dead_codes", "perplexity",
            "topography_live")
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    summary = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        cells = [mean_std([r[k] for r in mine]) for k in keys]
        for column, key in ((1, "steps_to_ema1_best"), (2, "steps_to_1.1x_best")):
            never = sum(r[key] is None for r in mine)
            if never:
                cells[column] += f" ({never} of {len(mine)} never)"
        summary[variant] = cells
        table.append("| " + " | ".join([variant] + cells) + " |")
    print("\n".join(table))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ksom.json").write_text(json.dumps({"args": {k: v for k, v in asdict(args).items() if k not in ("out", "from_json")}, "wall_seconds": wall, "runs": runs,
                                               "summary": {v: dict(zip(header[1:], c)) for v, c in summary.items()}},
                                              indent=1, default=float))
    plot(runs, out / "ksom.png")
    (out / "ksom.md").write_text(REPORT.format(
        command=f"python scripts/reproduce_ksom.py --steps {args.steps} --seeds {' '.join(map(str, args.seeds))}",
        minutes=wall / 60, threads=args.threads, num_codes=args.num_codes, grid_dim=args.grid_dim, steps=args.steps,
        seeds=args.seeds, eval_every=args.eval_every, eval_images=args.eval_images, table="\n".join(table)))
    print(f"wrote {out / 'ksom.md'}, {out / 'ksom.json'}, {out / 'ksom.png'} ({wall / 60:.1f} min)")


REPORT = """# KSOM vs EMA-VQ in a CPU-sized VQ-VAE

`{command}` — {minutes:.1f} min of training and evaluation on {threads} thread(s) of a shared 2-core machine.

VQ-VAE of van den Oord et al. (residual encoder/decoder, `env=vqvae/glyphs`: hidden 32, {num_codes} codes of
16 dimensions on a {grid_dim}-D grid, codebook initialised N(0, 1) as in the reference, AdamW lr 1e-3, batch 32) on
the generated glyphs (10 characters x 200 distortions, 28x28), {steps} updates, seeds {seeds}. Decay 0.99, ε 1e-5,
commitment 0.25; KSOM shrink 0.1 per update (the reference's `count_unit`), Gaussian base 10. Mean ± std over
seeds. The validation error is evaluated every {eval_every} updates on {eval_images} images. "Updates to EMA
(N=1)'s best val": the first evaluation at which a run is as good as the best validation error EMA (N=1) reached
in the same seed (convergence speed); "updates to 1.1x best": the first evaluation within 1.1x of the best
validation error of any run of the seed. The test metrics are on the model with the best validation error;
topography = mean distance of grid-neighbour codes / mean distance of all pairs, over the codes the test set uses
(1: no order; lower: topographic; "—" when fewer than two grid neighbours are alive).

{table}

Paper's claims (Irie, Csordás & Schmidhuber) against what was measured (the figures quoted below are those of the
committed run, 600 updates, seeds 0 1 2; the first seed's four runs shared the CPU with other jobs, so the wall
time is an upper bound, about 11 min alone):

- *KSOM trains faster early on.* Here KSOM (hard and Gaussian) reaches EMA (N=1)'s best validation error well
  before EMA does (column 3), and ends with a lower test error — so the direction matches, but the main cause at
  this size is the next point: EMA keeps only a handful of codes.
- *EMA with N = 0 fails, KSOM is robust to it.* Matches, and at this size even EMA with N = 1 collapses: the
  encoder's first outputs are small next to the N(0, 1) codebook, so only 3-4 codes are ever written and the rest
  stay dead (60 of 64); with N = 0 the unwritten codes jump to about e/ε and are lost for good (62 of 64). The
  SOM's neighbour writes pull the codes next to the winners in, and keep 24-40 of 64 alive (the Gaussian, which
  writes to more codes, the most).
- *Topographic codes.* Matches: grid neighbours of the live KSOM codes are 0.33 (hard) and 0.42 (Gaussian) times as far
  apart as random pairs;
  EMA has too few live codes that are grid neighbours to score.

Differences from the paper: a tiny model, dataset and budget (minutes on a CPU, not CIFAR-10 / ImageNet with 512
codes over 30k+ updates), and one learning rate. `ksom.json` holds every run's validation curve (`ksom.png` plots
them); `--from-json docs/results/ksom.json` rebuilds this report without training.
"""


def plot(runs, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    colours = dict(zip(VARIANTS, ["tab:blue", "tab:red", "tab:green", "tab:purple"]))
    for r in runs:
        steps, values = zip(*r["curve"])
        ax.plot(steps, values, color=colours[r["variant"]], alpha=0.7,
                label=r["variant"] if r["seed"] == runs[0]["seed"] else None)
    ax.set_yscale("log")
    ax.set_xlabel("update")
    ax.set_ylabel("validation reconstruction (MSE)")
    ax.legend()
    ax.set_title("VQ-VAE on glyphs: EMA-VQ vs KSOM")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
