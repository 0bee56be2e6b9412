"""Reproduce (CPU-sized) randomized positional encodings (Ruoss et al., ACL 2023) on Chomsky-hierarchy tasks.

An encoder-only Transformer (``agent=encoder``: outputs read at appended empty tokens) is trained on input
lengths 1-40 and scored on 41-500 (mean accuracy over the test lengths), with each positional encoding with and
without randomization (L_max 2048): none, sin/cos, relative (Transformer-XL), RoPE, ALiBi and learned,
as in the paper, through ``python -m metarl.train env=chomsky/<task> agent=encoder``.
The paper reports that randomization raises the test score of every encoding on most tasks (e.g. reverse and
duplicate string), while no encoding solves parity. Prints the score table, writes ``results.json`` and
``rpe.png`` (test accuracy against length).

    python scripts/reproduce_rpe.py                     # the CPU-sized default (about two hours on 2 cores)
    python scripts/reproduce_rpe.py --tasks reverse_string --encodings rope --steps 300 --test-step 100
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from metarl.train import compose_config, run  # noqa: E402

TASKS = ["reverse_string", "duplicate_string", "parity_check", "binary_addition"]
# the paper's encodings, in its order: none, sin/cos, relative (Transformer-XL), RoPE, ALiBi, learned
ENCODINGS = ["none", "sinusoidal", "relative", "rope", "alibi", "learned"]
EXTRA_ENCODINGS = ["relative_bias"]  # metarl's learned scalar bias per distance (not in the paper)


def train_one(task: str, positional: str, randomized: bool, seed: int, args) -> dict:
    overrides = [f"env=chomsky/{task}", "agent=encoder", f"agent.options.positional={positional}",
                 f"agent.options.randomized={str(randomized).lower()}", f"agent.num_layers={args.layers}",
                 f"agent.d_model={args.d_model}", f"agent.d_ff={4 * args.d_model}", f"seed={seed}",
                 f"optim.steps={args.steps}", f"env.eval_every={args.steps}", f"optim.lr={args.lr}",
                 f"env.batch_size={args.batch_size}", f"env.test_length_step={args.test_step}",
                 f"env.test_batch_size={args.test_batch}", "progress=false"]
    cfg = compose_config(*overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        return run(cfg, Path(run_dir))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--encodings", nargs="+", default=ENCODINGS, choices=ENCODINGS + EXTRA_ENCODINGS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=1000, help="updates per run (the paper: 2M)")
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--test-step", type=int, default=46, help="test every k-th length of 41-500 (paper: 1)")
    parser.add_argument("--test-batch", type=int, default=16, help="sequences per test length")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("results/reproduce_rpe"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    variants = [(p, r) for p in args.encodings for r in ((False,) if p == "none" else (False, True))]

    results = []
    for task in args.tasks:
        for positional, randomized in variants:
            for seed in args.seeds:
                start = time.time()
                m = train_one(task, positional, randomized, seed, args)
                row = {"task": task, "positional": positional, "randomized": randomized, "seed": seed,
                       "train_accuracy": m["test/valid/accuracy"], "score": m["test/test/accuracy"],
                       "per_length": m["test_results"]["test"]["per_length"], "seconds": round(time.time() - start, 1)}
                results.append(row)
                print(f"{task:18s} {positional:10s} randomized={randomized!s:5s} seed {seed}: in-distribution "
                      f"{row['train_accuracy']:.3f}, test score {row['score']:.3f} ({row['seconds']:.0f} s)", flush=True)

    def mean(task, positional, randomized, key="score"):
        key_of = (task, positional, randomized)
        values = [r[key] for r in results if (r["task"], r["positional"], r["randomized"]) == key_of]
        return sum(values) / len(values)

    print(f"\nTest score (%): mean accuracy over lengths 41-500 (every {args.test_step}th), in-distribution accuracy in "
          f"brackets; {args.steps} updates, {args.layers} layers, d_model {args.d_model}, seeds {args.seeds}")
    print(f"{'encoding':22s}" + "".join(f"{t:>24s}" for t in args.tasks))
    for positional, randomized in variants:
        name = positional + (" (randomized)" if randomized else "")
        print(f"{name:22s}" + "".join(f"{100 * mean(t, positional, randomized):15.1f} "
                                      f"({100 * mean(t, positional, randomized, 'train_accuracy'):5.1f})"
                                      for t in args.tasks))
    (args.out / "results.json").write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                                                       "runs": results}, indent=1))

    fig, axes = plt.subplots(1, len(args.tasks), figsize=(4.5 * len(args.tasks), 3.5), squeeze=False)
    for ax, task in zip(axes[0], args.tasks):
        for index, (positional, randomized) in enumerate(variants):
            runs = [r for r in results if (r["task"], r["positional"], r["randomized"]) == (task, positional, randomized)]
            lengths = sorted(int(n) for n in runs[0]["per_length"])
            curve = [sum(r["per_length"][n] for r in runs) / len(runs) for n in lengths]
            ax.plot(lengths, curve, "-" if randomized else "--", color=f"C{args.encodings.index(positional)}",
                    label=positional + (" rand." if randomized else ""))
        ax.axvline(40, color="gray", linewidth=0.5)
        ax.set_ylim(0, 1.02)
        ax.set_title(task)
        ax.set_xlabel("input length")
    axes[0][0].set_ylabel("accuracy")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(args.out / "rpe.png", dpi=120)
    print(f"wrote {args.out / 'results.json'} and {args.out / 'rpe.png'}")


if __name__ == "__main__":
    main()
