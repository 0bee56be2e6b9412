"""``python -m metarl.train env=society/<task>``: a society of minds on a task family, measured.

The trainer of ``env.kind=society`` (registered in ``metarl.engine.registry.TRAINERS``; the family from
``env.family``, ``FAMILIES``). For the glyph questions (``env=society/glyph_sum``, ``metarl.society.glyph_task``):

1. the describer: the checkpoint ``env.describer`` of an ``env=image/glyphs`` run, or (default) a Conv-4 trained
   here on the engine loop for ``env.describer_steps`` updates (``<run>/describer/``: its checkpoints and logs);
2. ``env.test_tasks`` held-out questions (images of the glyphs' test split) answered by each ``organisers``
   entry: ``alone`` (every member by itself, one message), ``monarchy`` (the keyword router leads),
   ``democracy`` (``env.tie_break``), ``economy`` (a UCB bandit over the members, context = the question's
   kind and who has spoken so far, with a FINAL arm; trained on ``env.train_tasks`` questions about the
   validation split's images with the ``env.credit`` rule, then greedy);
3. metrics (one vocabulary): while the economy learns, every ``env.eval_every`` training tasks
   ``train/accuracy``, ``train/messages`` (the last ones) and ``eval/economy/{accuracy,messages}`` (greedy, on
   ``env.val_tasks`` other validation questions), ``charts/examples_per_s`` (tasks per second); at the end
   ``test/<set>/accuracy``, ``test/<set>/messages`` (mean per task) and ``test/<set>/accuracy_<kind>`` for the
   sets ``<member>_alone``, ``monarchy``, ``democracy``, ``economy``;
4. the run folder: ``metrics.jsonl`` and tensorboard events, ``curves.png`` (the economy's learning),
   ``transcripts/<set>.json`` (every mindstorm, ``Transcript.to_dict`` with the kind, truth and reward in
   ``meta``) and ``transcripts/<set>.md`` (readable), ``results.json`` (the table, the economy's learned
   policy and mean credits).
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from ..engine import MetricLogger, plot_curves, register_trainer, store_schema
from ..engine.registry import lookup
from ..errors import ConfigError, check_choice
from .economy import CREDIT_RULES, BanditOrganiser, run_economy, talk_stage
from .glyph_task import alone
from .mindstorm import Budget, Democracy, Monarchy, Transcript

ORGANISER_SETS = ("alone", "monarchy", "democracy", "economy")


@dataclass
class SocietyConfig:
    """``env=society/<task>``: a society of agents on a task family; accuracy and messages per organiser."""

    name: str = "society"  # run name
    kind: str = "society"  # trainer: metarl.society.trainer
    family: str = "glyphs"  # task family (metarl.society.trainer.FAMILIES): glyphs
    organisers: List[str] = field(default_factory=lambda: list(ORGANISER_SETS))  # what to measure: alone | monarchy | democracy | economy
    kinds: List[str] = field(default_factory=lambda: ["name", "sum", "product"])  # glyphs: question kinds (name | sum | difference | product), in turn
    test_tasks: int = 60  # held-out questions (images of the test split)
    train_tasks: int = 600  # economy: training questions (images of the validation split)
    val_tasks: int = 30  # economy: questions of eval/economy/* (other validation-split images)
    eval_every: int = 100  # economy: training questions between evaluations
    rounds: int = 3  # rounds of the monarchy and the democracy
    messages: int = 64  # message budget of a mindstorm
    economy_rounds: int = 3  # economy: members the bandit may ask per question
    tie_break: str = "roster"  # democracy: roster | random | chair:<member> (after votes, abstainers' proposals, proposers)
    abstainer_voice: bool = True  # democracy: a tie goes first to the proposal of more abstaining members (false: the old rule)
    shuffle_roster: bool = False  # democracy: seat the members in a seeded random order per question (roster order breaks the last ties)
    credit: str = "equal"  # economy: credit rule (equal | agreement)
    ucb_c: float = 0.5  # economy: UCB exploration bonus
    describer: Optional[str] = None  # checkpoint of an env=image/glyphs run (best-val-accuracy.pt); None: train one here
    describer_steps: int = 200  # updates of the Conv-4 trained here when describer is None
    describer_channels: List[int] = field(default_factory=lambda: [16, 16, 16, 16])  # its channels per block
    classes: int = 10  # glyphs: characters (class k is called "class k")
    samples: int = 100  # glyphs: images per character (70 / 15 / 15 % train / val / test)
    data_seed: int = 0  # glyphs: seed of the generated images
    guesser_high: int = 18  # the guesser's numbers are 0 .. this
    lm_checkpoint: Optional[str] = None  # an env=lm checkpoint: add an LMAgent member ("lm") as one more distractor


store_schema("society_schema", SocietyConfig)


@dataclass
class Setup:
    """What a task family gives the trainer."""

    members: List  # roster order
    leader: object  # the monarch
    economy_leader: object  # the leader that only writes the final answer when the bandit chooses
    test: List  # held-out SocietyTasks
    train: List  # the economy's training tasks
    val: List  # the economy's evaluation tasks
    kind_of: Callable[[str], str]  # prompt -> kind (the bandit's context)
    info: Dict = field(default_factory=dict)  # facts for results.json (the describer's accuracy, ...)


def glyph_setup(cfg: DictConfig, run_dir: Path) -> Setup:
    """The glyph questions (metarl.society.glyph_task) with a describer loaded or trained here."""
    from ..supervised.vision.data import glyphs
    from .describer import Gallery, ImageDescriber, train_glyph_classifier
    from .glyph_task import echo_leader, glyph_society, make_tasks, router, task_kind

    env = cfg.env
    path = env.describer
    if path is None:
        path = train_glyph_classifier(run_dir / "describer", steps=env.describer_steps, seed=cfg.seed,
                                      classes=env.classes, samples=env.samples, data_seed=env.data_seed,
                                      channels=list(env.describer_channels), device=cfg.device, progress=False)
    gallery = Gallery()
    describer = ImageDescriber.from_checkpoint(path, gallery, class_names=[str(k) for k in range(env.classes)],
                                               device=cfg.device)
    data = glyphs(env.classes, env.samples, env.data_seed)
    labels, _ = describer.classify(data.test.images)
    extra = []
    if env.lm_checkpoint:
        from .lm_agent import LMAgent

        extra.append(LMAgent.from_checkpoint(env.lm_checkpoint, name="lm", device=cfg.device, max_tokens=32,
                                             description="a small language model trained by env=lm"))
    members = glyph_society(describer, seed=cfg.seed, high=env.guesser_high, extra=extra)
    kinds = list(env.kinds)
    return Setup(members, router(members), echo_leader(),
                 test=make_tasks(data.test.images, data.test.labels, env.test_tasks, kinds, cfg.seed + 1, gallery),
                 train=make_tasks(data.val.images, data.val.labels, env.train_tasks, kinds, cfg.seed + 2, gallery),
                 val=make_tasks(data.val.images, data.val.labels, env.val_tasks, kinds, cfg.seed + 3, gallery),
                 kind_of=task_kind,
                 info={"describer": str(path),
                       "describer_test_accuracy": round((labels == data.test.labels).float().mean().item(), 4)})


#: env.family -> setup(cfg, run_dir) -> Setup
FAMILIES: Dict[str, Callable[[DictConfig, Path], Setup]] = {"glyphs": glyph_setup}


def score(transcripts: Sequence[Transcript], tasks: Sequence) -> Dict[str, float]:
    """Accuracy, mean messages and accuracy per kind; writes kind, truth and reward into each ``meta``."""
    out: Dict[str, float] = {}
    by_kind: Dict[str, List[float]] = {}
    for t, task in zip(transcripts, tasks):
        reward = task.reward(t.answer)
        t.meta.update(kind=task.kind, truth=task.truth, reward=reward)
        by_kind.setdefault(task.kind, []).append(reward)
    n = max(len(transcripts), 1)
    out["accuracy"] = sum(t.meta["reward"] for t in transcripts) / n
    out["messages"] = sum(t.messages for t in transcripts) / n
    for kind, rewards in by_kind.items():
        out[f"accuracy_{kind}"] = sum(rewards) / len(rewards)
    return out


def save_transcripts(folder: Path, name: str, transcripts: Sequence[Transcript]) -> None:
    """``<folder>/<name>.json`` (a list of transcripts) and ``<name>.md`` (all of them, readable)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps([t.to_dict() for t in transcripts], indent=1, default=str),
                                         encoding="utf-8")
    md = [f"# {name}: {len(transcripts)} mindstorm(s)", ""]
    for i, t in enumerate(transcripts):
        md += [f"<!-- {i} -->", t.markdown().replace("# Mindstorm", f"# {i}. Mindstorm", 1), "---", ""]
    (folder / f"{name}.md").write_text("\n".join(md), encoding="utf-8")


def chains(transcripts: Sequence[Transcript]) -> Dict[str, Dict[str, int]]:
    """{kind: {"a > b > FINAL": how many transcripts asked in that order}} (most frequent first)."""
    out: Dict[str, Dict[str, int]] = {}
    for t in transcripts:
        asked = [e.to or "FINAL" for e in t.entries if e.intent == "choose"]
        key = " > ".join(asked)
        out.setdefault(str(t.meta.get("kind")), {}).setdefault(key, 0)
        out[str(t.meta.get("kind"))][key] += 1
    return {k: dict(sorted(v.items(), key=lambda kv: -kv[1])) for k, v in out.items()}


def validate_env(env) -> None:
    for organiser in env.organisers:
        check_choice("env.organisers", organiser, ORGANISER_SETS)
    check_choice("env.credit", env.credit, CREDIT_RULES)
    Democracy(env.tie_break)  # a bad tie rule fails here, naming env.tie_break's choices
    for key in ("test_tasks", "rounds", "messages", "economy_rounds", "eval_every"):
        if env[key] < 1:
            raise ConfigError(f"env.{key}={env[key]} must be >= 1")
    if "economy" in env.organisers and env.train_tasks < 1:
        raise ConfigError(f"env.train_tasks={env.train_tasks} must be >= 1 to train the economy")


@register_trainer("society")
def train_society(cfg: DictConfig, run_dir: Path) -> dict:
    """Run the societies of ``env.family`` (module docstring); returns the test metrics and the table."""
    env = cfg.env
    validate_env(env)
    torch.manual_seed(cfg.seed)
    run_dir = Path(run_dir)
    setup = lookup(FAMILIES, "env.family", env.family)(cfg, run_dir)
    logger = MetricLogger(run_dir)
    folder = run_dir / "transcripts"
    budget = Budget(rounds=env.rounds, messages=env.messages)
    results: Dict[str, Dict[str, float]] = {}

    def measure(name: str, transcripts: List[Transcript]) -> None:
        results[name] = score(transcripts, setup.test)
        save_transcripts(folder, name, transcripts)

    progress = lambda items, desc: tqdm(items, desc=desc, disable=not cfg.progress, leave=False)  # noqa: E731
    if "alone" in env.organisers:
        for member in setup.members:
            measure(f"{member.name}_alone", [alone(member, t) for t in progress(setup.test, member.name)])
    if "monarchy" in env.organisers:
        monarchy = Monarchy(setup.leader)
        measure("monarchy", [_run(monarchy, t, setup.members, budget) for t in progress(setup.test, "monarchy")])
    if "democracy" in env.organisers:
        democracy = Democracy(env.tie_break, seed=cfg.seed, abstainers=env.abstainer_voice)
        seating = random.Random(cfg.seed)
        seats = lambda: seating.sample(setup.members, len(setup.members)) if env.shuffle_roster else setup.members  # noqa: E731
        measure("democracy", [_run(democracy, t, seats(), budget) for t in progress(setup.test, "democracy")])
    economy = {}
    step = 0
    if "economy" in env.organisers:
        names = [m.name for m in setup.members]
        bandit = BanditOrganiser(names, context=setup.kind_of, c=env.ucb_c, stage=talk_stage, stop=True)
        ebudget = Budget(rounds=env.economy_rounds, messages=env.messages)
        trained: List[Transcript] = []
        begin = time.time()
        bar = tqdm(total=len(setup.train), desc="economy", disable=not cfg.progress, leave=False)
        for lo in range(0, len(setup.train), env.eval_every):
            chunk = setup.train[lo: lo + env.eval_every]
            bandit.explore = True
            done = run_economy(chunk, setup.members, setup.economy_leader, bandit, ebudget, credit=env.credit)
            trained += done
            step = lo + len(chunk)
            bar.update(len(chunk))
            bandit.explore = False
            held = run_economy(setup.val, setup.members, setup.economy_leader, bandit, ebudget, learn=False)
            logger.log(step, {"train/accuracy": sum(t.meta["reward"] for t in done) / len(done),
                              "train/messages": sum(t.messages for t in done) / len(done),
                              "eval/economy/accuracy": sum(t.meta["reward"] for t in held) / len(held),
                              "eval/economy/messages": sum(t.messages for t in held) / len(held),
                              "charts/examples_per_s": step / max(time.time() - begin, 1e-9)})
        bar.close()
        bandit.explore = False
        tested = run_economy(setup.test, setup.members, setup.economy_leader, bandit, ebudget, learn=False)
        measure("economy", tested)
        save_transcripts(folder, "economy_training", trained)
        economy = {"policy": bandit.policy(), "mean_credit": bandit.table(), "chains": chains(tested)}
    metrics: Dict[str, object] = {}
    for name, values in results.items():
        logger.log(step, {f"test/{name}/{k}": v for k, v in values.items()})
        metrics[f"test/{name}/accuracy"] = values["accuracy"]
        metrics[f"test/{name}/messages"] = values["messages"]
    logger.close()
    plot_curves(run_dir, ["eval/economy/", "train/"])
    summary = {"results": results, "economy": economy, "members": [m.name for m in setup.members],
               "setup": setup.info, "tasks": {"test": len(setup.test), "train": len(setup.train)}}
    (run_dir / "results.json").write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
    metrics.update(summary)
    return metrics


def _run(organiser, task, members, budget) -> Transcript:
    with task.context():
        return organiser.run(task.prompt, members, budget)
