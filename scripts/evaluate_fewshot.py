"""Evaluate a few-shot checkpoint: N-way 1-shot and 5-shot query accuracy on the test classes, over
>= 1000 episodes, with the 95% confidence interval 1.96 · std / sqrt(n) of the per-episode accuracies.

    python scripts/evaluate_fewshot.py runs/<date>-glyphs-srwm/best-val-accuracy.pt
    python scripts/evaluate_fewshot.py runs/<run>/best-val-accuracy.pt --shots 1,5 --episodes 2000 \
        --root /data/omniglot

The input is a checkpoint written by ``python -m metarl.train env=<few-shot env>``: ``best-val-accuracy.pt``
(the model of the best validation accuracy, the one to report) or ``checkpoint.pt`` (the last model).

A delayed-label checkpoint reports its accuracy per shot (images of the class seen before) instead.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from metarl.engine.checkpoint import load_checkpoint
from metarl.errors import CheckpointError, UserError
from metarl.fewshot.task import build_model, dataset_names, evaluate, load_splits

MIN_EPISODES = 1000


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="runs/<run>/best-val-accuracy.pt (or checkpoint.pt) written by "
                                           "python -m metarl.train")
    parser.add_argument("--shots", default="1,5", help="comma-separated K of the N-way K-shot episodes (sync)")
    parser.add_argument("--episodes", type=int, default=MIN_EPISODES, help=f"episodes per setting (>= {MIN_EPISODES})")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"], help="class split")
    parser.add_argument("--root", default=None, help="dataset folder, when it moved since training (env.root)")
    parser.add_argument("--batch-size", type=int, default=50, help="episodes per forward pass")
    parser.add_argument("--seed", type=int, default=0, help="seed of the episodes")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.episodes < MIN_EPISODES:
        parser.error(f"--episodes {args.episodes}: the protocol asks for at least {MIN_EPISODES}")

    if args.threads:
        torch.set_num_threads(args.threads)
    payload = load_checkpoint(args.checkpoint)
    if not payload.get("config"):
        raise CheckpointError(f"{args.checkpoint} holds no run config; pass a checkpoint written by "
                              "python -m metarl.train")
    cfg = OmegaConf.create(payload["config"])
    kind = cfg.env.get("kind") if "env" in cfg else None
    if kind != "fewshot":
        raise CheckpointError(f"{args.checkpoint} is not a few-shot checkpoint (env.kind={kind!r}); pass the "
                              "best-val-accuracy.pt of a run of env=glyphs|omniglot|miniimagenet|fc100")
    if args.root:
        cfg.env.root = args.root
    splits = load_splits(cfg.env, args.split)
    model = build_model(cfg, (splits[0].image_shape[0], cfg.env.image_size, cfg.env.image_size)).to(args.device)
    model.load_state_dict(payload["model"])
    shots = [int(k) for k in args.shots.split(",")] if cfg.env.protocol == "sync" else [cfg.env.shots]

    print(f"{args.checkpoint}: {cfg.env.dataset} {args.split} classes, agent={cfg.agent.name}, "
          f"protocol={cfg.env.protocol}, trained {cfg.env.ways}-way {cfg.env.shots}-shot for "
          f"{payload['counters']['step']} updates")
    results = {}
    for k in shots:
        result = evaluate(model, cfg.env, splits, args.episodes, args.seed, args.batch_size, args.device, shots=k,
                          names=dataset_names(cfg.env))
        results[f"{cfg.env.ways}-way {k}-shot"] = result
        print(f"{cfg.env.ways}-way {k}-shot: {100 * result['accuracy']:.2f} ± {100 * result['ci95']:.2f} % "
              f"(95% interval, {result['episodes']} episodes)")
        for key, value in result.items():
            if key.startswith("shot_") or key.endswith("/accuracy"):
                print(f"    {key}: {100 * value:.2f} %")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    try:
        main()
    except UserError as err:  # a missing or foreign checkpoint, a wrong dataset folder: one line, exit status 2
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
