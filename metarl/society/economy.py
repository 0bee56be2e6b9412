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
``context(task)`` (a task kind); each (context, member) keeps the mean credit the member earned when asked.
It picks by UCB1 (untried members first; ``c`` scales the exploration bonus), or greedily with
``explore=False``; ``update(task, credits)`` learns from one transcript's credits. ``run_economy`` trains or
evaluates it over many tasks.
"""
from __future__ import annotations

import itertools
import math
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


class BanditOrganiser:
    """Learns whom to ask for which kind of task (module docstring); call it as a Monarchy's chooser."""

    def __init__(self, names: Iterable[str], context: Callable[[str], str] = lambda task: "any",
                 c: float = 0.5, explore: bool = True):
        self.names = list(names)
        self.context, self.c, self.explore = context, float(c), explore
        self.count: Dict[tuple, int] = {}
        self.mean: Dict[tuple, float] = {}

    def scores(self, task: str) -> Dict[str, float]:
        ctx = self.context(task)
        total = sum(self.count.get((ctx, n), 0) for n in self.names)
        out = {}
        for n in self.names:
            k = self.count.get((ctx, n), 0)
            if self.explore:
                out[n] = math.inf if k == 0 else self.mean[(ctx, n)] + self.c * math.sqrt(math.log(total) / k)
            else:
                out[n] = self.mean.get((ctx, n), 0.0)
        return out

    def choose(self, task: str, exclude: Sequence[str] = ()) -> Optional[str]:
        scores = {n: s for n, s in self.scores(task).items() if n not in exclude}
        return max(scores, key=lambda n: (scores[n], -self.names.index(n))) if scores else None

    def __call__(self, task: str, members, transcript: Transcript) -> Optional[str]:
        """A Monarchy's chooser: the best member not asked yet in this mindstorm (None: final, all asked)."""
        asked = [e.to for e in transcript.entries if e.intent == "choose" and e.to]
        return self.choose(task, exclude=asked)

    def update(self, task: str, credits: Dict[str, float], asked: Sequence[str]) -> None:
        """Each member in ``asked`` gets its credit (0 if none) as the reward of having been asked."""
        ctx = self.context(task)
        for n in asked:
            key = (ctx, n)
            k = self.count.get(key, 0) + 1
            self.count[key] = k
            self.mean[key] = self.mean.get(key, 0.0) + (credits.get(n, 0.0) - self.mean.get(key, 0.0)) / k

    def table(self) -> Dict[str, Dict[str, float]]:
        """{context: {member: mean credit}} of what was learned."""
        out: Dict[str, Dict[str, float]] = {}
        for (ctx, n), m in sorted(self.mean.items()):
            out.setdefault(ctx, {})[n] = round(m, 4)
        return out


@dataclass
class SocietyTask:
    """A task with a known answer: ``reward`` 1 when the final answer holds ``truth``."""

    prompt: str
    truth: str
    kind: str = "any"

    def reward(self, answer: Optional[str]) -> float:
        return 1.0 if answer is not None and _holds(answer, self.truth) else 0.0


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
        t = monarchy.run(task.prompt, members, budget)
        reward = task.reward(t.answer)
        credits = CREDIT_RULES[credit](t, reward)
        if learn:
            organiser.update(task.prompt, credits, [e.to for e in t.entries if e.intent == "choose" and e.to])
        t.meta.update(kind=task.kind, truth=task.truth, reward=reward, credits=credits)
        out.append(t)
    return out
