"""Benchmark of the ops and cores: tokens/s, forward and forward+backward, every mode side by side.

    python scripts/bench_cores.py                 # the full grid (several minutes on 2 cores)
    python scripts/bench_cores.py --quick         # T in {64, 256}, d_head 16 only

For each op (linear_attention, delta_rule, srwm) and core, at B=8, H=4, d_head in {16, 64} and
T in {64, 256, 1024, 4096}, it times every mode; the per-step Python loop is the "recurrent" mode (the
oracle, written like the maths). A measurement whose smaller-T sibling took longer than --budget seconds
is skipped (shown as "-"). The modes of one op are timed in alternation and the fastest of
--repeats rounds is kept, so ratios stay meaningful on a busy machine. Prints a table and the goal checks, and writes JSON (bench_results/).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from metarl import cores
from metarl.ops import delta_rule, linear_attention, srwm

B, H = 8, 4


def op_inputs(op, T, d, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_()

    if op == "srwm":
        return (rnd(B, T, H, d), rnd(B, H, d, d, scale=d ** -0.5), rnd(B, H, d, d, scale=d ** -0.5),
                rnd(B, H, d, d, scale=d ** -0.5), rnd(B, H, d, 4, scale=d ** -0.5))
    q = torch.softmax(torch.randn(B, T, H, d, generator=g, dtype=dtype), -1).requires_grad_()
    k = torch.softmax(torch.randn(B, T, H, d, generator=g, dtype=dtype), -1).requires_grad_()
    v = rnd(B, T, H, d)
    if op == "delta_rule":
        return q, k, v, torch.rand(B, T, H, generator=g, dtype=dtype).requires_grad_()
    return q, k, v


OPS = {
    "linear_attention": (linear_attention, ("recurrent", "chunk")),
    "delta_rule": (delta_rule, ("recurrent", "chunk")),
    "srwm": (srwm, ("recurrent", "fused")),
}
CORES = {  # name -> (mode option name or None, modes)
    "lt": ("mode", ("recurrent", "chunk")),
    "delta": ("mode", ("recurrent", "chunk")),
    "srwm": ("mode", ("recurrent", "fused")),
    "recdelta": (None, ("recurrent",)),
    "lstm": (None, ("cudnn-style",)),
    "transformer": (None, ("softmax",)),
}


def make_step(fn, backward):
    """One timed call: fn() (+ backward of its sum)."""
    def once():
        start = time.perf_counter()
        out = fn()
        if backward:
            out.sum().backward()
        return time.perf_counter() - start
    return once


def op_step(name, mode, T, d, backward):
    fn, _ = OPS[name]
    args = op_inputs(name, T, d)
    step = make_step(lambda: fn(*args, mode=mode)[0], backward)
    return step if backward else lambda: _no_grad(step)


def core_step(name, mode_key, mode, T, d, backward):
    options = {"d_head": d} if name == "srwm" else {}
    if mode_key:
        options[mode_key] = mode
    torch.manual_seed(0)
    core = cores.make(name, d_model=H * d, num_layers=1, num_heads=H, **options)
    x = torch.randn(B, T, H * d, requires_grad=backward)
    step = make_step(lambda: core(x)[0], backward)
    return step if backward else lambda: _no_grad(step)


def _no_grad(step):
    with torch.no_grad():
        return step()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="T in {64, 256}, d_head 16 only")
    parser.add_argument("--budget", type=float, default=20.0, help="skip longer T once one run takes this many s")
    parser.add_argument("--out", default="bench_results/bench_cores.json", help="JSON output file")
    parser.add_argument("--only", default=None, help="comma-separated subset of op/core names")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per measurement (the fastest is kept)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (1 avoids OpenMP stalls when other processes share the cores)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = (64, 256) if args.quick else (64, 256, 1024, 4096)
    heads = (16,) if args.quick else (16, 64)
    only = set(args.only.split(",")) if args.only else None

    # The modes of one op/core are timed in turn, `--repeats` rounds, keeping each mode's fastest round:
    # the ratios compare runs made side by side, and the minimum shrugs off other load on the machine.
    jobs = [("op", n, modes) for n, (_, modes) in OPS.items()] + [("core", n, modes) for n, (_, modes) in CORES.items()]
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, B={B}, H={H}; tokens/s = B*T / seconds "
          f"(best of {args.repeats})")
    print(f"{'kind':5} {'name':17} {'mode':11} {'d':>3} {'T':>5} {'fwd tok/s':>12} {'fwd+bwd tok/s':>14}")
    for kind, name, modes in jobs:
        if only and name not in only:
            continue
        for d in heads:
            skip = {(m, b): False for m in modes for b in (False, True)}
            for T in lengths:
                results = {m: {"kind": kind, "name": name, "mode": m, "d_head": d, "T": T} for m in modes}
                for backward in (False, True):
                    key = "fwd_bwd_tokens_per_s" if backward else "fwd_tokens_per_s"
                    steps = {}
                    for m in modes:
                        if skip[(m, backward)]:
                            results[m][key] = None
                        elif kind == "op":
                            steps[m] = op_step(name, m, T, d, backward)
                        else:
                            steps[m] = core_step(name, CORES[name][0], m, T, d, backward)
                    best = {m: step() for m, step in steps.items()}  # warm-up round (builds the C kernel)
                    best = {m: float("inf") for m in steps}
                    for _ in range(args.repeats):
                        for m, step in steps.items():
                            if best[m] < args.budget or best[m] == float("inf"):
                                best[m] = min(best[m], step())
                    for m, seconds in best.items():
                        results[m][key] = B * T / seconds
                        skip[(m, backward)] = seconds > args.budget
                for m in modes:
                    rows.append(results[m])
                    fmt = lambda v: f"{v:12.0f}" if v else f"{'-':>12}"
                    print(f"{kind:5} {name:17} {m:11} {d:3d} {T:5d} {fmt(results[m]['fwd_tokens_per_s'])} "
                          f"{fmt(results[m]['fwd_bwd_tokens_per_s']):>14}", flush=True)

    goals = check_goals(rows)
    print("\nGoals (measured side by side in this run):")
    for goal in goals:
        print(f"  [{goal['status']}] {goal['goal']}: {goal['measured']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "torch": torch.__version__,
                               "threads": torch.get_num_threads(), "B": B, "H": H,
                               "rows": rows, "goals": goals}, indent=1))
    print(f"wrote {out}")


def lookup(rows, kind, name, mode, d, T, key="fwd_bwd_tokens_per_s"):
    for r in rows:
        if (r["kind"], r["name"], r["mode"], r["d_head"], r["T"]) == (kind, name, mode, d, T):
            return r.get(key)
    return None


def check_goals(rows):
    goals = []

    def add(goal, value, threshold, higher_is_better=True):
        if value is None:
            goals.append({"goal": goal, "measured": "not measured", "status": "SKIP"})
            return
        ok = value >= threshold if higher_is_better else value <= threshold
        goals.append({"goal": goal, "measured": f"{value:.2f}", "status": "PASS" if ok else "FAIL"})

    ds = sorted({r["d_head"] for r in rows})
    for name in ("delta_rule", "linear_attention"):
        for d in ds:
            fast, loop = lookup(rows, "op", name, "chunk", d, 1024), lookup(rows, "op", name, "recurrent", d, 1024)
            add(f"{name} chunk / loop, fwd+bwd, T=1024, d={d} >= 10x", fast / loop if fast and loop else None, 10)
    for name, modes in (("delta_rule", ("chunk", "recurrent")), ("linear_attention", ("chunk", "recurrent")),
                        ("srwm", ("fused", "recurrent"))):
        for mode in modes:
            for d in ds:
                a, b = lookup(rows, "op", name, mode, d, 256), lookup(rows, "op", name, mode, d, 4096)
                add(f"{name} {mode} cost/token T=4096 vs T=256, d={d} <= 1.5x", a / b if a and b else None, 1.5,
                    higher_is_better=False)
    for d in ds:
        fast, loop = lookup(rows, "op", "srwm", "fused", d, 256), lookup(rows, "op", "srwm", "recurrent", d, 256)
        add(f"srwm fused / loop, fwd+bwd, T=256, d={d} >= 3x", fast / loop if fast and loop else None, 3)
    return goals


if __name__ == "__main__":
    main()
