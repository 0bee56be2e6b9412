"""Reproduce (offline, CPU-sized) the central demonstration of NLSOM (Zhuge et al. 2023): a society of agents
talking in natural language solves what none of its members solves alone.

The task family is ``env=society/glyph_sum`` (``metarl.society.glyph_task``): questions about generated glyph
images ("What is the class of image:left plus the class of image:right?", one-image "name" questions, and
"times" questions) that need the image describer (a Conv-4 glyph classifier trained here on the engine loop)
and the calculator, with a scribe that rewrites the question as arithmetic and two distractors (an atlas of
capitals, a guesser). Per seed: the describer is trained once, then ``python -m metarl.train
env=society/glyph_sum`` measures each member alone, the monarchy (a keyword router leads), the democracy
(the abstainers' tie rule), and the learned economy (a UCB organiser trained on ``--train-tasks`` questions,
then greedy on the held-out ones); a second run measures the democracy under the old tie rule (votes, then
proposers, then roster order). Accuracy and messages per question; ``society.{md,json,png}`` to ``--out``.

    python scripts/reproduce_society.py                  # 3 seeds, 300 held-out questions each: ~2 minutes
    python scripts/reproduce_society.py --tiny --out results/society        # seconds: a smoke test
    python scripts/reproduce_society.py --from-json docs/results/society.json   # the report again, no runs
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt

from repro_lib import add_common_args, log_row, markdown_table, mean, percent, settings, start, train_run, \
    write_report

KINDS = ["name", "sum", "product"]


def row_names(members):
    return [(f"{m}_alone", f"{m} alone") for m in members] + [
        ("monarchy", "monarchy (router leads)"), ("democracy", "democracy (abstainers' tie rule)"),
        ("democracy_shuffled", "democracy, seats shuffled (abstainers' tie rule)"),
        ("democracy_shuffled_old", "democracy, seats shuffled (old tie rule)"),
        ("economy", "economy (learned UCB organiser)")]


def run_seed(seed: int, args) -> dict:
    from metarl.society.describer import train_glyph_classifier

    with tempfile.TemporaryDirectory() as folder:
        begin = time.time()
        path = args.describer or str(train_glyph_classifier(Path(folder) / "describer", steps=args.describer_steps,
                                                            seed=seed))
        describer_seconds = round(time.time() - begin, 1)
        common = ["env=society/glyph_sum", f"seed={seed}", f"env.describer={path}",
                  f"env.test_tasks={args.test_tasks}", f"env.kinds=[{','.join(args.kinds)}]"]
        main = train_run(common + [f"env.train_tasks={args.train_tasks}", f"env.eval_every={args.eval_every}"],
                         keep=("eval/", "train/"))
        shuffled = common + ["env.organisers=[democracy]", "env.shuffle_roster=true"]
        new = train_run(shuffled)
        old = train_run(shuffled + ["env.abstainer_voice=false"])
        weak = {}
        if args.weak_describer_steps:
            path = train_glyph_classifier(Path(folder) / "weak", steps=args.weak_describer_steps, seed=seed)
            run = train_run([c for c in common if not c.startswith("env.describer=")]
                            + [f"env.describer={path}", f"env.train_tasks={args.train_tasks}",
                               f"env.eval_every={args.eval_every}"])
            weak = {"results": run.metrics["results"],
                    "describer_test_accuracy": run.metrics["setup"]["describer_test_accuracy"]}
    results = dict(main.metrics["results"])
    results["democracy_shuffled"] = new.metrics["results"]["democracy"]
    results["democracy_shuffled_old"] = old.metrics["results"]["democracy"]
    economy = main.metrics["economy"]
    return {"seed": seed, "results": results, "members": main.metrics["members"], "policy": economy["policy"],
            "mean_credit": economy["mean_credit"], "chains": economy["chains"],
            "describer_test_accuracy": main.metrics["setup"]["describer_test_accuracy"],
            "weak": weak, "history": main.history, "seconds": {"describer": describer_seconds, "society": main.seconds,
                                                "democracies_shuffled": new.seconds + old.seconds}}


def figure(runs, rows):
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    labels = [label for _, label in rows]
    acc = [mean(r["results"][key]["accuracy"] for r in runs) for key, _ in rows]
    msgs = [mean(r["results"][key]["messages"] for r in runs) for key, _ in rows]
    y = range(len(rows))
    axes[0].barh(y, [100 * a for a in acc], color="tab:blue")
    axes[0].set_yticks(list(y), labels, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].set_xlabel("accuracy on held-out questions (%)")
    axes[0].set_xlim(0, 100)
    axes[1].barh(y, msgs, color="tab:orange")
    axes[1].set_yticks(list(y), [""] * len(rows))
    axes[1].invert_yaxis()
    axes[1].set_xlabel("messages per question")
    for r in runs:
        steps = [h["step"] for h in r["history"] if "eval/economy/accuracy" in h]
        values = [100 * h["eval/economy/accuracy"] for h in r["history"] if "eval/economy/accuracy" in h]
        axes[2].plot(steps, values, marker=".", label=f"seed {r['seed']}")
    axes[2].set_xlabel("training questions")
    axes[2].set_ylabel("greedy accuracy on validation questions (%)")
    axes[2].set_title("the economy learns whom to ask", fontsize=10)
    axes[2].set_ylim(0, 105)
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--test-tasks", type=int, default=300, help="held-out questions per seed")
    parser.add_argument("--train-tasks", type=int, default=1500, help="the economy's training questions per seed")
    parser.add_argument("--eval-every", type=int, default=100, help="training questions between economy evaluations")
    parser.add_argument("--kinds", nargs="+", default=KINDS, choices=["name", "sum", "difference", "product"])
    parser.add_argument("--describer-steps", type=int, default=200, help="updates of the Conv-4 describer")
    parser.add_argument("--describer", default=None,
                        help="a best-val-accuracy.pt of env=image/glyphs env.model=conv4 instead of training one")
    parser.add_argument("--weak-describer-steps", type=int, default=40,
                        help="also measure the societies with a describer trained this little (0: not)")
    parser.add_argument("--tiny", action="store_true",
                        help="a smoke test: 1 seed, 12 held-out and 60 training questions, 30 describer updates")
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.tiny:
        args.seeds, args.test_tasks, args.train_tasks, args.eval_every, args.describer_steps = [0], 12, 60, 30, 30
        args.weak_describer_steps = 0
    started = start(args)
    if started.previous:
        runs = started.previous["runs"]
        saved = started.previous["settings"]
        for key in ("test_tasks", "train_tasks", "eval_every", "describer_steps", "weak_describer_steps"):
            setattr(args, key, int(saved.get(key, 0)))  # the settings of the runs, not this call's
    else:
        runs = []
        for seed in args.seeds:
            runs.append(run_seed(seed, args))
            r = runs[-1]
            log_row(f"seed {seed}: describer {percent(r['describer_test_accuracy'])} % on test glyphs; " + ", ".join(
                f"{k} {percent(v['accuracy'])} % / {v['messages']:.1f} msgs" for k, v in r["results"].items()))
    members = runs[0]["members"]
    rows = row_names(members)
    kinds = [k for k in KINDS + ["difference"] if f"accuracy_{k}" in runs[0]["results"]["monarchy"]]
    table = []
    for key, label in rows:
        per_seed = [r["results"][key]["accuracy"] for r in runs]
        cells = [label, percent(mean(per_seed)) + (" (" + ", ".join(f"{100 * v:.0f}" for v in per_seed) + ")"
                                                   if len(per_seed) > 1 else "")]
        cells += [percent(mean(r["results"][key][f"accuracy_{k}"] for r in runs)) for k in kinds]
        cells.append(f"{mean(r['results'][key]['messages'] for r in runs):.1f}")
        table.append(cells)
    header = ["who answers", "accuracy % (per seed)"] + [f"{k} %" for k in kinds] + ["messages / question"]
    chain = []
    for kind in kinds:
        counts = runs[0]["chains"].get(kind, {})
        total = sum(counts.values()) or 1
        chain.append([kind] + ["; ".join(f"{c} ({100 * n / total:.0f} %)" for c, n in list(counts.items())[:2])])
    weak_table = []
    if all(r.get("weak") for r in runs):
        eye = mean(r["weak"]["describer_test_accuracy"] for r in runs)
        for key, label in rows:
            if key in runs[0]["weak"]["results"] and not key.endswith("_alone") or key == "describer_alone":
                weak_table.append([label, percent(mean(r["weak"]["results"][key]["accuracy"] for r in runs))]
                                  + [percent(mean(r["weak"]["results"][key][f"accuracy_{k}"] for r in runs))
                                     for k in kinds])
        weak_table = (f"With a weaker describer ({args.weak_describer_steps} updates, {percent(eye)} % per image; "
                      "mean over the seeds):\n\n" + markdown_table(["who answers", "accuracy %"]
                                                                     + [f"{k} %" for k in kinds], weak_table))
    learned = []
    for r in runs:
        evals = [(h["step"], h["eval/economy/accuracy"]) for h in r["history"] if "eval/economy/accuracy" in h]
        stays = [step for i, (step, _) in enumerate(evals) if all(a >= 0.95 for _, a in evals[i:])]
        learned.append(str(stays[0]) if stays else "never")
    res = lambda key: mean(r["results"][key]["accuracy"] for r in runs)  # noqa: E731
    msg = lambda key: mean(r["results"][key]["messages"] for r in runs)  # noqa: E731
    weak_note = []
    if weak_table:
        wres = lambda key: mean(r["weak"]["results"][key]["accuracy"] for r in runs)  # noqa: E731
        wkind = lambda key, k: mean(r["weak"]["results"][key][f"accuracy_{k}"] for r in runs)  # noqa: E731
        two = [k for k in kinds if k != "name"]
        weak_note = [f"a society is only as good as its eye: with the weaker describer ({percent(eye)} % per image) "
                     f"the monarchy gets {percent(wres('monarchy'))} %, "
                     + ", ".join(f"{percent(wkind('monarchy', k))} % on {k}" for k in two)
                     + f" (the square of the per-image accuracy is {percent(eye ** 2)} %); the economy "
                     f"{percent(wres('economy'))} % (per seed "
                     + ", ".join(f"{100 * r['weak']['results']['economy']['accuracy']:.0f}" for r in runs)
                     + " against the monarchy's "
                     + ", ".join(f"{100 * r['weak']['results']['monarchy']['accuracy']:.0f}" for r in runs)
                     + "; messages a question "
                     + ", ".join(f"{r['weak']['results']['economy']['messages']:.1f}" for r in runs)
                     + f" against {msg('economy'):.1f} with the good describer): with noisier rewards a seed can "
                     "settle on a shorter chain"]
    best_alone = max((key for key, _ in rows if key.endswith("_alone")), key=res)
    describer = mean(r["describer_test_accuracy"] for r in runs)
    measured = [f"{len(runs)} seed(s) ({', '.join(str(r['seed']) for r in runs)}); per seed {args.test_tasks} held-out "
                f"questions (kinds {', '.join(kinds)} in turn) about glyphs of the test split, the economy trained on "
                f"{args.train_tasks} questions about validation-split glyphs",
                f"the describer: Conv-4 (16 channels) trained for {args.describer_steps} updates on the glyphs' "
                f"training split ({percent(describer)} % test accuracy per image); its errors bound every society",
                "members, in roster order: describer (the only one that sees the images), scribe (rewrites the "
                "question as arithmetic from what was said), calculator (evaluates its request or the latest "
                "expression in the talk), atlas (a lookup of capitals: a distractor) and guesser (a random number "
                "for everything, votes for itself: a distractor)",
                "the monarch is a keyword router over the members' descriptions and the scribe a rule-based rewriter "
                "(no language model is in the loop); only the describer and the economy's organiser learn",
                "reward: the last number of the final answer equals the truth; messages: every choice, answer, "
                "proposal, vote and final answer"]
    comparison = [
        f"no member alone: the best is {best_alone.replace('_alone', '')} at {percent(res(best_alone))} % "
        f"(it names the class right, which answers the one-image questions, and a sum or product only when the "
        f"right image's class happens to equal it); the calculator, the scribe and the atlas score 0",
        f"a society does: monarchy {percent(res('monarchy'))} % in {msg('monarchy'):.1f} messages, democracy "
        f"{percent(res('democracy'))} % in {msg('democracy'):.1f}, economy {percent(res('economy'))} % in "
        f"{msg('economy'):.1f}: all three reach about the describer's accuracy on both images",
        f"the democracy needs three rounds (look, rewrite, compute) and costs ~{msg('democracy') / msg('monarchy'):.0f}x "
        f"the monarchy's messages. Its ties matter: the tools abstain, so most ballots are 1-1 between the scribe's "
        f"choice and the guesser's vote for itself. The old rule (votes, proposers, then roster order) wins them "
        f"only when the guesser sits late: with the seats shuffled per question it gets "
        f"{percent(res('democracy_shuffled_old'))} %, the abstainers' rule {percent(res('democracy_shuffled'))} %. "
        "The democracy's success rests on the scribe's hand-written ballot (it votes for the member whose skill "
        "the question still needs) and on three rounds: with two, no one has computed the arithmetic yet",
    ] + weak_note + [
        "the economy's greedy accuracy on validation questions is 95 % or more from "
        f"{', '.join(learned)} training questions on (per seed; evaluated every {args.eval_every})",
        "the economy learns the chain from rewards alone (its most frequent orders on the held-out questions, "
        f"seed {runs[0]['seed']}: " + "; ".join(f"{k}: {c}" for k, c in chain) + "); it does not compose: the "
        "scribe does (the monarch writes the arithmetic itself, hence one exchange fewer)",
    ]
    claim = ["NLSOM (Zhuge et al. 2023): societies of neural agents (LLMs, vision models, tools) that interview each "
             "other in natural language solve multimodal tasks (e.g. visual question answering) that a single "
             "member does not; monarchical and democratic structures are both studied",
             "the paper poses the economy of minds (who earns the reward, whom to ask) as an open question; it "
             "reports no learned organiser to compare with"]
    fig = figure(runs, rows)
    write_report(args.out, "society", title="Societies of minds on glyph questions (NLSOM, offline)",
                 measured=measured,
                 tables=[markdown_table(header, table),
                         "Whom the trained economy asks, in order (held-out questions, seed "
                         f"{runs[0]['seed']}; the most frequent orders):\n\n"
                         + markdown_table(["kind", "asks, in order (share of the questions)"], chain)]
                 + ([weak_table] if weak_table else []),
                 claim=claim, comparison=comparison, figure=fig, started=started,
                 data={"settings": settings(args), "runs": runs, "table": {"header": header, "rows": table}})


if __name__ == "__main__":
    main()
