"""Model-selection report over run folders (metarl.engine.selection).

Prints the "selected by x test metric" table (mean ± std over the runs: the seed noise, and whether the
choice of selection metric moves each test metric by more than it), and the Spearman rank correlation
between each validation and each test metric across checkpoints and runs; writes a PNG and, with --out,
the table as Markdown and JSON.

    python scripts/selection_report.py runs/*glyph_domains*            # engine runs (supervised, few-shot)
    python scripts/selection_report.py runs/*procgen* --png rl.png      # RL: training levels vs unseen levels
    python scripts/selection_report.py runs/a runs/b --out docs/results/selection   # .md, .json, .png

Engine runs record what this needs by themselves (metrics.jsonl and selection.json); with
``env.eval_test_sets=true`` the test sets are evaluated at every evaluation, so the correlation runs over
every checkpoint instead of only the selected ones.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from metarl.engine.selection import format_correlations, format_table, plot_report, read_run, report
from metarl.errors import UserError


def markdown(result: dict, title: str) -> str:
    table = result["table"]
    moved = [f"`{c}` ({e['best']} vs {e['worst']}: {e['spread']:+.3f}, seed std {e['seed_std']:.3f}, paired t "
             f"{e['paired_t']:.1f})" for c, e in table["effect"].items() if e["moves"]]
    still = [c for c, e in table["effect"].items() if not e["moves"]]
    lines = [f"# {title}", "", f"{len(result['runs'])} runs: " + ", ".join(f"`{r}`" for r in result["runs"]), "",
             "## Test metrics of the checkpoint each validation metric selected (mean ± std over runs)", "",
             format_table(table), "",
             "Moved by more than seed noise (spread > seed std and |paired t| > 2): " + (", ".join(moved) or "none") + ".",
             "Not moved beyond seed noise: " + (", ".join(f"`{c}`" for c in still) or "none") + ".", "",
             "## Spearman rank correlation, validation vs test, across checkpoints and runs (points)", "",
             format_correlations(result["correlations"]), ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders (each with metrics.jsonl)")
    parser.add_argument("--png", default="selection.png", help="the figure (default: ./selection.png)")
    parser.add_argument("--out", help="write <out>.md, <out>.json and <out>.png (overrides --png)")
    parser.add_argument("--pair", nargs=2, action="append", metavar=("VALIDATION", "TEST"),
                        help="a validation/test metric pair to plot, e.g. val/accuracy test/accuracy (repeatable)")
    parser.add_argument("--title", default="Model selection report")
    args = parser.parse_args()
    try:
        runs = [read_run(path) for path in args.runs]
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = report(args.runs)
    text = markdown(result, args.title)
    print(text)
    png = Path(args.out + ".png") if args.out else Path(args.png)
    png.parent.mkdir(parents=True, exist_ok=True)
    plot_report(result, runs, png, pairs=[tuple(p) for p in args.pair] if args.pair else None)
    print(f"wrote {png}")
    if args.out:
        Path(args.out + ".md").write_text(text)
        clean = json.loads(json.dumps(result, default=float), parse_constant=lambda c: None)
        Path(args.out + ".json").write_text(json.dumps(_finite(clean), indent=1))
        print(f"wrote {args.out}.md, {args.out}.json")
    return 0


def _finite(value):
    """NaN and infinities as null (valid JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
