"""Dense vs σ-MoE vs PKM feed-forwards at equal parameter counts on the default LM corpus (CPU size), after
Csordás, Irie & Schmidhuber (EMNLP 2023 Findings), "Approximating Two-Layer Feedforward Networks for Efficient
Transformers", with the paper's ablations and σ-MoE inside DeltaNet and SRWM cores.

    python scripts/reproduce_moe.py [--steps 300] [--threads 1] [--out docs/results] [--only dense,moe]

Every variant: ``env=lm`` (Python's own sources and docs as bytes, no download), B = 16 streams, segments of 128
bytes with the state carried, a 2-layer d_model 128 core with 4 heads, Adam with a cosine schedule, the same
seed and data order. The Transformer is the Transformer-XL-style ``transformer`` core (relative encoding, a
memory of 128 steps). Feed-forwards at equal parameters (``metarl.layers.feedforward``):

- ``dense``: d_ff 512 (131,712 parameters per layer);
- ``moe``: the σ-MoE with the paper's settings (sigmoid selection, top-K = 4, expert dropout 0.05, entropy
  regulariser 1e-4, pre-LN init scale), experts of 32 units, as many as ``match_moe_to_dense`` allows
  (15: 124,800 parameters per layer; 4 x 32 = 128 hidden units active per token, a quarter of the dense layer);
- ``pkm``: product-key memory in Csordás et al.'s variant (ReLU scores, no query projection, no BatchNorm),
  4 heads, 30² = 900 slots (130,560 parameters per layer, sized explicitly), top-32 slots per head (128 active
  per token, as for the σ-MoE);
- ablations: ``moe_softmax`` (softmax over all experts before the top-K instead of the sigmoid), ``moe_noreg``
  (no entropy regulariser);
- beyond the paper: ``delta_dense``, ``delta_moe``, ``srwm_dense``, ``srwm_moe`` (the same feed-forwards in
  DeltaNet and SRWM cores). The SRWM variants restart their state every 8 segments (``env.reset_every=8``,
  1024 bytes; also in evaluation): carried through whole epochs, as the others are, the self-modified weights
  grow without bound and the dense SRWM diverged (NaN at update 243 at lr 2e-3, 213 at lr 1e-3).

Reported per variant: parameters (all, and the feed-forwards'), feed-forward FLOPs per token (forward,
2 x multiply-adds, top-k and sorting not counted), training tokens/s (this machine, ``--threads``), the best
validation bpc over the whole validation split and the test bpc of that model, and for σ-MoEs the experts
never selected on the validation split (dead experts) per layer. Writes ``moe_lm.{md,json,png}`` to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

from metarl.cores import count_parameters
from metarl.engine import load_checkpoint, read_metrics
from metarl.engine import train as engine_train
from metarl.errors import NonFiniteLossError
from metarl.layers.feedforward import SigmaMoE, match_moe_to_dense
from metarl.supervised.lm.streams import Streams
from metarl.supervised.lm.task import LanguageModelling
from metarl.train import compose_config

D_MODEL, LAYERS, HEADS, D_FF = 128, 2, 4, 512
MOE = {**match_moe_to_dense(D_MODEL, D_FF, expert_size=32), "top_k": 4, "expert_dropout": 0.05,
       "entropy_reg": 1e-4, "weight_std_scale": "preln"}
PKM = {"num_keys": 30, "heads": 4, "top_k": 32, "score_activation": "relu", "query_projection": False,
       "query_norm": False, "init": "csordas", "weight_std_scale": "preln"}
# name: (core, ff, ff_options, selection)
VARIANTS = {
    "dense": ("transformer", "dense", {}, "-"),
    "moe": ("transformer", "moe", MOE, "sigmoid"),
    "pkm": ("transformer", "pkm", PKM, "-"),
    "moe_softmax": ("transformer", "moe", MOE, "softmax"),
    "moe_noreg": ("transformer", "moe", {**MOE, "entropy_reg": 0.0}, "sigmoid"),
    "delta_dense": ("delta", "dense", {}, "-"),
    "delta_moe": ("delta", "moe", MOE, "sigmoid"),
    "srwm_dense": ("srwm", "dense", {}, "-"),
    "srwm_moe": ("srwm", "moe", MOE, "sigmoid"),
}


def softmax_route(self, x):
    """The ablation of the paper's Table 4: softmax over all experts (before the top-K) instead of sigmoids."""
    logits = x @ self.w_sel.t()
    scores = torch.softmax(logits, dim=-1)
    if self.training and self.expert_dropout > 0:
        scores = scores.masked_fill(torch.rand_like(scores) < self.expert_dropout, float("-inf"))
    gates, experts = scores.topk(self.top_k, dim=-1, sorted=False)
    return logits, gates.clamp_min(0.0), experts


class Variant(LanguageModelling):
    """The LM task with the σ-MoE selection swapped for the softmax when asked."""

    selection_function = "sigmoid"

    def build_model(self):
        model = super().build_model()
        if self.selection_function == "softmax":
            for module in model.modules():
                if isinstance(module, SigmaMoE):
                    module.route = types.MethodType(softmax_route, module)
        return model


def ff_flops(ff: str, options: dict) -> int:
    """Forward FLOPs per token of the feed-forwards of the whole stack (2 x multiply-adds)."""
    if ff == "dense":
        per_layer = 4 * D_MODEL * D_FF
    elif ff == "moe":
        per_layer = 2 * D_MODEL * options["num_experts"] + 4 * D_MODEL * options["expert_size"] * options["top_k"]
    else:  # PKM without query projection: sub-key scores, k x k candidate sums, weighted sum of values
        h, n, k = options["heads"], options["num_keys"], options["top_k"]
        per_layer = 2 * h * n * D_MODEL + h * k * k + 2 * h * k * D_MODEL
    return LAYERS * per_layer


@torch.no_grad()
def dead_experts(task: LanguageModelling, model) -> list:
    """Per σ-MoE layer: experts that no token of the validation split selects (evaluation mode)."""
    layers = [m for m in model.modules() if isinstance(m, SigmaMoE)]
    if not layers:
        return []
    counts = [torch.zeros(m.num_experts, dtype=torch.long) for m in layers]

    def hook(index):
        def count(module, inputs, output):
            _, _, experts = module.route(inputs[0].reshape(-1, module.d_model))
            counts[index].add_(torch.bincount(experts.flatten(), minlength=module.num_experts))
        return count

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(layers)]
    model.eval()
    streams, state = Streams(task.tokens["valid"], task.cfg.env.eval_batch_size, pad=True), None
    for i in range(streams.num_segments(task.cfg.env.unroll)):
        _, state = model(streams.segment(i, task.cfg.env.unroll).inputs, state)
    for handle in handles:
        handle.remove()
    return [int((c == 0).sum()) for c in counts]


def ff_parameter_total(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if ".ff." in n)


def run_variant(name: str, steps: int, threads: int, work: Path, lr: float = 2e-3) -> dict:
    """Train one variant; a run whose loss becomes non-finite is retried once at half the learning rate (the
    row records the rate used and where the first run diverged)."""
    diverged = []
    for attempt, rate in enumerate((lr, lr / 2)):
        try:
            row = train_variant(name, steps, threads, work / f"attempt{attempt}", rate)
            if diverged:
                row["diverged"] = diverged[0]
            return row
        except NonFiniteLossError as err:
            step = int(str(err).split("at update ")[1].split(";")[0])
            diverged.append({"lr": rate, "update": step})
            print(f"{name}: non-finite loss at update {step} with lr {rate}", flush=True)
    core, ff, options, selection = VARIANTS[name]
    model = make_task(name, steps, threads, lr / 2).build_model()
    nan = float("nan")
    return {"variant": name, "core": core, "ff": ff, "selection": selection, "ff_options": options,
            "parameters": count_parameters(model), "ff_parameters": ff_parameter_total(model), "ff_flops_per_token": ff_flops(ff, options), "valid_bpc": nan,
            "best_step": 0, "test_bpc": nan, "tokens_per_s": nan, "wall_s": nan, "dead_experts": [], "history": [],
            "lr": lr / 2, "diverged": diverged[0], "diverged_again": diverged[1]}


SRWM_RESET_EVERY = 8  # segments: the SRWM's weights restart every 1024 bytes (see the module docstring)


def make_task(name: str, steps: int, threads: int, lr: float) -> Variant:
    """The LM task of one variant (its config: the module docstring)."""
    core, ff, options, selection = VARIANTS[name]
    overrides = ["env=lm", "agent=transformer" if core == "transformer" else f"agent={core}",
                 f"agent.d_model={D_MODEL}", f"agent.num_layers={LAYERS}", f"agent.num_heads={HEADS}",
                 f"agent.d_ff={D_FF}", f"agent.ff={ff}", f"optim.steps={steps}", f"optim.lr={lr}",
                 f"optim.warmup_steps={max(steps // 20, 1)}", f"env.eval_every={max(steps // 4, 1)}",
                 "env.unroll=128", "env.memory=128", "env.batch_size=16", "progress=false", f"threads={threads}"]
    if core == "transformer":
        overrides.append("agent.options.positional=relative")
    if core == "srwm":
        overrides += ["agent.options.d_head=32", f"env.reset_every={SRWM_RESET_EVERY}"]
    overrides += [f"+agent.ff_options.{k}={v}" for k, v in options.items()]
    task = Variant(compose_config(*overrides))
    task.selection_function = selection
    return task


def train_variant(name: str, steps: int, threads: int, work: Path, lr: float) -> dict:
    core, ff, options, selection = VARIANTS[name]
    torch.set_num_threads(threads)
    task = make_task(name, steps, threads, lr)
    cfg = task.cfg
    run_dir = work / name
    started = time.time()
    final = engine_train(task, cfg, run_dir)
    wall = time.time() - started
    model = task.build_model()
    load_checkpoint(run_dir / "best-valid-bpc.pt", model)
    history = [(row["step"], row["eval/valid/bpc"]) for row in read_metrics(run_dir) if "eval/valid/bpc" in row]
    ff_params = ff_parameter_total(model)
    return {
        "variant": name, "core": core, "ff": ff, "selection": selection, "ff_options": options,
        "parameters": count_parameters(model), "ff_parameters": ff_params,
        "ff_flops_per_token": ff_flops(ff, options),
        "valid_bpc": final["best/valid/bpc"], "best_step": final["best/valid/bpc@step"],
        "test_bpc": final["test/test/bpc"], "tokens_per_s": final["charts/tokens_per_s"],
        "wall_s": wall, "dead_experts": dead_experts(task, model), "history": history, "lr": lr,
    }


def write_results(rows: list, out: Path, settings: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "moe_lm.json").write_text(json.dumps({"settings": settings, "results": rows}, indent=1))
    dense = next((r for r in rows if r["variant"] == "dense"), None)
    lines = ["# σ-MoE vs dense vs PKM at equal parameters, default LM corpus (CPU size)", "",
             f"`python scripts/reproduce_moe.py --steps {settings['steps']} --threads {settings['threads']}`: "
             f"{settings['description']}", "",
             "| variant | core | ff | selection | lr | params | ff params | ff FLOPs/token | tokens/s | valid bpc | test bpc | dead experts |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        dead = "/".join(map(str, r["dead_experts"])) if r["dead_experts"] else "-"
        lr = f"{r['lr']:g}" + (f" (NaN at {r['diverged']['update']} with {r['diverged']['lr']:g})" if r.get("diverged") else "")
        if r.get("diverged_again"):
            lr = f"diverged: NaN at update {r['diverged']['update']} (lr {r['diverged']['lr']:g}) and {r['diverged_again']['update']} (lr {r['lr']:g})"
        lines.append(f"| {r['variant']} | {r['core']} | {r['ff']} | {r['selection']} | {lr} | {r['parameters']:,} | "
                     f"{r['ff_parameters']:,} | {r['ff_flops_per_token']:,} | {r['tokens_per_s']:,.0f} | "
                     f"{r['valid_bpc']:.3f} | {r['test_bpc']:.3f} | {dead} |")
    lines += ["", "Measured on this machine; bpc over the whole validation split (the best of the evaluations) and "
              "the test split (that model). Dead experts: per layer, experts no validation token selects."]
    loads = ", ".join(f"{r['variant']} {r['load_after']:g}" if "load_after" in r else f"{r['variant']} -" for r in rows)
    lines += ["", f"Load average (1 min) when each row finished, as tokens/s depend on it (- : not recorded): {loads}."]
    if any(r["core"] == "srwm" for r in rows):
        lines += ["", f"The SRWM rows restart the state every {SRWM_RESET_EVERY} segments ({SRWM_RESET_EVERY * 128} bytes, "
                  "`env.reset_every`, in training and evaluation); the other cores carry theirs through the epoch. "
                  "Carried through the epoch, the SRWM's self-modified weights grow without bound (the largest entry "
                  "of an untrained model's state rises from 1 to 17 over 55 segments) and the dense SRWM diverged: "
                  "NaN at update 243 (lr 2e-3) and 213 (lr 1e-3)."]
    moe = next((r for r in rows if r["variant"] == "moe"), None)
    if dense and moe:
        diff = moe["valid_bpc"] - dense["valid_bpc"]
        ratio = moe["ff_flops_per_token"] / dense["ff_flops_per_token"]
        verdict = ("beats dense by" if diff < 0 else "matches dense (within 0.01 bpc):" if diff <= 0.01
                   else "is worse than dense by")
        speed = moe["tokens_per_s"] / dense["tokens_per_s"]
        why = (" (at this width the per-expert loop costs more than the FLOPs it saves)" if speed < 1 else "")
        lines += ["", f"The paper's claim: a σ-MoE matches or beats the dense layer of equal parameters with a fraction "
                  f"of its feed-forward compute. Here the σ-MoE {verdict} {diff:+.3f} bpc (validation) with "
                  f"{ratio:.2f}x its feed-forward FLOPs, at {speed:.2f}x its training speed on this CPU{why}. "
                  f"Load average of the shared machine at the start/end of the last invocation: {settings.get('load_start')} / "
                  f"{settings.get('load_end')} (tokens/s are noisy; scripts/bench_lm.py measures speed alone). "
                  "Differences from the paper: 2 layers of d_model 128 instead of 12-18 layers of d_model 412-1024, "
                  f"{settings['steps']} updates instead of 100k, Python sources instead of WikiText-103/enwik8, "
                  "a key/value cache memory instead of re-projected hidden states; a single seed."]
    (out / "moe_lm.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        steps, bpc = zip(*r["history"]) if r["history"] else ((), ())
        ax.plot(steps, bpc, marker="o", ms=3, label=f"{r['variant']} ({r['ff_flops_per_token'] / 1e3:.0f}k FF FLOPs)")
    ax.set_xlabel("update")
    ax.set_ylabel("validation bpc")
    ax.set_title("dense vs σ-MoE vs PKM at equal parameters (default corpus)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "moe_lm.png", dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="updates per variant")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=Path("docs/results"), help="folder of moe_lm.{md,json,png}")
    parser.add_argument("--only", default="", help="comma-separated variants (default: all of " + ", ".join(VARIANTS) + ")")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        print(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}", file=sys.stderr)
        return 2
    settings = {"steps": args.steps, "threads": args.threads, "d_model": D_MODEL, "num_layers": LAYERS,
                "num_heads": HEADS, "d_ff": D_FF, "batch_size": 16, "unroll": 128, "memory": 128, "lr": 2e-3,
                "retry": "a run whose loss becomes non-finite is retried once at half the learning rate",
                "torch": torch.__version__,
                "description": f"{LAYERS} layers, d_model {D_MODEL}, {HEADS} heads, dense d_ff {D_FF}; B 16 x T 128 "
                               f"bytes, {args.steps} updates of Adam (lr 2e-3, cosine; a run whose loss "
                               "becomes non-finite is retried once at half the rate), seed 0."}
    rows = []
    previous = args.out / "moe_lm.json"
    if args.only and previous.is_file():  # update those rows of an earlier run, keep the others
        earlier = json.loads(previous.read_text())
        rows = [{"lr": earlier["settings"]["lr"], **r} for r in earlier["results"] if r["variant"] not in names]
        settings = {**earlier["settings"], **{k: v for k, v in settings.items() if k != "description"}}
    settings["load_start"] = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as work:
        for name in names:
            row = run_variant(name, args.steps, args.threads, Path(work))
            row["load_after"] = round(os.getloadavg()[0], 2)  # tokens/s depends on what else ran
            rows = sorted(rows + [row], key=lambda r: list(VARIANTS).index(r["variant"]))
            settings["load_end"] = [round(x, 2) for x in os.getloadavg()]
            print(f"{name:12s} params {row['parameters']:>8,}  ff FLOPs/token {row['ff_flops_per_token']:>8,}  "
                  f"{row['tokens_per_s']:>7,.0f} tok/s  valid bpc {row['valid_bpc']:.3f}  test bpc {row['test_bpc']:.3f}"
                  f"  dead {row['dead_experts']}  ({row['wall_s']:.0f} s)", flush=True)
            write_results(rows, args.out, settings)
    print(f"wrote {args.out / 'moe_lm.md'}, moe_lm.json, moe_lm.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
