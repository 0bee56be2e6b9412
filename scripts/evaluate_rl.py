"""Evaluate an RL checkpoint: mean ± standard error of the return per game over N complete episodes per
game (each env slot plays a fixed quota, so short episodes are not over-represented), on the training
levels and on procgen's unseen levels (the test protocol), with greedy or sampled actions, beside a random
policy. The same code as the final evaluation of a run (metarl.rl.evaluate, metarl.rl.monitor).

    python scripts/evaluate_rl.py runs/<date>-procgen-srwm/checkpoint.pt --episodes 20 [--greedy] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from omegaconf import OmegaConf

from metarl.engine.checkpoint import load_checkpoint
from metarl.rl.evaluate import evaluate
from metarl.rl.monitor import format_report
from metarl.rl.setup import build_agent, make_rl_env


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint.pt written by python -m metarl.train")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per game")
    parser.add_argument("--envs", type=int, default=8, help="parallel envs")
    parser.add_argument("--greedy", action="store_true", help="argmax actions instead of sampling")
    parser.add_argument("--splits", default=None, help="comma-separated: train,test (default: both for procgen)")
    parser.add_argument("--no-random", action="store_true", help="skip the random-policy baseline")
    parser.add_argument("--seed", type=int, default=12345, help="evaluation seed")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)

    payload = load_checkpoint(args.checkpoint)
    cfg = OmegaConf.create(payload["config"])
    if cfg.env.get("kind") != "rl":
        raise SystemExit(f"{args.checkpoint} is not an RL checkpoint (env.kind={cfg.env.get('kind')!r})")
    splits = args.splits.split(",") if args.splits else (["train", "test"] if cfg.env.type == "procgen" else ["train"])
    env = make_rl_env(cfg.env, args.envs, seed=args.seed)
    agent = build_agent(cfg, env)
    agent.load_state_dict(payload["model"])
    env.close()

    results = {}
    print(f"{args.checkpoint}: {payload['counters'].get('frames', '?')} frames, "
          f"{'greedy' if args.greedy else 'sampled'} actions, {args.episodes} episodes per game")
    for split in splits:
        for policy in (["trained"] if args.no_random else ["trained", "random"]):
            env = make_rl_env(cfg.env, args.envs, seed=args.seed, split=split)
            result = evaluate(env, agent if policy == "trained" else None, args.episodes, greedy=args.greedy,
                              seed=args.seed)
            env.close()
            for game, r in result.items():
                results[f"{split}/{policy}/{game}"] = r
                print(f"{split:6} {game:14} {policy:8} {r['mean']:9.2f} ± {r['stderr']:.2f} "
                      f"(std {r['std']:.2f}, {r['episodes']} episodes)")
    if not args.no_random:
        print(format_report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
