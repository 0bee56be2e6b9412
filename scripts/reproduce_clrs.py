"""Reproduce (CPU-sized) Ibarz et al. 2022, "A Generalist Neural Algorithmic Learner", on metarl's CLRS tasks.

MPNN vs Triplet-GMPNN processors, each without and with a core as per-node memory over the algorithm steps
(``env.memory=lstm``), each trained as specialists (one model per algorithm, ``env=clrs/<algorithm>``) and as one
generalist (one shared processor, encoders and decoders per algorithm, one algorithm per update in turn:
``env=clrs/multi``). Every model is trained on sizes 4-16 and tested out of distribution at ``--test-size``
(CLRS: 64) on the model with the best validation score. The generalist gets as many updates per algorithm as
each specialist (``--steps`` x the number of algorithms in all). Prints the tables and writes ``clrs.md`` (what was
measured, the tables, the paper's claims against them), ``clrs.json`` (every run, its validation curve) and
``clrs.png`` to ``--out`` (docs/results).

The paper's claims read here: triplet messages with gating improve on the MPNN, and a single generalist comes close
to the specialists. The paper trains 10k updates of batch 32 on CLRS-30 (hidden 128) per model; the default here is
CPU-sized (about 30 minutes at 1 thread): four algorithms with short trajectories (the triplet messages cost
N^3 per step, and a test trajectory at n = 64 of a sort or of DFS has 64-2000 steps), a few hundred updates.

    python scripts/reproduce_clrs.py                                     # the default: ~30 minutes at 1 thread
    python scripts/reproduce_clrs.py --test-size 32 --algorithms bfs minimum dijkstra --steps 500
    python scripts/reproduce_clrs.py --tiny --out results/clrs              # seconds: the plumbing only
    python scripts/reproduce_clrs.py --from-json docs/results/clrs.json  # the report again, no training
"""
from __future__ import annotations

import argparse
from itertools import product

import matplotlib.pyplot as plt

from repro_lib import add_common_args, log_row, markdown_table, mean, percent, settings, start, train_run, \
    write_report

PROCESSORS = {"mpnn": "MPNN", "triplet_gmpnn": "Triplet-GMPNN"}
MODES = {"single": "specialists", "multi": "generalist"}
CLOSE = 0.05  # a generalist whose mean test score is within 5 points of the specialists' counts as close
TINY = dict(steps=2, hidden=8, batch_size=4, val_examples=2, test_examples=2, test_size=6, train_sizes=[4, 5],
            eval_every=2)


def label(processor: str, memory: str, mode: str = "") -> str:
    name = PROCESSORS.get(processor, processor) + ("" if memory == "none" else f" + {memory.upper()}")
    return f"{name}, {MODES[mode]}" if mode else name


def common(processor: str, memory: str, seed: int, args) -> list:
    return [f"env.processor={processor}", f"env.memory={memory}", f"env.hidden={args.hidden}",
            f"env.batch_size={args.batch_size}", f"env.val_examples={args.val_examples}",
            f"env.test_examples={args.test_examples}", f"env.test_size={args.test_size}",
            "env.train_sizes=[" + ",".join(map(str, args.train_sizes)) + "]", f"optim.lr={args.lr}",
            f"optim.grad_clip={args.grad_clip}", f"seed={seed}", "log_every=50", "checkpoint_minutes=1000",
            f"threads={args.threads}"]


def overrides(mode: str, algorithms: list, processor: str, memory: str, seed: int, args) -> list:
    """A specialist (``mode=single``, one algorithm) or the generalist of ``algorithms`` (``multi``)."""
    k = len(algorithms)
    env = [f"env=clrs/{algorithms[0]}"] if mode == "single" else \
        ["env=clrs/multi", "env.algorithms=[" + ",".join(algorithms) + "]"]
    return env + common(processor, memory, seed, args) + [f"optim.steps={args.steps * k}",
                                                          f"env.eval_every={args.eval_every * k}"]


def one_run(mode: str, algorithms: list, processor: str, memory: str, seed: int, args) -> dict:
    """Train one model; its test and validation scores per algorithm (validation: at the selected update)."""
    done = train_run(overrides(mode, algorithms, processor, memory, seed, args))
    m = done.metrics
    key = (lambda a, metric: metric) if mode == "single" else (lambda a, metric: f"{a}/{metric}")
    best_step = m["best/val/score@step"]
    at_best = next(row for row in done.history if row["step"] == best_step and "eval/val/score" in row)
    row = {"mode": mode, "processor": processor, "memory": memory, "seed": seed, "algorithms": algorithms,
           "seconds": done.seconds, "selected_step": best_step,
           "test": {a: m[f"test/test/{key(a, 'score')}"] for a in algorithms},
           "val": {a: at_best[f"eval/val/{key(a, 'score')}"] for a in algorithms},
           "test_metrics": {a: {k.rsplit("/", 1)[1]: v for k, v in m.items() if isinstance(v, float)
                                and k.startswith(f"test/test/{key(a, '')}") and not k.endswith("/score")}
                            for a in algorithms},
           "curve": [(r["step"], r["eval/val/score"]) for r in done.history if "eval/val/score" in r]}
    return row


def scores(runs: list, algorithm: str, processor: str, memory: str, mode: str, split: str = "test") -> list:
    return [r[split][algorithm] for r in runs if r["mode"] == mode and r["processor"] == processor
            and r["memory"] == memory and algorithm in r[split]]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithms", nargs="+", default=["bfs", "bellman_ford", "minimum", "binary_search"],
                        help="CLRS algorithms (metarl.supervised.graphs.SPECS)")
    parser.add_argument("--processors", nargs="+", default=list(PROCESSORS), help="env.processor values")
    parser.add_argument("--memories", nargs="+", default=["none", "lstm"], help="env.memory values (none: no core)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=200, help="updates per algorithm (the paper: 10000)")
    parser.add_argument("--hidden", type=int, default=64, help="env.hidden (the paper: 128)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--grad-clip", type=float, default=1.0, help="optim.grad_clip of every run")
    parser.add_argument("--train-sizes", nargs="+", type=int, default=[4, 7, 11, 13, 16])
    parser.add_argument("--test-size", type=int, default=64, help="nodes of the test graphs (CLRS: 64)")
    parser.add_argument("--test-examples", type=int, default=32, help="test trajectories per algorithm")
    parser.add_argument("--val-examples", type=int, default=16, help="validation trajectories per size and algorithm")
    parser.add_argument("--eval-every", type=int, default=100, help="updates per algorithm between validations")
    parser.add_argument("--tiny", action="store_true", help="a budget of seconds (for tests): " + str(TINY))
    parser.add_argument("--name", default="clrs", help="file name of the report: <out>/<name>.{md,json,png}")
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.tiny:
        for k, v in TINY.items():
            setattr(args, k, v)
    started = start(args)

    configs = list(product(args.processors, args.memories))
    runs = started.previous["runs"] if started.previous else []
    for seed, (processor, memory), mode in [] if started.previous else product(args.seeds, configs, args.modes):
        groups = [[a] for a in args.algorithms] if mode == "single" else [list(args.algorithms)]
        for algorithms in groups:
            row = one_run(mode, algorithms, processor, memory, seed, args)
            runs.append(row)
            log_row(f"{label(processor, memory, mode):40s} seed {seed} " + "  ".join(
                f"{a} val {row['val'][a]:.3f} test {row['test'][a]:.3f}" for a in algorithms)
                + f"  ({row['seconds']:.0f} s)")

    columns = [(p, m, mode) for (p, m) in configs for mode in args.modes]

    def cell(algorithm, column, split="test"):
        values = scores(runs, algorithm, *column, split=split)
        return percent(mean(values)) if values else "—"

    def config_mean(column, split="test"):
        return mean(mean(scores(runs, a, *column, split=split)) for a in args.algorithms)

    header = ["algorithm"] + [label(*c) for c in columns]
    rows = [[a] + [cell(a, c) for c in columns] for a in args.algorithms]
    rows.append(["**mean**"] + [percent(config_mean(c)) for c in columns])
    test_table = markdown_table(header, rows)
    summary_rows = []
    for c in columns:
        mine = [r for r in runs if (r["processor"], r["memory"], r["mode"]) == c]
        summary_rows.append([label(*c), percent(config_mean(c, "val")), percent(config_mean(c)),
                             f"{sum(r['seconds'] for r in mine) / 60:.1f}"])
    summary_table = markdown_table(["model", f"val score (n = {min(args.train_sizes)}-{max(args.train_sizes)})",
                                    f"test score (n = {args.test_size})", "minutes (train + eval)"], summary_rows)

    comparison = []
    if "mpnn" in args.processors and "triplet_gmpnn" in args.processors:
        for memory, mode in product(args.memories, args.modes):
            tri, mp = (config_mean((p, memory, mode)) for p in ("triplet_gmpnn", "mpnn"))
            pairs = [[mean(scores(runs, a, p, memory, mode)) for p in ("triplet_gmpnn", "mpnn")]
                     for a in args.algorithms]
            wins, ties = sum(t > m for t, m in pairs), sum(t == m for t, m in pairs)
            comparison.append(
                f"Triplets ({label('triplet_gmpnn', memory)} vs {label('mpnn', memory)}, {MODES[mode]}): mean test "
                f"{percent(tri)} vs {percent(mp)} %, better on {wins}, equal on {ties} of {len(args.algorithms)} "
                f"algorithms → {'agrees' if tri > mp else 'differs'} (the paper: triplets help)")
    if set(MODES) <= set(args.modes):
        for processor, memory in configs:
            multi, single = (config_mean((processor, memory, mode)) for mode in ("multi", "single"))
            verdict = "close" if multi >= single - CLOSE else "not close"
            comparison.append(
                f"Generalist vs specialists ({label(processor, memory)}): mean test {percent(multi)} vs "
                f"{percent(single)} % ({100 * (multi - single):+.1f} points) → {verdict} "
                f"({'agrees' if verdict == 'close' else 'differs'}; 'close': at most {100 * CLOSE:.0f} points below)")
    if set(MODES) <= set(args.modes):
        gaps = {a: mean(mean(scores(runs, a, p, m, "multi")) - mean(scores(runs, a, p, m, "single"))
                        for p, m in configs) for a in args.algorithms}
        comparison.append("Generalist minus specialists per algorithm, mean over the processor / memory settings: "
                          + ", ".join(f"{a} {100 * g:+.1f}" for a, g in gaps.items()) + " points")
    agreeing = {kind: [line for line in comparison if line.startswith(kind)] for kind in ("Triplets", "Generalist vs")}
    if all(agreeing.values()):
        (tri, n_tri), (gen, n_gen) = ((sum("agrees" in line for line in v), len(v)) for v in agreeing.values())
        comparison.insert(0, f"In short: triplets help in {tri} of {n_tri} settings; the generalist is close to the "
                             f"specialists in {gen} of {n_gen} (one seed, {len(args.algorithms)} algorithms, "
                             f"{args.steps} updates per algorithm: indicative only)")
    if "none" in args.memories:
        for memory in [m for m in args.memories if m != "none"]:
            for processor, mode in product(args.processors, args.modes):
                with_, without = config_mean((processor, memory, mode)), config_mean((processor, "none", mode))
                comparison.append(f"Node memory ({memory.upper()}) with {PROCESSORS.get(processor, processor)}, "
                                  f"{MODES[mode]}: mean test {percent(with_)} vs {percent(without)} % without "
                                  "(metarl's extension; not a claim of the paper)")

    seconds = sum(r["seconds"] for r in runs)
    measured = [
        f"algorithms {', '.join(args.algorithms)} (of the 13 metarl implements; chosen for their short trajectories "
        f"so that the tests at n = {args.test_size} fit a CPU budget), Erdős–Rényi p = 0.5 where a graph is drawn",
        f"train on sizes {args.train_sizes} (one size per batch, fresh samples every update), validate on "
        f"{args.val_examples} trajectories per size, test on {args.test_examples} trajectories at n = "
        f"{args.test_size} (out of distribution) with the model of the best mean validation score",
        f"processors {', '.join(PROCESSORS.get(p, p) for p in args.processors)}; node memory "
        f"{', '.join(args.memories)} (env.memory: a metarl core after the processor, the nodes as its batch axis); "
        f"hidden {args.hidden}, teacher-forced hints, Adam lr {args.lr:g}, gradient clip {args.grad_clip:g}, "
        f"batch {args.batch_size}",
        f"specialists: one model per algorithm, {args.steps} updates each; generalist: one model, "
        f"{args.steps} x {len(args.algorithms)} updates, one algorithm per update in turn (round robin), so as many "
        f"per algorithm; seeds {args.seeds}; {len(runs)} runs, {seconds / 60:.1f} min of training and evaluation",
        "score: the CLRS score of each algorithm's output (pointer / mask_one accuracy, mask F1), in %; a cell is the "
        "mean over seeds; the paper's budget is 10000 updates of batch 32 per model on 30 algorithms, hidden 128 — "
        "this is a CPU-sized run and the absolute scores are far below the paper's",
        "the generalist is evaluated on the same validation and test trajectories as the specialists (each "
        "algorithm's sets are drawn from the same seed); the test score of a mask_one output (minimum, "
        f"binary_search: one answer per trajectory; chance {100 / args.test_size:.1f} %) moves in steps of "
        f"{100 / args.test_examples:.1f} points, and "
        f"with {len(args.seeds)} seed(s) the seed-to-seed spread is not measured: differences of a few points "
        "between two cells are within noise",
    ]
    claim = ["Ibarz et al. 2022 (\"A Generalist Neural Algorithmic Learner\"): the Triplet-GMPNN processor (gating and "
             "triplet edge messages, with their other improvements to encoders, decoders and training) improves on "
             "the MPNN's out-of-distribution scores at n = 64 on CLRS-30, and one generalist with a shared processor "
             "trained on all 30 algorithms comes close to the single-task specialists (and beats the earlier "
             "single-task models on average).",
             "Not reproduced here: their other changes (Xavier-initialised scalar encoders, randomised positions, "
             "Sinkhorn permutation decoders, no teacher forcing, static-hint elimination), CLRS-30's full set of "
             "algorithms and hints, several seeds."]

    labels = list(args.algorithms) + ["mean"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(labels) + 2), 4.0))
    width = 0.8 / max(len(columns), 1)
    colours = plt.get_cmap("tab10")
    for i, column in enumerate(columns):
        heights = [mean(scores(runs, a, *column)) for a in args.algorithms] + [config_mean(column)]
        processor, memory, mode = column
        ax.bar([x - 0.4 + width * (i + 0.5) for x in range(len(labels))], heights, width=width,
               color=colours(configs.index((processor, memory))), hatch="//" if mode == "multi" else None,
               edgecolor="white" if mode == "multi" else None, label=label(*column))
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"test score at n = {args.test_size}")
    ax.set_title("CLRS, CPU-sized: specialists (plain) vs generalist (hatched)")
    ax.legend(fontsize=7, loc="upper right", ncol=2)
    fig.tight_layout()
    write_report(args.out, args.name, title="CLRS: MPNN vs Triplet-GMPNN, specialists vs generalist (Ibarz et al. "
                                            "2022), CPU-sized",
                 measured=measured, tables=[f"Test score (%) at n = {args.test_size} per algorithm:", test_table,
                                            "Per model, mean over the algorithms:", summary_table],
                 claim=claim, comparison=comparison, data={"settings": settings(args), "runs": runs},
                 figure=fig, started=started)


if __name__ == "__main__":
    main()
