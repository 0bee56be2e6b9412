"""An economy of minds: who earned the task's reward, and whom to ask next time.

Credit rules (``CREDIT_RULES``; each ``rule(transcript, reward) -> {member: credit}`` over every member):

- ``equal``: the reward split equally among the members who said something (``Transcript.speakers``).
- ``agreement``: split among the speakers whose words and the final answer agree (an answer or proposal equal
  to it, containing it, or contained in it, as whole words); nobody earns anything when no one said it. A one-step bucket
  brigade: the reward flows to whoever handed the organiser what it used.
- ``shapley(members, value)``: the exact Shapley value of each member for ``value(coalition) -> reward``
  (e.g. rerun the mindstorm with only that coalition), the average marginal gain over all orders of joining;
  2^n evaluations, so for up to ``MAX_SHAPLEY`` members.

``BanditOrganiser``: a contextual bandit over members, the ``chooser`` of a ``Monarchy``. The context is
``context(task)`` (a task kind), joined with ``stage(transcript)`` when given (what the talk holds so far,
e.g. ``talk_stage``: who has said something useful, in order), so that a chain of members (look, rewrite,
compute) can be learned one step at a time; each (context, member) keeps the mean credit the member earned
when asked there. With ``stop=True`` the bandit also has the arm ``FINAL`` (end the talk now); it earns a
speaker's share of the task's reward (reward / speakers, the scale of the ``equal`` credits), so it learns
when the answers suffice and saves the messages of asking more. It picks by
UCB1 (untried arms first; ``c`` scales the exploration bonus), or greedily with ``explore=False``; every
pick is recorded in ``transcript.meta["bandit"]`` as ``[context, arm]``, and ``update`` learns from one
transcript's credits. ``run_economy`` trains or evaluates it over many tasks.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import random
import re
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional, Sequence

from ..errors import ConfigError
from .mindstorm import Budget, Monarchy, Transcript, normalise

MAX_SHAPLEY = 12


def equal_credit(transcript: Transcript, reward: float) -> Dict[str, float]:
    names = [m["name"] for m in transcript.members]
    speakers = transcript.speakers()
    return {n: (reward / len(speakers) if n in speakers else 0.0) for n in names}


def _holds(text: str, answer: str) -> bool:
    a, t = normalise(answer), normalise(text)
    return bool(a) and (a == t or re.search(rf"(?<!\w){re.escape(a)}(?!\w)", t) is not None)


def agreement_credit(transcript: Transcript, reward: float) -> Dict[str, float]:
    names = [m["name"] for m in transcript.members]
    speakers = set(transcript.speakers())
    answer = transcript.answer or ""
    holders = {e.speaker for e in transcript.entries
               if e.intent in ("answer", "propose") and e.speaker in speakers
               and (_holds(e.content, answer) or _holds(answer, e.content))}
    return {n: (reward / len(holders) if n in holders else 0.0) for n in names}


CREDIT_RULES = {"equal": equal_credit, "agreement": agreement_credit}


def shapley(members: Sequence[str], value: Callable[[FrozenSet[str]], float]) -> Dict[str, float]:
    """Exact Shapley values: phi_i = sum over coalitions S without i of |S|! (n-|S|-1)! / n! (v(S+i) - v(S))."""
    members = list(members)
    n = len(members)
    if n > MAX_SHAPLEY:
        raise ConfigError(f"shapley: {n} members need 2^{n} evaluations; use at most {MAX_SHAPLEY} or another rule")
    cache: Dict[FrozenSet[str], float] = {}

    def v(s: FrozenSet[str]) -> float:
        if s not in cache:
            cache[s] = float(value(s)) if s else 0.0
        return cache[s]

    phi = {}
    for i in members:
        others = [m for m in members if m != i]
        total = 0.0
        for k in range(n):
            weight = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
            for subset in itertools.combinations(others, k):
                s = frozenset(subset)
                total += weight * (v(s | {i}) - v(s))
        phi[i] = total
    return phi


STOP = "FINAL"  # the bandit's arm that ends the talk


def talk_stage(transcript: Transcript) -> str:
    """The members who have said something useful so far, in order (``a>b``; ``-`` before anyone)."""
    return ">".join(transcript.speakers()) or "-"


class BanditOrganiser:
    """Learns whom to ask for which kind of task (module docstring); call it as a Monarchy's chooser."""

    def __init__(self, names: Iterable[str], context: Callable[[str], str] = lambda task: "any",
                 c: float = 0.5, explore: bool = True, stage: Optional[Callable[[Transcript], str]] = None,
                 stop: bool = False):
        self.names = list(names)
        self.arms = self.names + ([STOP] if stop else [])
        self.context, self.c, self.explore, self.stage = context, float(c), explore, stage
        self.count: Dict[tuple, int] = {}
        self.mean: Dict[tuple, float] = {}

    def key(self, task: str, transcript: Optional[Transcript] = None) -> str:
        """The context of a choice: the task's kind, and the talk's stage when ``stage`` is set."""
        ctx = self.context(task)
        if self.stage is not None:
            ctx = f"{ctx}|{self.stage(transcript) if transcript is not None else '-'}"
        return ctx

    def scores(self, task: str, transcript: Optional[Transcript] = None) -> Dict[str, float]:
        ctx = self.key(task, transcript)
        total = sum(self.count.get((ctx, n), 0) for n in self.arms)
        out = {}
        for n in self.arms:
            k = self.count.get((ctx, n), 0)
            if self.explore:
                out[n] = math.inf if k == 0 else self.mean[(ctx, n)] + self.c * math.sqrt(math.log(total) / k)
            else:
                out[n] = self.mean.get((ctx, n), 0.0)
        return out

    def choose(self, task: str, exclude: Sequence[str] = (), transcript: Optional[Transcript] = None) -> Optional[str]:
        scores = {n: s for n, s in self.scores(task, transcript).items() if n not in exclude}
        return max(scores, key=lambda n: (scores[n], -self.arms.index(n))) if scores else None

    def __call__(self, task: str, members, transcript: Transcript) -> Optional[str]:
        """A Monarchy's chooser: the best arm not used yet in this mindstorm (None: final, all asked)."""
        asked = [e.to for e in transcript.entries if e.intent == "choose" and e.to]
        arm = self.choose(task, exclude=asked, transcript=transcript)
        if arm is not None:
            transcript.meta.setdefault("bandit", []).append([self.key(task, transcript), arm])
        return None if arm in (None, STOP) else arm

    def update(self, task: str, credits: Dict[str, float], asked: Sequence[str] = (),
               picks: Optional[Sequence[Sequence[str]]] = None, reward: float = 0.0, shares: int = 1) -> None:
        """Each member in ``asked`` gets its credit (0 if none) as the reward of having been asked, in the
        task's context; or, with ``picks`` (``transcript.meta["bandit"]``), each recorded (context, arm) does
        (the ``FINAL`` arm: ``reward / shares``, ``shares`` being the number of speakers)."""
        if picks is None:
            picks = [(self.key(task), n) for n in asked]
        for ctx, n in picks:
            key = (ctx, n)
            k = self.count.get(key, 0) + 1
            self.count[key] = k
            gain = reward / max(1, shares) if n == STOP else credits.get(n, 0.0)
            self.mean[key] = self.mean.get(key, 0.0) + (gain - self.mean.get(key, 0.0)) / k

    def table(self) -> Dict[str, Dict[str, float]]:
        """{context: {member: mean credit}} of what was learned."""
        out: Dict[str, Dict[str, float]] = {}
        for (ctx, n), m in sorted(self.mean.items()):
            out.setdefault(ctx, {})[n] = round(m, 4)
        return out

    def policy(self) -> Dict[str, str]:
        """{context: the arm a greedy organiser picks there} over the contexts seen."""
        contexts = sorted({ctx for ctx, _ in self.mean})
        return {ctx: max(self.arms, key=lambda n: (self.mean.get((ctx, n), 0.0), -self.arms.index(n)))
                for ctx in contexts}


@dataclass
class SocietyTask:
    """A task with a known answer: ``reward`` 1 when the final answer holds ``truth``."""

    prompt: str
    truth: str
    kind: str = "any"

    def reward(self, answer: Optional[str]) -> float:
        return 1.0 if answer is not None and _holds(answer, self.truth) else 0.0

    def context(self):
        """What must hold while a society works on the task (a task with images shows them): a context manager."""
        return contextlib.nullcontext()


def product_or_capital_tasks(n: int, seed: int, capitals: Dict[str, str]) -> List[SocietyTask]:
    """A toy task family for demos and tests: each task, with probability 1/2, the product of two two-digit
    numbers ("arithmetic") or the capital of a country of ``capitals`` ("capital"), drawn with ``seed``."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.5:
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            out.append(SocietyTask(f"What is {a} * {b}?", str(a * b), "arithmetic"))
        else:
            country = rng.choice(sorted(capitals))
            out.append(SocietyTask(f"What is the capital of {country}?", capitals[country], "capital"))
    return out


def run_economy(tasks: Sequence[SocietyTask], members: Sequence, leader, organiser: BanditOrganiser,
                budget: Budget = Budget(rounds=1), credit: str = "agreement", learn: bool = True) -> List[Transcript]:
    """One monarchical mindstorm per task with ``organiser`` choosing whom to ask; after each, the reward is
    assigned by ``credit`` and (``learn``) the organiser updated. Each transcript's ``meta`` holds the kind,
    truth, reward and credits."""
    if credit not in CREDIT_RULES:
        raise ConfigError(f"credit={credit!r} is not valid; choose one of: {', '.join(CREDIT_RULES)}")
    monarchy = Monarchy(leader, chooser=organiser)
    out = []
    for task in tasks:
        with task.context():
            t = monarchy.run(task.prompt, members, budget)
        reward = task.reward(t.answer)
        credits = CREDIT_RULES[credit](t, reward)
        if learn:
            organiser.update(task.prompt, credits, picks=t.meta.get("bandit", []), reward=reward,
                             shares=len(t.speakers()))
        t.meta.update(kind=task.kind, truth=task.truth, reward=reward, credits=credits)
        out.append(t)
    return out
