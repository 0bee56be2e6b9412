"""What every ``scripts/reproduce_*.py`` shares: one training run in a temporary folder, the report files.

A reproduction script composes the runs it needs as ``python -m metarl.train`` overrides, calls ``train_run`` for
each (in-process, one at a time), then hands its table to ``write_report``, which writes
``docs/results/<name>.md`` (what was measured, the table, the paper's claim), ``<name>.json`` (settings, every
run, wall time) and ``<name>.png`` (the figure the script drew).

    from repro_lib import add_common_args, start, train_run, write_report

``--from-json <name>.json`` writes the report again from the runs an earlier one recorded, without training.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from metarl.engine.logging import read_metrics  # noqa: E402
from metarl.train import compose_config, run  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """``--threads``, ``--out`` (the folder of the report files, docs/results by default) and ``--from-json``."""
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these sizes)")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="folder for <name>.{md,json,png} (default: %(default)s)")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="no training: write the report again from the runs of an earlier <name>.json (its "
                             "command, wall time and machine are kept; the other options must match its settings)")


@dataclass
class Started:
    """When and how the reproduction started; ``previous``: the loaded ``--from-json`` report, if any."""

    time: float
    load: float
    previous: Optional[dict] = None


def start(args: argparse.Namespace) -> Started:
    """Apply ``--threads``, create ``--out``, load ``--from-json``; note the start time and the machine's load."""
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.from_json.read_text(encoding="utf-8")) if args.from_json else None
    return Started(time.time(), os.getloadavg()[0], previous)


@dataclass
class Run:
    """One finished training run: its final metrics, the logged history of ``keep`` metrics, wall seconds."""

    metrics: dict
    history: List[dict] = field(default_factory=list)
    seconds: float = 0.0


def train_run(overrides: Sequence[str], keep: Iterable[str] = ("eval/",)) -> Run:
    """``python -m metarl.train <overrides> progress=false`` in a temporary run folder, in this process.
    ``keep``: prefixes of the metrics whose logged values (by step) are kept from ``metrics.jsonl``."""
    keep = tuple(keep)
    cfg = compose_config(*overrides, "progress=false")
    begin = time.time()
    with tempfile.TemporaryDirectory() as run_dir:
        metrics = run(cfg, Path(run_dir))
        rows = read_metrics(run_dir) if (Path(run_dir) / "metrics.jsonl").is_file() else []
    history = []
    for row in rows:
        kept = {k: v for k, v in row.items() if k.startswith(keep) and not k.endswith("/best")}
        if kept:
            history.append({"step": row["step"], **kept})
    return Run(metrics, history, round(time.time() - begin, 1))


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def group_mean(rows: Sequence[dict], key: str, **match) -> float:
    """Mean of ``row[key]`` over the rows whose fields equal ``match``."""
    return mean(r[key] for r in rows if all(r.get(k) == v for k, v in match.items()))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def percent(x: float) -> str:
    return f"{100 * x:.1f}"


def seed_cell(values: Sequence[float]) -> str:
    """A table cell: the mean in percent, then each seed's value when there are several ("75.0 (50, 100)")."""
    values = list(values)
    cell = percent(mean(values))
    return cell + (" (" + ", ".join(f"{100 * v:.0f}" for v in values) + ")" if len(values) > 1 else "")


def verdict(scores: Sequence[float], good: float, bad: float) -> str:
    """``generalises`` (every seed's score >= good), ``fails`` (every seed's <= bad), else ``partly``."""
    return "generalises" if all(s >= good for s in scores) else "fails" if all(s <= bad for s in scores) else "partly"


def command_line() -> str:
    """The command that produced the report (relative script path)."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    return " ".join(["python", shlex.quote(str(script))] + [shlex.quote(a) for a in sys.argv[1:]])


def machine(started: Started) -> str:
    """The CPU, the threads, and the load average (1 min) at the start and at the end: other jobs on the machine
    slow the runs down and lengthen the wall time."""
    threads = os.environ.get("OMP_NUM_THREADS")
    return (f"{platform.machine()} CPU, {os.cpu_count()} cores visible, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch thread(s)" + (f", OMP_NUM_THREADS={threads}" if threads else "")
            + f"; load average {started.load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def write_report(out: Path, name: str, *, title: str, measured: Sequence[str], tables: Sequence[str],
                 claim: Sequence[str], comparison: Sequence[str] = (), data: Dict, figure: plt.Figure,
                 started: Started) -> List[Path]:
    """``out/<name>.md``: the title, a bullet list of what was measured (the command, the wall time and the
    machine are added), each table, the paper's claim and the comparison with it; ``out/<name>.json``: ``data``
    plus the same facts; ``out/<name>.png``: ``figure``. Prints the Markdown and the paths. With ``--from-json``
    the command, wall time and machine are those of the run that produced the JSON."""
    previous = started.previous or {}
    wall = previous.get("wall_seconds", time.time() - started.time)
    command, where = previous.get("command", command_line()), previous.get("machine", machine(started))
    facts = [f"command: `{command}`", f"wall time: {minutes(wall)} in all ({where})"]
    md = [f"# {title}", "", "What was measured:", ""] + [f"- {m}" for m in list(measured) + facts] + [""]
    for table in tables:
        md += [table, ""]
    md += ["The paper's claim:", ""] + [f"- {c}" for c in claim] + [""]
    if comparison:
        md += ["Against the claim (computed from the table above):", ""] + [f"- {c}" for c in comparison] + [""]
    paths = [out / f"{name}.md", out / f"{name}.json", out / f"{name}.png"]
    paths[0].write_text("\n".join(md), encoding="utf-8")
    payload = {"title": title, "command": command, "wall_seconds": round(wall, 1), "machine": where,
               "measured": list(measured), "claim": list(claim), "comparison": list(comparison), **data}
    paths[1].write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    figure.savefig(paths[2], dpi=120)
    plt.close(figure)
    print("\n".join(md))
    print("wrote " + ", ".join(str(p) for p in paths), flush=True)
    return paths


def log_row(text: str) -> None:
    print(text, flush=True)


def settings(args: argparse.Namespace, skip: Optional[Callable[[str], bool]] = None) -> Dict[str, str]:
    """The parsed options as strings (for the JSON), without where the report went or came from (``out``,
    ``from_json``: machine paths, not settings)."""
    return {k: str(v) for k, v in vars(args).items()
            if k not in ("out", "from_json") and not (skip and skip(k))}
