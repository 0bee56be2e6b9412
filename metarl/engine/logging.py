"""One metric vocabulary for every trainer, written to tensorboard and to ``metrics.jsonl``.

Names (DESIGN.md): ``losses/total`` and ``losses/<part>``; ``charts/learning_rate``; throughput
``charts/frames_per_s`` (RL env frames), ``charts/tokens_per_s``, ``charts/episodes_per_s`` (few-shot),
``charts/examples_per_s`` (other); ``charts/episodic_return/<game>`` (RL); ``eval/<set>/<metric>`` during
training and ``test/<set>/<metric>`` at the end.

``metrics.jsonl`` holds one JSON object per logged step: ``{"step": s, "time": seconds since start, name:
value, ...}``; values logged for the same step in several calls are merged into one line.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from torch.utils.tensorboard import SummaryWriter

THROUGHPUT = {"frames": "charts/frames_per_s", "tokens": "charts/tokens_per_s",
              "episodes": "charts/episodes_per_s", "examples": "charts/examples_per_s"}


class MetricLogger:
    """``log(step, {name: value})`` to ``run_dir``'s tensorboard events and ``metrics.jsonl``."""

    def __init__(self, run_dir, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.start = time.time()
        self._step: Optional[int] = None
        self._pending: Dict[str, float] = {}
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(self.run_dir))
            self.jsonl = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")

    def log(self, step: int, values: Dict[str, float]) -> None:
        """Scalars only (ints, floats, 0-d tensors); non-scalars are skipped."""
        if not self.enabled:
            return
        if self._step is not None and step != self._step:
            self._flush()
        self._step = step
        for name, value in values.items():
            value = float(value.item() if hasattr(value, "item") else value) if _is_scalar(value) else None
            if value is None:
                continue
            self.writer.add_scalar(name, value, step)
            self._pending[name] = value

    def _flush(self) -> None:
        if self._pending:
            row = {"step": self._step, "time": round(time.time() - self.start, 3)}
            row.update({k: (v if math.isfinite(v) else str(v)) for k, v in self._pending.items()})
            self.jsonl.write(json.dumps(row) + "\n")
            self.jsonl.flush()
        self._pending = {}

    def close(self) -> None:
        if self.enabled:
            self._flush()
            self.writer.close()
            self.jsonl.close()
            self.enabled = False


def _is_scalar(value) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, (int, float)):
        return True
    return hasattr(value, "item") and getattr(value, "numel", lambda: 0)() == 1


def read_metrics(path) -> List[dict]:
    """The rows of a ``metrics.jsonl`` file (or of ``<run_dir>/metrics.jsonl``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def plot_curves(run_dir, keys: Iterable[str], filename: str = "curves.png") -> Optional[Path]:
    """A PNG with one panel per key of ``keys`` (a metric name, or a prefix ending in "/" that puts every
    metric under it in one panel), x = step. Returns its path (None when nothing was logged)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        return None
    rows = read_metrics(run_dir)
    panels = []
    for key in keys:
        names = sorted({n for r in rows for n in r if n.startswith(key)}) if key.endswith("/") else [key]
        series = {n: [(r["step"], r[n]) for r in rows if isinstance(r.get(n), (int, float))] for n in names}
        series = {n: s for n, s in series.items() if s}
        if series:
            panels.append((key.rstrip("/"), series))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels):
        for name, points in series.items():
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=name.rsplit("/", 1)[-1])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    out = run_dir / filename
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
