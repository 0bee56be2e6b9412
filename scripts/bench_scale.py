"""Data-parallel scale-out of an engine task on Ray Train, measured on this machine.

    python scripts/bench_scale.py [--env glyphs] [--agent srwm] [--steps 30] [--workers 1 2]

Trains the same task for ``--steps`` updates in one process (``runner=local``) and on Ray Train with each
``--workers`` count (``runner=ray``, gloo, the global batch split across workers), and prints the training
throughput (the task's ``charts/<unit>_per_s``, measured by the loop over the updates only) beside the
per-update communication: every worker all-reduces the flat gradient once per update, P parameters x 4
bytes; a ring all-reduce sends and receives 2 (W-1)/W of that per worker. With a compute time c per update
on one worker and a link of bandwidth b, W workers take about c / W + 2 (W-1)/W · 4P / b per update: the
numbers here let a user predict the speed-up on a cluster. On a 2-core machine the workers share the cores,
so this shows the overhead, not a speed-up. Writes JSON to bench_results/bench_scale.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import ray
import torch

from metarl.train import build_engine_task, compose_config, run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="glyphs")
    parser.add_argument("--agent", default="srwm")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32, help="the global batch")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--out", default="bench_results/bench_scale.json")
    args = parser.parse_args()
    common = [f"env={args.env}", f"agent={args.agent}", f"optim.steps={args.steps}", f"env.eval_every={10 ** 9}",
              f"env.batch_size={args.batch_size}", "progress=false", "threads=1", "checkpoint_minutes=1000"]
    if args.env in ("glyphs", "omniglot", "miniimagenet", "fc100"):
        common += ["env.test_episodes=0"]
    cfg = compose_config(*common)
    params = sum(p.numel() for p in build_engine_task(cfg).build_model().parameters() if p.requires_grad)
    rows = []

    def measure(label, workers, overrides):
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            result = run(compose_config(*common, *overrides), Path(folder))
            wall = time.perf_counter() - start
        key = next(k for k in result if k.startswith("charts/") and k.endswith("_per_s"))
        ring = 2 * (workers - 1) / workers * 4 * params
        rows.append({"runner": label, "workers": workers, key.split("/")[1]: result[key], "wall_s": wall,
                     "allreduce_MB_per_update_per_worker": ring / 1e6})
        print(f"{label:22} {workers:7d} {result[key]:14.1f} {wall:8.1f} {ring / 1e6:14.3f}", flush=True)

    print(f"{args.env}/{args.agent}: {params:,} parameters, a gradient of {4 * params / 1e6:.2f} MB; global batch "
          f"{args.batch_size}, {args.steps} updates")
    print(f"{'runner':22} {'workers':>7} {'units/s':>14} {'wall s':>8} {'MB/update/wkr':>14}")
    measure("local (one process)", 1, [])
    ray.init(num_cpus=args.cpus, include_dashboard=False)
    try:
        for workers in args.workers:
            measure("ray train", workers, ["runner=ray", f"runner.num_workers={workers}",
                                           f"runner.worker_cpus={args.cpus / max(args.workers):g}"])
    finally:
        ray.shutdown()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "torch": torch.__version__, "env": args.env,
                               "agent": args.agent, "parameters": params, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
