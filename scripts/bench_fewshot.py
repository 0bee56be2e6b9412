"""Benchmark of the few-shot task (metarl.fewshot.task): training episodes/s per core on glyphs, 5-way 1-shot (sync).

    python scripts/bench_fewshot.py                       # every core and protonet, the env=glyphs sizes
    python scripts/bench_fewshot.py --agents srwm,delta --steps 50 --threads 1

Each agent is built as ``python -m metarl.train env=glyphs agent=<name>`` builds it (the agent's YAML sizes,
Conv-4 32 channels); one update = sample a batch of episodes, forward, backward, Adam step. After two
warm-up updates, ``--steps`` updates are timed. Prints a table and writes JSON (bench_results/).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from metarl import cores
from metarl.engine.optim import make_optimizer
from metarl.fewshot.readers import load_split
from metarl.fewshot.task import build_model, episode_loss, sample_batch
from metarl.train import compose_config


def bench(agent: str, split, steps: int, batch_size: int, overrides=()) -> dict:
    cfg = compose_config("env=glyphs", f"agent={agent}", f"env.batch_size={batch_size}", *overrides)
    torch.manual_seed(0)
    model = build_model(cfg, split.image_shape)
    optimiser = make_optimizer(model, cfg.optim)  # the optimiser of the run: optim.name, lr, betas, eps
    generator = torch.Generator().manual_seed(0)

    def update():
        loss, _ = episode_loss(model, sample_batch(cfg.env, [split], batch_size, generator))
        optimiser.zero_grad(set_to_none=True)
        (loss + model.aux_loss()).backward()
        optimiser.step()

    for _ in range(2):
        update()
    start = time.perf_counter()
    for _ in range(steps):
        update()
    seconds = (time.perf_counter() - start) / steps
    return {"agent": agent, "episodes_per_s": batch_size / seconds, "ms_per_update": 1000 * seconds,
            "parameters": cores.count_parameters(model), "batch_size": batch_size}


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", default=",".join(cores.names() + ["protonet"]), help="comma-separated agents")
    parser.add_argument("--steps", type=int, default=20, help="timed updates per agent")
    parser.add_argument("--batch-size", type=int, default=32, help="episodes per update")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", default="bench_results/bench_fewshot.json", help="output file")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. env.backbone_channels=[64,64,64,64]")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    split = load_split("glyphs", "train")
    rows = []
    print(f"{'agent':12} {'episodes/s':>11} {'ms/update':>10} {'parameters':>11}")
    for agent in args.agents.split(","):
        row = bench(agent, split, args.steps, args.batch_size, args.overrides)
        rows.append(row)
        print(f"{agent:12} {row['episodes_per_s']:11.1f} {row['ms_per_update']:10.1f} {row['parameters']:11,d}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"setting": "glyphs 5-way 1-shot sync, 28x28, training updates",
                               "threads": torch.get_num_threads(), "torch": torch.__version__,
                               "machine": platform.machine(), "processor": platform.processor(),
                               "overrides": args.overrides, "results": rows}, indent=1))
    print(f"written to {out}")
    return rows


if __name__ == "__main__":
    main()
