"""Training throughput and peak memory of the CLRS encode-process-decode model per graph processor.

For each processor (``mpnn``, ``gmpnn``, ``triplet_mpnn``, ``triplet_gmpnn``, ``none``) and each size (n = 16 and
64 nodes by default): full training updates (forward over the algorithm steps, backward, Adam step) of
``env=clrs/<algorithm>``'s model on one fixed batch of ``--batch`` trajectories, one warm-up update, then the
median of ``--repeats`` timings of ``--steps`` updates. Reports graphs/s, processor steps/s (graphs x algorithm
steps per second: comparable across algorithms) and the peak memory of the updates: on CUDA
``torch.cuda.max_memory_allocated``; on CPU the peak resident set of a fresh process per setting (``ru_maxrss``)
above its resident set just before the first update (``--no-isolate``: all settings in this process, where the
peak only grows: an upper bound). Prints a table and writes JSON to ``--out``.

    python scripts/bench_graphs.py                                       # bfs, n = 16 and 64, batch 16, 1 thread
    python scripts/bench_graphs.py --algorithm dijkstra --sizes 16 32 --processors mpnn triplet_gmpnn
    python scripts/bench_graphs.py --device cuda --batch 32 --memory lstm
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from metarl import cores
from metarl.layers.graph_processors import PROCESSORS
from metarl.supervised.graphs import SPECS, EncodeProcessDecode, collate, sample
from metarl.supervised.graphs.task import trajectory_loss


def rss_mib() -> float:
    """The resident set of this process now (Linux /proc; 0 where it is not available)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError):
        return 0.0


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def bench(processor: str, n: int, args) -> dict:
    """One setting in this process: graphs/s, processor steps/s, peak memory (MiB)."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    spec = SPECS[args.algorithm]
    memory = None if args.memory == "none" else cores.make(args.memory, d_model=args.hidden, num_layers=1,
                                                           num_heads=1, ff="none")
    model = EncodeProcessDecode(spec, args.hidden, processor, memory).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    batch = collate([sample(args.algorithm, n, rng) for _ in range(args.batch)], spec, args.algorithm).to(device)
    steps = int(batch.lengths.max()) - 1  # processor calls per update

    def update():
        output_loss, hint_loss = trajectory_loss(spec, *model(batch), batch)
        loss = output_loss + hint_loss + (memory.aux_loss() if memory is not None else 0.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    base = rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    update()
    synchronize()
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        for _ in range(args.steps):
            update()
        synchronize()
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times) / args.steps
    if device.type == "cuda":
        peak, method = torch.cuda.max_memory_allocated(device) / 2 ** 20, "torch.cuda.max_memory_allocated"
    else:
        peak, method = max(peak_rss_mib() - base, 0.0), "ru_maxrss - rss before the first update"
    return {"processor": processor, "n": n, "algorithm_steps": steps, "parameters": cores.count_parameters(model),
            "graphs_per_s": args.batch / seconds, "processor_steps_per_s": args.batch * steps / seconds,
            "seconds_per_update": seconds, "peak_memory_mib": peak, "memory_method": method}


def run_isolated(processor: str, n: int, argv) -> dict:
    """``bench`` in a fresh process (its own peak resident set)."""
    out = subprocess.run([sys.executable, __file__, *argv, "--one", processor, str(n)], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    if out.returncode != 0:
        raise RuntimeError(f"bench of {processor} at n={n} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processors", nargs="+", default=list(PROCESSORS), choices=list(PROCESSORS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[16, 64], help="nodes per graph")
    parser.add_argument("--algorithm", default="bfs", choices=sorted(SPECS))
    parser.add_argument("--batch", type=int, default=16, help="trajectories per update")
    parser.add_argument("--hidden", type=int, default=128, help="env.hidden (the paper's 128)")
    parser.add_argument("--memory", default="none", help="env.memory: none or a core (lstm, srwm, ...)")
    parser.add_argument("--steps", type=int, default=3, help="updates per timing")
    parser.add_argument("--repeats", type=int, default=3, help="timings per setting (the median is kept)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--no-isolate", dest="isolate", action="store_false",
                        help="every setting in this process (CPU peak memory: an upper bound)")
    parser.add_argument("--out", type=Path, default=Path("bench_results/bench_graphs.json"), help="JSON output file")
    parser.add_argument("--one", nargs=2, metavar=("PROCESSOR", "N"), help=argparse.SUPPRESS)  # a child process
    raw = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(raw)
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(bench(args.one[0], int(args.one[1]), args)))
        return 0
    isolate = args.isolate and args.device == "cpu"
    child_argv = [a for a in raw if a != "--no-isolate"]
    rows = []
    print(f"{'processor':14s} {'n':>4s} {'steps':>5s} {'graphs/s':>10s} {'proc steps/s':>12s} {'peak MiB':>9s}")
    for n in args.sizes:
        for processor in args.processors:
            row = run_isolated(processor, n, child_argv) if isolate else bench(processor, n, args)
            rows.append(row)
            print(f"{processor:14s} {n:4d} {row['algorithm_steps']:5d} {row['graphs_per_s']:10.1f} "
                  f"{row['processor_steps_per_s']:12.1f} {row['peak_memory_mib']:9.1f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"setting": f"training updates of env=clrs/{args.algorithm} (encode-process-decode), batch {args.batch}, "
                          f"hidden {args.hidden}, memory {args.memory}; {args.repeats} timings of {args.steps} updates "
                          "(median), one warm-up update",
               "device": args.device, "threads": args.threads, "isolated_processes": isolate,
               "machine": f"{platform.machine()}, {os.cpu_count()} cores visible, torch {torch.__version__}",
               "results": rows}
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
