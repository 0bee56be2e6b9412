"""Reproduce (CPU-sized) the formal-language comparison of Irie, Csordás & Schmidhuber (EMNLP 2023).

LT, DeltaNet, recurrent DeltaNet, SRWM and LSTM on parity and reset Dyck-1 (character prediction), trained on
lengths 1-50 (Bin0) and tested on 51-100 (Bin1), through ``python -m metarl.train env=formal/<language>``.
The paper reports that RecDelta and SRWM generalise on parity while LT does not, and that DeltaNet handles
reset Dyck-1 while LT does not. Prints the sequence accuracies, writes ``results.json`` and ``formal.png``.

The runs use the reference settings of the ``env=formal/<language>`` presets (IDSIA/fwp-formal-lang): each set of
allowed next symbols is one class of a cross-entropy (``env.loss=set_class``), reset Dyck-1 strings hold one
reset, the LT has no sum normalisation and the SRWM's W_q starts with std 0.01/√d_head. ``--root`` trains and tests
on the published .src/.tgt files (one folder per language: parity/, reset_dyck/, ...) instead of generated
strings. Model sizes, updates and learning rate are CPU-sized here (see the options), not the paper's.

    python scripts/reproduce_formal.py                       # ~20 minutes on 2 CPU cores
    python scripts/reproduce_formal.py --languages parity --models lt recdelta --seeds 0 --steps 500
    python scripts/reproduce_formal.py --root /data/formal-lang      # the published data of fwp-formal-lang
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

NAMES = {"lt": "LT", "delta": "DeltaNet", "recdelta": "RecDelta", "srwm": "SRWM", "lstm": "LSTM"}


def train_one(language: str, model: str, seed: int, args) -> dict:
    overrides = [f"env=formal/{language}", f"agent={model}", f"agent.d_model={args.d_model}",
                 f"agent.num_layers={args.layers}", f"agent.d_ff={4 * args.d_model}", f"seed={seed}",
                 f"optim.steps={args.steps}", f"env.eval_every={args.steps}", f"optim.lr={args.lr}",
                 f"env.batch_size={args.batch_size}", f"env.eval_batches={args.eval_batches}", "progress=false"]
    if model != "lstm":
        overrides.append(f"agent.num_heads={args.d_model // 16}")
    if args.root:
        overrides.append(f"env.root={args.root}")
    cfg = compose_config(*overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        return run(cfg, Path(run_dir))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--languages", nargs="+", default=["parity", "reset_dyck1"])
    parser.add_argument("--models", nargs="+", default=list(NAMES), choices=list(NAMES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, default=2000, help="updates per run")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batches", type=int, default=16, help="batches of 32 strings per bin")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these sizes)")
    parser.add_argument("--root", type=Path, default=None,
                        help="folder of the published .src/.tgt data (its subfolders parity/, reset_dyck/, ...); "
                             "default: generated strings")
    parser.add_argument("--out", type=Path, default=Path("results/reproduce_formal"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    results = []
    for language in args.languages:
        for model in args.models:
            for seed in args.seeds:
                start = time.time()
                m = train_one(language, model, seed, args)
                row = {"language": language, "model": model, "seed": seed, "seconds": round(time.time() - start, 1),
                       **{f"{b}_{k}": m[f"test/{b}/{k}"] for b in ("bin0", "bin1")
                          for k in ("sequence_accuracy", "accuracy")}}
                results.append(row)
                print(f"{language:12s} {NAMES[model]:9s} seed {seed}: Bin0 {row['bin0_sequence_accuracy']:.3f}  "
                      f"Bin1 {row['bin1_sequence_accuracy']:.3f}  ({row['seconds']:.0f} s)", flush=True)

    def mean(language, model, key):
        values = [r[key] for r in results if r["language"] == language and r["model"] == model]
        return sum(values) / len(values)

    print(f"\nSequence accuracy (%), mean over seeds {args.seeds}; {args.steps} updates, d_model {args.d_model}, "
          f"{args.layers} layer(s)")
    print(f"{'model':10s}" + "".join(f"{lang + ' Bin0':>20s}{lang + ' Bin1':>20s}" for lang in args.languages))
    for model in args.models:
        print(f"{NAMES[model]:10s}" + "".join(f"{100 * mean(lang, model, 'bin0_sequence_accuracy'):20.1f}"
                                             f"{100 * mean(lang, model, 'bin1_sequence_accuracy'):20.1f}"
                                             for lang in args.languages))
    (args.out / "results.json").write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                                                       "runs": results}, indent=1))

    fig, axes = plt.subplots(1, len(args.languages), figsize=(5 * len(args.languages), 3.5), squeeze=False)
    for ax, language in zip(axes[0], args.languages):
        x = range(len(args.models))
        for offset, (b, label) in enumerate((("bin0", "Bin0 (1-50)"), ("bin1", "Bin1 (51-100)"))):
            heights = [mean(language, m, f"{b}_sequence_accuracy") for m in args.models]
            ax.bar([i + 0.4 * offset - 0.2 for i in x], heights, width=0.4, label=label)
            for seed_row in (r for r in results if r["language"] == language):
                i = args.models.index(seed_row["model"])
                ax.plot(i + 0.4 * offset - 0.2, seed_row[f"{b}_sequence_accuracy"], "k.", markersize=4)
        ax.set_xticks(list(x), [NAMES[m] for m in args.models])
        ax.set_ylim(0, 1.05)
        ax.set_title(language)
        ax.set_ylabel("sequence accuracy")
    axes[0][0].legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(args.out / "formal.png", dpi=120)
    print(f"wrote {args.out / 'results.json'} and {args.out / 'formal.png'}")


if __name__ == "__main__":
    main()
