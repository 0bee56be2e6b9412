"""Training throughput of the language model per core: tokens/s of full updates (forward, backward, Adam step)
with the state carried and detached between segments, as ``env=lm`` trains.

    python scripts/bench_lm.py                                   # d_model 256, 4 layers, T 256, B 16, every core
    python scripts/bench_lm.py --cores srwm,transformer --ff moe --threads 1 --steps 5
    python scripts/bench_lm.py --device cuda

Byte vocabulary (256), random tokens (the speed does not depend on the text), one warm-up update, then the
median of ``--repeats`` timings of ``--steps`` updates each. The Transformer gets a memory of T steps (the
default ``env.memory`` relation: context = memory + 1) and the relative encoding. Prints a table and writes
JSON to ``--out`` (``bench_results/bench_lm.json``).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from metarl import cores
from metarl.cores import detach_state
from metarl.supervised.lm.task import build_language_model

CORES = ("lstm", "lt", "delta", "recdelta", "srwm", "transformer")


def bench(name: str, ff: str, d_model: int, layers: int, heads: int, unroll: int, batch: int, steps: int,
          repeats: int, device: str) -> dict:
    agent = {"name": name, "d_model": d_model, "num_layers": layers, "num_heads": heads, "ff": ff,
             "d_ff": 4 * d_model, "options": {"positional": "relative"} if name == "transformer" else {}}
    torch.manual_seed(0)
    model = build_language_model(agent, 256, memory=unroll).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    data = torch.randint(0, 256, (batch, unroll + 1), device=device)
    state = None

    def update():
        nonlocal state
        logits, new_state = model(data[:, :-1], state)
        loss = F.cross_entropy(logits.flatten(0, 1), data[:, 1:].flatten()) + model.core.aux_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state = detach_state(new_state)

    def synchronize():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    update()
    synchronize()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(steps):
            update()
        synchronize()
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    return {"core": name, "ff": ff, "parameters": cores.count_parameters(model),
            "tokens_per_s": steps * batch * unroll / seconds, "seconds_per_update": seconds / steps}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", default=",".join(CORES), help="comma-separated core names")
    parser.add_argument("--ff", default="dense", help="feed-forward: dense | moe | pkm (comma-separated for several)")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--unroll", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="updates per timing")
    parser.add_argument("--repeats", type=int, default=3, help="timings per core (the median is kept)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="bench_results/bench_lm.json", help="JSON output file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print(f"{'core':12s} {'ff':6s} {'params':>10s} {'tokens/s':>10s} {'s/update':>9s}")
    for ff in args.ff.split(","):
        for name in args.cores.split(","):
            row = bench(name, ff, args.d_model, args.layers, args.heads, args.unroll, args.batch, args.steps,
                        args.repeats, args.device)
            rows.append(row)
            print(f"{name:12s} {ff:6s} {row['parameters']:>10,} {row['tokens_per_s']:>10,.0f} "
                  f"{row['seconds_per_update']:>9.3f}", flush=True)
    report = {"settings": {k: v for k, v in vars(args).items() if k != "out"}, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
              "results": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
