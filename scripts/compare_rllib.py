"""Our IMPALA runner beside RLlib's IMPALA (new API stack, our agent as its RLModule), same env, same
model, same frame budget, in one run. Prints frames/s and return vs frames for both; writes JSON and a PNG.

    python scripts/compare_rllib.py --env cartpole --frames 200000
    python scripts/compare_rllib.py --env bigfish --frames 100000      # procgen, easy mode

RLlib gets its best settings for this machine that we know of (``metarl.rllib.impala_config``): several envs
per env runner, fractional CPUs so that nothing waits for resources (env runner 0.5 CPU, one remote learner
with 1 CPU).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from metarl.engine.logging import read_metrics
from metarl.train import compose_config, run

MODEL = {"core": "srwm", "d_model": 64, "num_layers": 1, "num_heads": 4, "d_ff": 128, "core_options": {"d_head": 16}}


def ours(env_name: str, frames: int, envs: int, unroll: int) -> dict:
    env_args = ["env=cartpole"] if env_name == "cartpole" else ["env=procgen", f"env.games=[{env_name}]"]
    overrides = [*env_args, "agent=srwm", f"agent.d_model={MODEL['d_model']}", f"agent.num_layers={MODEL['num_layers']}",
                 f"agent.num_heads={MODEL['num_heads']}", f"agent.d_ff={MODEL['d_ff']}", "agent.options.d_head=16",
                 f"impala.total_frames={frames}", f"runner.envs_per_actor={envs}", f"impala.batch_size={envs}",
                 f"impala.unroll_length={unroll}", "impala.eval_episodes=0", "progress=false"]
    cfg = compose_config(*overrides)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        result = run(cfg, Path(tmp))
        seconds = time.time() - start
        curve = [(row["step"], value) for row in read_metrics(tmp) for key, value in row.items()
                 if key.startswith("charts/episodic_return/")]
    # every frame our actors produce is trained on (the queue blocks the actors instead of dropping)
    return {"frames": result["frames"], "frames_trained": result["frames"], "seconds": seconds,
            "frames_per_s": result["frames"] / seconds, "trained_frames_per_s": result["frames"] / seconds,
            "curve": curve}


def rllib(env_name: str, frames: int, envs: int, unroll: int, runner_cpus: float, learner_cpus: float) -> dict:
    import ray
    from metarl.rllib import impala_config

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    if env_name == "cartpole":
        env_id, env_config = "CartPole-v1", {}
    else:  # one procgen slot per gymnasium env; RLlib's env runner vectorises them
        from ray.tune.registry import register_env
        from metarl.envs import ProcgenGymnasiumEnv

        register_env("metarl_procgen", ProcgenGymnasiumEnv)
        env_id, env_config = "metarl_procgen", {"game": env_name, "distribution_mode": "easy"}
    config = impala_config(env_id, MODEL, env_config, envs_per_runner=envs, unroll=unroll,
                           lr=1e-3 if env_name == "cartpole" else 6e-4, runner_cpus=runner_cpus,
                           learner_cpus=learner_cpus)
    algo = config.build_algo()
    curve, sampled, trained, start = [], 0, 0, time.time()
    while sampled < frames:
        result = algo.train()
        runners = result.get("env_runners", {})
        sampled = runners.get("num_env_steps_sampled_lifetime",
                              result.get("num_env_steps_sampled_lifetime", sampled))
        # IMPALA's learner may fall behind its env runners; frames it never trained on are not progress
        trained = result.get("learners", {}).get("default_policy", {}).get("num_module_steps_trained_lifetime",
                                                                           trained)
        ret = runners.get("episode_return_mean")
        if not curve and sampled == 0:
            print("rllib result keys:", sorted(result), sorted(runners))
        if ret is not None and not np.isnan(ret):
            curve.append((sampled, float(ret)))
    seconds = time.time() - start
    algo.stop()
    ray.shutdown()
    return {"frames": sampled, "frames_trained": trained, "seconds": seconds, "frames_per_s": sampled / seconds,
            "trained_frames_per_s": trained / seconds, "curve": curve}


def binned(curve, frames, bins=10):
    edges = np.linspace(0, frames, bins + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        values = [v for f, v in curve if lo < f <= hi]
        out.append(float(np.mean(values)) if values else float("nan"))
    return edges[1:].tolist(), out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="cartpole", help="cartpole or a procgen game (easy mode)")
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--envs", type=int, default=16, help="envs per actor / env runner")
    parser.add_argument("--unroll", type=int, default=20, help="unroll length / rollout fragment length")
    parser.add_argument("--rllib-runner-cpus", type=float, default=0.5, help="CPUs of RLlib's env runner")
    parser.add_argument("--rllib-learner-cpus", type=float, default=1.0, help="CPUs of RLlib's remote learner")
    parser.add_argument("--out", default="bench_results/compare_rllib")
    args = parser.parse_args()
    results = {"metarl": ours(args.env, args.frames, args.envs, args.unroll),
               "rllib": rllib(args.env, args.frames, args.envs, args.unroll, args.rllib_runner_cpus,
                              args.rllib_learner_cpus)}
    print(f"\n{args.env}, {args.frames} frames, model {MODEL}")
    print(f"{'runner':8} {'frames/s':>10} {'trained/s':>10} {'seconds':>9}   return by frames (10 bins)")
    for name, r in results.items():
        edges, returns = binned(r["curve"], args.frames)
        r["binned_return"] = {"frames": edges, "return": returns}
        print(f"{name:8} {r['frames_per_s']:10.0f} {r['trained_frames_per_s']:10.0f} {r['seconds']:9.1f}   "
              + " ".join(f"{x:6.1f}" for x in returns))
    ratio = results["metarl"]["frames_per_s"] / results["rllib"]["frames_per_s"]
    trained_ratio = results["metarl"]["trained_frames_per_s"] / results["rllib"]["trained_frames_per_s"]
    print(f"metarl / rllib frames/s: {ratio:.2f}x sampled, {trained_ratio:.2f}x trained (goal >= 2x)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps({"env": args.env, "frames": args.frames, "model": MODEL,
                                               "ratio": ratio, "trained_ratio": trained_ratio, **results}, indent=1))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        points = [(f, v) for f, v in zip(r["binned_return"]["frames"], r["binned_return"]["return"]) if v == v]
        ax.plot([f for f, _ in points], [v for _, v in points], marker="o",
                label=f"{name} ({r['frames_per_s']:.0f} frames/s)")
    ax.set_xlabel("env frames"), ax.set_ylabel("episode return"), ax.set_title(f"IMPALA on {args.env}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(f"{out}.png", dpi=100)
    print(f"wrote {out}.json and {out}.png")


if __name__ == "__main__":
    main()
