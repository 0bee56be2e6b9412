"""End-to-end IMPALA throughput on procgen, beside its parts, in one run.

    python scripts/bench_rl.py [--game starpilot] [--agent srwm] [--frames 20000] [--amp off|on|both]

At the main job's settings (``env=procgen``: 16 envs, unroll 20, batch 16), measures env frames/s of (a) the
env alone with random actions, (b) policy inference alone (actor side, one step at a time with the core
state carried), (c) the actor (env + inference), (d) the learner alone (V-trace update on a full batch),
(e) the same learner with the core cutting the time axis at every reset step (how the cores ran before
their ops took the reset mask), and (f) the whole local runner with ``runner.schedule`` async and
pipeline; prints a table with the cost per frame of each part, and writes JSON to bench_results/bench_rl.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from metarl.cores.base import Mixer
from metarl.envs import make_env
from metarl.rl.impala import Actor, Learner, clone_for_acting, collate
from metarl.rl.local import train_impala_local
from metarl.rl.setup import build_agent
from metarl.train import compose_config


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="starpilot")
    parser.add_argument("--agent", default="srwm")
    parser.add_argument("--frames", type=int, default=20000, help="frames for the end-to-end run")
    parser.add_argument("--amp", default="both", choices=["off", "on", "both"], help="impala.amp (both: side by side)")
    parser.add_argument("--out", default="bench_results/bench_rl.json")
    args = parser.parse_args()
    modes = ["off", "on"] if args.amp == "both" else [args.amp]
    results = {mode: measure(args, mode) for mode in modes}
    first = results[modes[0]]
    print(f"procgen {args.game} easy, agent={args.agent}, {first['envs']} envs, unroll {first['unroll']}, "
          f"batch {first['batch']}, torch threads {torch.get_num_threads()}; frames/s with impala.amp=" + "/".join(modes))
    print(f"{'part':30}" + "".join(f"{'amp=' + m:>12}" for m in modes) + ("    on/off" if len(modes) == 2 else ""))
    for part in first["frames_per_s"]:
        values = [results[m]["frames_per_s"][part] for m in modes]
        print(f"{part:30}" + "".join(f"{v:12.0f}" for v in values) + (f"{values[1] / values[0]:10.2f}x" if len(values) == 2 else ""))
    for mode in modes:
        rows = results[mode]["frames_per_s"]
        print(f"amp={mode}: acting {1000 / rows['actor (env + inference)']:.2f} ms/frame (env "
              f"{1000 / rows['env alone (random actions)']:.2f}, inference {1000 / rows['policy inference alone']:.2f}), "
              f"learning {1000 / rows['learner alone (update)']:.2f} ms/frame; overlapped end to end "
              f"{rows['end to end (runner.schedule=async)']:.0f} frames/s (async), "
              f"{rows['end to end (runner.schedule=pipeline)']:.0f} (pipeline); resets in the learner batch: "
              f"{results[mode]['resets_in_learner_batch']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "torch": torch.__version__, "game": args.game,
                               "agent": args.agent, "results": results}, indent=1))
    print(f"wrote {out}")


def measure(args, amp: str) -> dict:
    """frames/s of the env alone, inference alone, the actor, the learner alone and the local runner."""
    overrides = ("env=procgen", f"env.games=[{args.game}]", f"agent={args.agent}", "progress=false",
                 f"impala.total_frames={args.frames}", "impala.eval_episodes=0", f"impala.amp={amp}")
    cfg = compose_config(*overrides)
    n, T, B = cfg.runner.envs_per_actor, cfg.impala.unroll_length, cfg.impala.batch_size
    rows = {}
    torch.manual_seed(0)
    env = make_env("procgen", n, seed=0, games=[args.game], distribution_mode="easy")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    steps = 300
    start = time.perf_counter()
    for _ in range(steps):
        env.step(rng.integers(0, env.num_actions, n))
    rows["env alone (random actions)"] = n * steps / (time.perf_counter() - start)

    agent = build_agent(cfg, env)
    actor = Actor(env, clone_for_acting(agent), T, seed=0)
    obs = torch.from_numpy(env.reset(seed=0))
    state = actor.agent.initial_state(n)
    zeros, reset = torch.zeros(n, 1, dtype=torch.long), torch.zeros(n, 1, dtype=torch.bool)
    with torch.no_grad():
        actor.agent(obs[:, None], zeros, zeros.float(), reset, state)  # warm-up (builds the C kernel)
        start = time.perf_counter()
        for _ in range(100):
            _, _, state = actor.agent(obs[:, None], zeros, zeros.float(), reset, state)
    rows["policy inference alone"] = n * 100 / (time.perf_counter() - start)

    start = time.perf_counter()
    rollouts = [actor.unroll() for _ in range(8 * B // n)]
    rows["actor (env + inference)"] = 8 * B * T / (time.perf_counter() - start)
    # the learner's batch: the rollouts with the most episode resets (as in a run past its first episodes)
    rollouts = sorted(rollouts, key=lambda r: -int(r["reset"].sum()))[:B // n]

    learner = Learner(agent, cfg.impala, cfg.optim)
    batch = collate(rollouts)
    resets = int(batch["reset"].sum())

    def learner_frames_per_s():
        learner.learn(batch)  # warm-up
        start = time.perf_counter()
        for _ in range(3):
            learner.learn(batch)
        return 3 * B * T / (time.perf_counter() - start)

    rows["learner alone (update)"] = learner_frames_per_s()
    mixers = {type(m) for m in agent.modules() if isinstance(m, Mixer) and m.resets_in_op}
    for mixer in mixers:  # before: run_with_resets cuts the time axis at every step where a row resets
        mixer.resets_in_op = False
    try:
        rows["learner, time axis cut at resets"] = learner_frames_per_s()
    finally:
        for mixer in mixers:
            mixer.resets_in_op = True
    env.close()

    for schedule in ("async", "pipeline"):
        with tempfile.TemporaryDirectory() as tmp:
            result = train_impala_local(compose_config(*overrides, f"runner.schedule={schedule}"), Path(tmp))
        rows[f"end to end (runner.schedule={schedule})"] = result["frames_per_s"]
    return {"envs": n, "unroll": T, "batch": B, "resets_in_learner_batch": resets, "frames_per_s": rows}


if __name__ == "__main__":
    main()
