"""The dual form of an MLP trained on glyphs, then on a second set of glyphs (continual learning).

An MLP (784 -> hidden ReLU -> 10) is trained with SGD on 5 glyph classes (task 1), then on 5 other classes
(task 2), with one shared 10-way head. metarl.analysis.DualFormRecorder records both linear layers; the
script then

- checks that the dual form rebuilds both layers' outputs on test inputs (relative error printed);
- shows, for test inputs of each task, the training patterns the output layer attends to most
  (``spotlight``: the image, its step, label and share of the attention), in ``top_patterns.png``;
- follows the attention of test inputs over training: the share of the output layer's attention on task-1
  patterns against the training step (queries from the model of that step, keys up to that step), beside
  the test accuracy of both tasks (forgetting), in ``attention_shift.png``;
- prints the attention mass per task and per class at the end of each task.

    python scripts/dual_form_demo.py                        # about a minute or two on a 2-core CPU
    python scripts/dual_form_demo.py --steps 400 --hidden 256 --out results/dual_form
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from metarl.analysis import DualFormRecorder, dual_output, load_record, spotlight  # noqa: E402
from metarl.fewshot.glyphs import glyph_split  # noqa: E402
from metarl.testing import relative_error  # noqa: E402


def glyph_tasks(samples: int, test_per_class: int, seed: int):
    """Two tasks of 5 glyph classes each: (train images [N, 784], labels, task ids), (test ...)."""
    split = glyph_split("train", num_classes=20, samples=samples, seed=seed)  # 12 training classes, 10 used
    images = split.images.float().div(255).flatten(1)
    labels = torch.arange(len(split.names)).repeat_interleave(samples)
    keep = labels < 10
    images, labels = images[keep], labels[keep]
    position = torch.arange(len(labels)) % samples
    test = position < test_per_class
    tasks = (labels >= 5).long()
    return (images[~test], labels[~test], tasks[~test]), (images[test], labels[test], tasks[test])


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(-1) == y).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="SGD steps per task")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--samples", type=int, default=60, help="images per glyph class")
    parser.add_argument("--every", type=int, default=25, help="steps between points of the attention curve")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/dual_form")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (train_x, train_y, train_task), (test_x, test_y, test_task) = glyph_tasks(args.samples, 10, args.seed)
    torch.manual_seed(args.seed)
    model = nn.Sequential(nn.Linear(784, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    record_dir = out / "record"
    for old in record_dir.glob("*"):
        old.unlink()
    recorder = DualFormRecorder(model, optimizer, ["0", "2"], record_dir, chunk_rows=2048)
    generator = torch.Generator().manual_seed(args.seed)
    snapshots, curve = {0: [p.detach().clone() for p in model.parameters()]}, []
    step = 0
    for task in (0, 1):
        pool = (train_task == task).nonzero().flatten()
        for _ in range(args.steps):
            ids = pool[torch.randint(0, len(pool), (args.batch_size,), generator=generator)]
            optimizer.zero_grad()
            recorder.annotate(labels=train_y[ids], task=task, ids=ids)
            F.cross_entropy(model(train_x[ids]), train_y[ids]).backward()
            optimizer.step()
            step += 1
            if step % args.every == 0:
                snapshots[step] = [p.detach().clone() for p in model.parameters()]
                curve.append({"step": step, **{f"accuracy_task{t + 1}": accuracy(model, test_x[test_task == t],
                                                                                   test_y[test_task == t])
                                               for t in (0, 1)}})
        print(f"after task {task + 1} ({step} steps): test accuracy task 1 {curve[-1]['accuracy_task1']:.3f}, "
              f"task 2 {curve[-1]['accuracy_task2']:.3f}")
    recorder.close()
    record = load_record(record_dir)

    # primal = dual
    hidden = torch.relu(model[0](test_x))
    errors = {"layer 0": relative_error(model[0](test_x), dual_output(record["0"], test_x)),
              "layer 2 (head)": relative_error(model[2](hidden), dual_output(record["2"], hidden))}
    print("primal vs dual, relative error (float32 training):",
          ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))

    def queries_at(t, x):
        """The head's input for x under the model of step t."""
        W, b = snapshots[t][0], snapshots[t][1]
        return torch.relu(x @ W.T + b)

    # how attention moves: share on task-1 patterns for test inputs of each task
    shift = {0: [], 1: []}
    probes = {t: (test_task == t).nonzero().flatten() for t in (0, 1)}
    for point in curve:
        t = point["step"]
        for task, rows in probes.items():
            views = spotlight(record["2"], queries_at(t, test_x[rows]), k=1, until_step=t)
            shares = [v.per_task.get(0, 0.0) for v in views]
            shift[task].append(sum(shares) / len(shares))
            point[f"task1_share_of_task{task + 1}_inputs"] = shift[task][-1]
    end_of = {"task 1": args.steps, "task 2": 2 * args.steps}
    summary = {}
    for name, t in end_of.items():
        for task, rows in probes.items():
            views = spotlight(record["2"], queries_at(t, test_x[rows]), k=1, until_step=t)
            per_class = {}
            for v in views:
                for c, share in v.per_class.items():
                    per_class[c] = per_class.get(c, 0.0) + share / len(views)
            summary[f"after {name}, inputs of task {task + 1}"] = per_class
            on_own = sum(s for c, s in per_class.items() if (c >= 5) == bool(task))
            print(f"after {name}: test inputs of task {task + 1} put {on_own:.2f} of the head's attention on their "
                  f"own task's patterns; per class " + " ".join(f"{c}:{s:.2f}" for c, s in sorted(per_class.items())))

    # top training patterns for a few test inputs of each task (the final model)
    examples = torch.cat([(test_task == t).nonzero().flatten()[:3] for t in (0, 1)])
    k = 6
    fig, axes = plt.subplots(len(examples), k + 1, figsize=(1.45 * (k + 1), 1.65 * len(examples)))
    final_queries = torch.relu(model[0](test_x[examples])).detach()
    for row, (i, view) in enumerate(zip(examples.tolist(), spotlight(record["2"], final_queries, k=20 * k))):
        axes[row, 0].imshow(test_x[i].view(28, 28), cmap="gray_r")
        axes[row, 0].set_title(f"test, label {test_y[i].item()}", fontsize=7)
        distinct = list({top["id"]: top for top in reversed(view.top)}.values())[::-1]  # an image seen at many steps once
        for col, top in enumerate(distinct[:k], start=1):
            axes[row, col].imshow(train_x[top["id"]].view(28, 28), cmap="gray_r")
            axes[row, col].set_title(f"step {top['step']} label {top['label']}\n{100 * top['share']:.3f}% of attn",
                                     fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Output layer: the training images each test input attends to most (dual form; each image at its "
                 "top step)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "top_patterns.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    steps = [p["step"] for p in curve]
    ax.plot(steps, shift[0], label="attention on task-1 patterns: task-1 test inputs", color="C0")
    ax.plot(steps, shift[1], label="attention on task-1 patterns: task-2 test inputs", color="C1")
    ax.plot(steps, [p["accuracy_task1"] for p in curve], "--", color="C0", alpha=0.6, label="test accuracy task 1")
    ax.plot(steps, [p["accuracy_task2"] for p in curve], "--", color="C1", alpha=0.6, label="test accuracy task 2")
    ax.axvline(args.steps, color="gray", linewidth=0.8)
    ax.set_xlabel("training step (task 1, then task 2)")
    ax.set_ylabel("share / accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Output layer's attention moving from task 1 to task 2", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "attention_shift.png", dpi=110)
    plt.close(fig)
    (out / "dual_form_demo.json").write_text(json.dumps({"args": vars(args), "primal_vs_dual": errors,
                                                         "curve": curve, "per_class": summary}, indent=1))
    print(f"wrote {out / 'top_patterns.png'}, {out / 'attention_shift.png'}, {out / 'dual_form_demo.json'}")


if __name__ == "__main__":
    main()
