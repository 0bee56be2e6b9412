"""Does the choice of selection metric move the test metrics by more than seed noise? (Irie, Schlag,
Csordás & Schmidhuber 2021, on the generated domain-shift glyphs instead of WILDS.)

Trains ``env=glyph_domains`` (default agent: the mlp core) with several seeds, each keeping one best
checkpoint per validation metric (val accuracy, macro-F1, worst-domain accuracy, NLL; id_val accuracy) and
evaluating the test domains at every evaluation, then runs the selection report over the runs: the
"selected by x test metric" table with the seed noise, the Spearman correlations between validation and
test across checkpoints and runs, and the PNG, written to ``docs/results/selection.{md,json,png}``.

    python scripts/reproduce_selection.py                     # 10 seeds x 600 updates: about 5-10 minutes on 2 cores
    python scripts/reproduce_selection.py --seeds 0 1 2 --steps 300 --out results/selection
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import metarl.supervised.glyph_domains  # noqa: F401  (registers env=glyph_domains)
from metarl.train import compose_config, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(10)))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--agent", default="mlp")
    parser.add_argument("--runs", default="results/selection_runs", help="where the run folders go")
    parser.add_argument("--out", default="docs/results/selection", help="report files <out>.{md,json,png}")
    parser.add_argument("overrides", nargs="*", help="more key=value overrides for every run")
    args = parser.parse_args()
    folders = []
    for seed in args.seeds:
        folder = Path(args.runs) / f"glyph_domains-{args.agent}-seed{seed}"
        if folder.exists():
            for old in folder.iterdir():
                old.unlink()
        cfg = compose_config("env=glyph_domains", f"agent={args.agent}", f"seed={seed}", f"optim.steps={args.steps}",
                             "progress=false", *args.overrides)
        run(cfg, folder)
        folders.append(str(folder))
    report = Path(__file__).with_name("selection_report.py")
    title = (f"Model selection on glyph_domains ({len(args.seeds)} seeds, agent={args.agent}, "
             f"{args.steps} updates)")
    subprocess.run([sys.executable, str(report), *folders, "--out", args.out, "--title", title,
                    "--pair", "val/accuracy", "test/accuracy", "--pair", "id_val/accuracy", "test/accuracy",
                    "--pair", "val/worst_domain_accuracy", "test/worst_domain_accuracy"], check=True)
    with open(args.out + ".md", "a") as md:
        md.write(f"\nMade by `python scripts/reproduce_selection.py` (seeds {args.seeds}, {args.steps} updates each; "
                 "the dataset is the same for every seed: env.glyph_seed=0). The runs' test domains (rotation 50°) "
                 "were evaluated at every evaluation (env.eval_test_sets=true), never used for selection.\n")


if __name__ == "__main__":
    main()
