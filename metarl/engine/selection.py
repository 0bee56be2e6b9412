"""Model selection across runs: which checkpoint each validation metric chooses, what that does to the test
metrics, and how well validation ranks checkpoints the way test does (Irie, Schlag, Csordás & Schmidhuber,
2021: choose the checkpoint separately for each metric; validation and test may correlate weakly).

What a run folder holds (the engine loop, :mod:`.loop`; the RL monitor, :mod:`metarl.rl.monitor`)::

    metrics.jsonl     eval/<set>/<metric> at every evaluation (with env.eval_test_sets=true the test sets too)
    selection.json    per selection metric: the update it chose, the value there, the test scalars of that model
    (RL runs)         test/train_levels/trained_return/<game> and test/test_levels/... at the end

:func:`read_run` turns a folder into a :class:`RunRecord` (checkpoints with validation and, where known,
test values; the checkpoint each selection metric chose); :func:`selection_table` gives the "selected by x
test metric" table (mean and standard deviation over runs: the seed noise); :func:`rank_correlations` the
Spearman correlation between each validation and each test metric across checkpoints and runs.

For an RL run the training levels play the part of validation and the unseen levels that of test (the
last model, and with ``impala.eval_every_frames`` every periodic evaluation and the model each
``impala.selection`` metric chose); for a few-shot run validation and test classes (the checkpoint the
validation accuracy chose; every evaluation with ``env.eval_test_sets=true``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import MissingPathError
from .logging import read_metrics


@dataclass
class Checkpoint:
    """One model of one run: ``validation`` and ``test`` map ``<set>/<metric>`` to values."""

    run: str
    step: int
    validation: Dict[str, float] = field(default_factory=dict)
    test: Dict[str, float] = field(default_factory=dict)


@dataclass
class RunRecord:
    """A run folder read back: kind ``engine`` or ``rl``; ``selection`` {metric: max|min}; ``checkpoints``:
    every evaluated model (step order); ``selected``: {selection metric (or ``last``): its Checkpoint}."""

    path: Path
    kind: str
    selection: Dict[str, str]
    checkpoints: List[Checkpoint]
    selected: Dict[str, Checkpoint]

    @property
    def name(self) -> str:
        return self.path.name


#: scalars a set reports that are not scores of the model (sizes of the set, widths of intervals)
NOT_SCORES = ("episodes", "ci95")


def _numbers(row: dict, prefix: str) -> Dict[str, float]:
    return {k[len(prefix):]: float(v) for k, v in row.items()
            if k.startswith(prefix) and isinstance(v, (int, float)) and not isinstance(v, bool)
            and not set(k.split("/")) & set(NOT_SCORES)}


def read_run(path) -> RunRecord:
    """A run folder (of ``python -m metarl.train``) as a :class:`RunRecord`."""
    path = Path(path)
    if not (path / "metrics.jsonl").is_file():
        raise MissingPathError(f"{path} is not a run folder (no metrics.jsonl); pass folders written by "
                               "python -m metarl.train (runs/<date>-<env>-<agent>/)")
    rows = read_metrics(path)
    final = {}
    for row in rows:
        final.update(_numbers(row, "test/"))
    if any(k.startswith(("train_levels/", "test_levels/")) for k in final):
        return _read_rl(path, rows, final)
    summary = json.loads((path / "selection.json").read_text()) if (path / "selection.json").is_file() else None
    test_sets = summary["test_sets"] if summary else sorted({k.split("/")[0] for k in final})
    evaluations: Dict[int, Dict[str, float]] = {}
    for row in rows:
        values = {k: v for k, v in _numbers(row, "eval/").items() if not k.endswith("/best")}
        if values:
            evaluations.setdefault(int(row["step"]), {}).update(values)
    checkpoints = [Checkpoint(path.name, step,
                              {k: v for k, v in values.items() if k.split("/")[0] not in test_sets},
                              {k: v for k, v in values.items() if k.split("/")[0] in test_sets})
                   for step, values in sorted(evaluations.items())]
    by_step = {c.step: c for c in checkpoints}
    selected: Dict[str, Checkpoint] = {}
    if summary:
        selection = dict(summary["selection"])
        for metric, info in summary["selected"].items():
            step = int(info["step"])
            validation = dict(by_step[step].validation) if step in by_step else {}
            test = {k: float(v) for k, v in info["test"].items() if not set(k.split("/")) & set(NOT_SCORES)}
            selected[metric] = Checkpoint(path.name, step, validation, test)
    else:  # a run from before selection.json: the unsuffixed test metrics are the primary selection's
        selection = {}
        primary = {k: v for k, v in final.items() if "/by-" not in k}
        if primary:
            selected["primary"] = Checkpoint(path.name, checkpoints[-1].step if checkpoints else 0, {}, primary)
        for key, value in final.items():
            if "/by-" in key:
                name, by = key.split("/by-")
                selected.setdefault(by, Checkpoint(path.name, -1)).test[name] = value
    return RunRecord(path, "engine", selection, checkpoints, selected)


def _read_rl(path: Path, rows: List[dict], final: Dict[str, float]) -> RunRecord:
    """RL: the training levels play validation, the unseen levels test. The last model's final evaluation
    (``test/<split>_levels/trained_return/<task>``) is the ``last`` row; with ``impala.eval_every_frames`` the
    periodic evaluations (``eval/<split>_levels/return...``) are checkpoints too, and ``selection.json`` gives
    the model each selection metric chose and its return on the unseen levels."""
    step = max(int(r["step"]) for r in rows)
    checkpoints = []
    for row in rows:
        values = _numbers(row, "eval/")
        if values:
            checkpoints.append(Checkpoint(path.name, int(row["step"]),
                                          {k: v for k, v in values.items() if k.startswith("train_levels/")},
                                          {k: v for k, v in values.items() if k.startswith("test_levels/")}))
    last_final = {k: v for k, v in final.items() if "/by-" not in k}
    last = Checkpoint(path.name, step, {k: v for k, v in last_final.items() if k.startswith("train_levels/trained_return/")},
                      {k: v for k, v in last_final.items() if k.startswith("test_levels/trained_return/")})
    selection, selected = {}, {}
    if (path / "selection.json").is_file():
        summary = json.loads((path / "selection.json").read_text())
        selection = dict(summary["selection"])
        by_step = {c.step: c for c in checkpoints}
        for metric, info in summary["selected"].items():
            chosen = by_step.get(int(info["step"]))
            selected[metric] = Checkpoint(path.name, int(info["step"]), dict(chosen.validation) if chosen else {},
                                          {k: float(v) for k, v in info["test"].items()})
    selected["last"] = last
    return RunRecord(path, "rl", selection, checkpoints or [last], selected)


# ----------------------------------------------------------------------------------------------- statistics


def ranks(values: Sequence[float]) -> List[float]:
    """Ranks from 1, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for m in range(i, j + 1):
            result[order[m]] = (i + j) / 2 + 1
        i = j + 1
    return result


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson's on the tie-averaged ranks); nan with < 3 points or no spread."""
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} and {len(y)} values")
    if len(x) < 3:
        return math.nan
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else math.nan


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0)


# ----------------------------------------------------------------------------------------------- reports


LOWER_IS_BETTER = ("nll", "loss", "perplexity", "bpc", "error")


def higher_is_better(metric: str) -> bool:
    """False for losses and errors (the last part of the name is one of ``LOWER_IS_BETTER``)."""
    return metric.rsplit("/", 1)[-1] not in LOWER_IS_BETTER


def selection_table(runs: Sequence[RunRecord]) -> dict:
    """``{"rows": [selection metric...], "columns": [test metric...], "cells": {row: {column: {"mean", "std",
    "n"}}}, "effect": {column: {...}}}``: the test metrics of the model each selection metric chose, over runs.

    ``effect[column]``: ``spread`` (the best minus the worst row mean, in the metric's better direction:
    :func:`higher_is_better`), ``seed_std`` (pooled standard deviation
    over runs within a row: the seed noise), ``paired_t`` (the best and the worst row compared run by run:
    mean difference over its standard error; the runs pair the rows, since each run gives every row) and
    ``moves`` (spread > seed_std and |paired_t| > 2)."""
    rows = list(dict.fromkeys(m for r in runs for m in r.selected))
    columns = sorted({k for r in runs for c in r.selected.values() for k in c.test})
    cells: Dict[str, Dict[str, dict]] = {}
    for row in rows:
        cells[row] = {}
        for column in columns:
            values = [r.selected[row].test[column] for r in runs if row in r.selected and column in r.selected[row].test]
            if values:
                mean, std = mean_std(values)
                cells[row][column] = {"mean": mean, "std": std, "n": len(values)}
    effect = {}
    for column in columns:
        present = [row for row in rows if column in cells[row]]
        if len(present) < 2:
            continue
        sign = 1.0 if higher_is_better(column) else -1.0
        best = max(present, key=lambda r: sign * cells[r][column]["mean"])
        worst = min(present, key=lambda r: sign * cells[r][column]["mean"])
        spread = sign * (cells[best][column]["mean"] - cells[worst][column]["mean"])
        variances = [cells[r][column]["std"] ** 2 for r in present if cells[r][column]["n"] > 1]
        seed_std = math.sqrt(sum(variances) / len(variances)) if variances else math.nan
        diffs = [sign * (r.selected[best].test[column] - r.selected[worst].test[column]) for r in runs
                 if best in r.selected and worst in r.selected and column in r.selected[best].test
                 and column in r.selected[worst].test]
        paired_t = math.nan
        if len(diffs) > 1:
            m, s = mean_std(diffs)
            paired_t = m / (s / math.sqrt(len(diffs))) if s > 0 else (math.inf if m > 0 else math.nan)
        effect[column] = {"best": best, "worst": worst, "spread": spread, "seed_std": seed_std, "paired_t": paired_t,
                          "moves": bool(spread > seed_std and abs(paired_t) > 2)}
    return {"rows": rows, "columns": columns, "cells": cells, "effect": effect}


def correlation_points(runs: Sequence[RunRecord]) -> List[Checkpoint]:
    """The checkpoints with both validation and test values: every evaluation where the test sets were
    evaluated too, otherwise the selected ones (each model once)."""
    points = []
    for run in runs:
        evaluated = [c for c in run.checkpoints if c.validation and c.test]
        if evaluated:
            points += evaluated
            continue
        seen = set()
        for c in run.selected.values():
            if c.validation and c.test and c.step not in seen:
                seen.add(c.step)
                points.append(c)
    return points


def rank_correlations(runs: Sequence[RunRecord]) -> dict:
    """``{validation metric: {test metric: {"spearman", "n"}}}`` across checkpoints and runs
    (:func:`correlation_points`); also ``within_run``: the mean over runs of the Spearman correlation across
    that run's own checkpoints (where a run has 3 or more)."""
    points = correlation_points(runs)
    validation = sorted({k for p in points for k in p.validation})
    test = sorted({k for p in points for k in p.test})
    table: Dict[str, Dict[str, dict]] = {}
    for v in validation:
        table[v] = {}
        for t in test:
            pairs = [(p.validation[v], p.test[t]) for p in points if v in p.validation and t in p.test]
            within = []
            for run in {p.run for p in points}:
                mine = [(p.validation[v], p.test[t]) for p in points if p.run == run and v in p.validation
                        and t in p.test]
                rho = spearman(*zip(*mine)) if len(mine) >= 3 else math.nan
                if not math.isnan(rho):
                    within.append(rho)
            table[v][t] = {"spearman": spearman(*zip(*pairs)) if pairs else math.nan, "n": len(pairs),
                           "within_run": sum(within) / len(within) if within else math.nan}
    return table


def report(paths: Sequence) -> dict:
    """Everything :mod:`scripts/selection_report.py` prints, as a JSON-ready dict."""
    runs = [read_run(p) for p in paths]
    kinds = sorted({r.kind for r in runs})
    return {"runs": [str(r.path) for r in runs], "kinds": kinds, "table": selection_table(runs),
            "correlations": rank_correlations(runs)}


def format_table(table: dict, digits: int = 3) -> str:
    """The "selected by x test metric" table as Markdown (mean ± std over runs), then the effect line."""
    columns = table["columns"]
    lines = ["| selected by | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for row in table["rows"]:
        cells = []
        for column in columns:
            cell = table["cells"][row].get(column)
            cells.append(f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}" if cell else "—")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    if table["effect"]:
        lines.append("| spread (best − worst row) | " + " | ".join(
            f"{table['effect'][c]['spread']:.{digits}f}" if c in table["effect"] else "—" for c in columns) + " |")
        lines.append("| seed std | " + " | ".join(
            f"{table['effect'][c]['seed_std']:.{digits}f}" if c in table["effect"] else "—" for c in columns) + " |")
        lines.append("| paired t (best vs worst) | " + " | ".join(
            f"{table['effect'][c]['paired_t']:.1f}" if c in table["effect"] else "—" for c in columns) + " |")
    return "\n".join(lines)


def format_correlations(correlations: dict) -> str:
    """Spearman between validation (rows) and test metrics (columns) as Markdown: pooled over checkpoints and
    runs (n points), then the mean of the per-run correlations (where runs have 3+ checkpoints)."""
    tests = sorted({t for row in correlations.values() for t in row})
    lines = ["| validation \\ test | " + " | ".join(tests) + " |", "|---|" + "---|" * len(tests)]

    def cell(c: dict) -> str:
        if math.isnan(c["spearman"]):
            return "—"
        within = "" if math.isnan(c["within_run"]) else f"; within runs {c['within_run']:+.2f}"
        return f"{c['spearman']:+.2f} (n {c['n']}{within})"

    for v, row in correlations.items():
        cells = [cell(row[t]) if t in row else "—" for t in tests]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_report(runs_report: dict, runs: Sequence[RunRecord], out, pairs: Optional[Sequence[Tuple[str, str]]] = None):
    """A PNG. Top row: validation against test per checkpoint for ``pairs`` (default: up to 3 pairs with the
    same metric name), one colour per run, the selected checkpoints ringed. Bottom row: one panel per test
    metric, its mean over runs (± standard deviation: the seed noise) for each selection metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = correlation_points(runs)
    correlations = runs_report["correlations"]
    if pairs is None:
        pairs = [(v, t) for v in correlations for t in correlations[v]
                 if v.split("/", 1)[1] == t.split("/", 1)[1]][:3]
    pairs = [(v, t) for v, t in pairs if v in correlations and t in correlations[v]]
    table = runs_report["table"]
    columns = table["columns"] if table["rows"] else []
    width = max(len(pairs), len(columns), 1)
    rows_of_panels = (1 if pairs else 0) + (1 if columns else 0) or 1
    fig, axes = plt.subplots(rows_of_panels, width, figsize=(4.2 * width, 3.6 * rows_of_panels), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    names = sorted({r.name for r in runs})
    colour = {n: f"C{i % 10}" for i, n in enumerate(names)}
    for ax, (v, t) in zip(axes[0], pairs):
        ax.set_visible(True)
        for name in names:
            mine = [p for p in points if p.run == name and v in p.validation and t in p.test]
            ax.scatter([p.validation[v] for p in mine], [p.test[t] for p in mine], s=12, color=colour[name],
                       alpha=0.7, label=name if len(names) <= 6 else None)
        for run in runs:
            for c in run.selected.values():
                if v in c.validation and t in c.test:
                    ax.scatter([c.validation[v]], [c.test[t]], s=60, facecolors="none", edgecolors=colour[run.name])
        rho = correlations[v][t]
        ax.set_title(f"Spearman {rho['spearman']:+.2f} over {rho['n']} checkpoints", fontsize=9)
        ax.set_xlabel(f"validation {v}", fontsize=8)
        ax.set_ylabel(f"test {t}", fontsize=8)
        ax.grid(alpha=0.3)
        if len(names) <= 6:
            ax.legend(fontsize=6)
    for ax, column in zip(axes[-1], columns):
        ax.set_visible(True)
        present = [r for r in table["rows"] if column in table["cells"][r]]
        means = [table["cells"][r][column]["mean"] for r in present]
        stds = [table["cells"][r][column]["std"] for r in present]
        ax.bar(range(len(present)), means, yerr=stds, capsize=3, color=[f"C{i}" for i in range(len(present))])
        ax.set_xticks(range(len(present)))
        ax.set_xticklabels(present, rotation=25, fontsize=7, ha="right")
        low, high = min(m - s for m, s in zip(means, stds)), max(m + s for m, s in zip(means, stds))
        pad = 0.15 * (high - low) or 0.01
        ax.set_ylim(low - pad, high + pad)
        ax.set_title(f"{column} by selection metric (± seed std)", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)
