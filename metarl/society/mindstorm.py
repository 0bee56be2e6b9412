"""Mindstorms: members of a society talk in rounds about a task; an organiser turns the talk into one answer.

Organisers (``ORGANISERS``; each ``run(task, members, budget) -> Transcript``):

- ``Monarchy(leader)``: each round the leader is asked whom to ask (intent ``choose``; it replies a member's
  name, optionally ``name: question``, or ``FINAL``), that member answers the question (or the task) having
  read the whole talk so far (intent ``answer``); at the end the leader reads everything and writes the final
  answer (intent ``final``). A reply naming no member falls back to the member asked least so far (roster
  order among equals). ``chooser(task, members, transcript) -> name | None`` replaces the leader's choice
  (a learned organiser, ``economy.BanditOrganiser``; None means final); the leader still writes the answer.
- ``Democracy()``: each round every member proposes an answer (intent ``propose``; independently: it sees
  the earlier rounds, not this round's proposals), then every member votes for one of the proposals
  (intent ``vote``; a secret ballot: it sees the proposals, not the other votes; it replies a proposal's number or its proposer's name; anything
  else abstains; tools always abstain). Equal proposals (case, spaces and a final full stop ignored) are
  one candidate. Winner: most votes. A tie among the most-voted candidates is broken, in this order, by
  (1) *the voice of the abstainers*: more proposers who declared abstention (replied ``abstain``) in this
  ballot (a tool cannot vote, so its proposal is its only say; a member that votes already spoke through its
  vote; an abstention is never counted as a vote, and a reply that names no candidate is a spoiled ballot:
  neither a vote nor an abstention), (2) more proposers, (3) the declared rule ``tie_break``:
  ``roster`` (the candidate proposed first in roster order), ``random`` (a seeded draw: ``seed``, the round)
  or ``chair:<member>`` (the candidate that member proposed, else roster order). Each broken tie is recorded
  in ``Transcript.meta["ties"]`` (round, the tied candidates, the step that decided). A strict majority of
  the votes cast, or a single candidate (consensus), ends the talk; otherwise the next round begins, with
  the earlier proposals and votes in everyone's view. The answer is the last round's winner.

Budget: at most ``rounds`` rounds and ``messages`` messages in all (every choice, answer, proposal, vote and
the final answer counts; the monarchy keeps one for its final answer). ``Transcript.save(run_dir)`` writes
``transcript.json`` (``Transcript.load`` reads it back) and ``transcript.md``.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import ConfigError, MissingPathError
from .agents import ABSTAIN, UNKNOWN
from .messages import Message

FORMAT = "metarl-society-transcript"


@dataclass
class Budget:
    """What one mindstorm may spend."""

    rounds: int = 3  # rounds of talk
    messages: int = 64  # messages in all, the final answer included

    def __post_init__(self):
        if self.rounds < 1 or self.messages < 1:
            raise ConfigError(f"Budget(rounds={self.rounds}, messages={self.messages}): both must be >= 1")


@dataclass
class Entry:
    """One message of a transcript."""

    round: int  # 1-based round (0: after the last round)
    speaker: str  # who wrote it
    intent: str  # choose | answer | propose | vote | final
    content: str  # what they wrote
    to: Optional[str] = None  # choose: the member chosen; answer: the question; vote: the candidate voted for


@dataclass
class Transcript:
    """Everything said in one mindstorm, and its outcome."""

    task: str
    organiser: str  # monarchy | democracy
    members: List[Dict[str, str]]  # [{"name", "description"}] in roster order
    entries: List[Entry] = field(default_factory=list)
    answer: Optional[str] = None  # the society's final answer (None: none reached)
    rounds: int = 0  # rounds held
    stopped: str = ""  # final | rounds | messages | majority | consensus
    tallies: List[Dict[str, int]] = field(default_factory=list)  # democracy: votes per candidate, per round
    meta: Dict[str, object] = field(default_factory=dict)  # free: task kind, truth, reward, credits, ...

    @property
    def messages(self) -> int:
        return len(self.entries)

    def speakers(self) -> List[str]:
        """Members who answered or proposed something other than UNKNOWN / abstain, in order of first word."""
        names = [m["name"] for m in self.members]
        out = []
        for e in self.entries:
            if e.intent in ("answer", "propose") and e.speaker in names and e.speaker not in out \
                    and normalise(e.content) not in (normalise(UNKNOWN), ABSTAIN, ""):
                out.append(e.speaker)
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["format"] = FORMAT
        d["messages"] = self.messages
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Transcript":
        return cls(task=d["task"], organiser=d["organiser"], members=list(d["members"]),
                   entries=[Entry(**e) for e in d["entries"]], answer=d.get("answer"), rounds=d.get("rounds", 0),
                   stopped=d.get("stopped", ""), tallies=list(d.get("tallies", [])), meta=dict(d.get("meta", {})))

    def markdown(self) -> str:
        lines = [f"# Mindstorm ({self.organiser})", "", f"**Task:** {self.task}", "", "**Members:**", ""]
        lines += [f"- **{m['name']}**: {m['description']}" for m in self.members]
        current = None
        for e in self.entries:
            if e.round != current:
                current = e.round
                lines += ["", f"## Round {e.round}" if e.round else "## Final", ""]
            target = f" → {e.to}" if e.to and e.intent in ("choose", "vote") else ""
            text = " ".join(e.content.split()) or "(empty)"
            lines.append(f"- **{e.speaker}** ({e.intent}{target}): {text}")
        lines += ["", f"**Answer:** {self.answer if self.answer is not None else '(none)'}", "",
                  f"{self.rounds} round(s), {self.messages} message(s), stopped: {self.stopped}."]
        if self.meta:
            lines += ["", "```json", json.dumps(self.meta, indent=1, default=str), "```"]
        return "\n".join(lines) + "\n"

    def save(self, run_dir) -> Tuple[Path, Path]:
        """Write ``transcript.json`` and ``transcript.md`` in ``run_dir`` (created); returns both paths."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        paths = run_dir / "transcript.json", run_dir / "transcript.md"
        for path, text in zip(paths, (json.dumps(self.to_dict(), indent=1, default=str), self.markdown())):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        return paths

    @classmethod
    def load(cls, path) -> "Transcript":
        """A transcript from ``transcript.json`` or the run folder holding it."""
        path = Path(path)
        if path.is_dir():
            path = path / "transcript.json"
        if not path.is_file():
            raise MissingPathError(f"{path} does not exist; pass a transcript.json written by Transcript.save")
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("format") != FORMAT:
            raise ConfigError(f"{path} is not a metarl society transcript (no {FORMAT!r} marker)")
        return cls.from_dict(d)


def normalise(text: str) -> str:
    """Lower case, spaces collapsed, a final full stop removed: what makes two proposals equal."""
    return " ".join(str(text).lower().split()).rstrip(".").strip()


def _check_members(members: Sequence) -> List:
    members = list(members)
    if not members:
        raise ConfigError("a mindstorm needs at least one member")
    names = [m.name for m in members]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"member names must be unique; repeated: {', '.join(dup)}")
    return members


def roster(members: Sequence) -> str:
    return "\n".join(f"- {m.name}: {m.description}" for m in members)


def view(agent_name: str, task: str, entries: Sequence[Entry], request: Message, preamble: str) -> List[Message]:
    """What ``agent_name`` reads: a system message, the task, the talk so far (its own words as assistant)."""
    conversation = [Message("system", preamble), Message("user", task, name="task", intent="task")]
    for e in entries:
        role = "assistant" if e.speaker == agent_name else "user"
        conversation.append(Message(role, e.content, name=e.speaker))
    return conversation + [request]


def _mentions(text: str, name: str) -> Optional[re.Match]:
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text, flags=re.IGNORECASE)


def parse_choice(text: str, names: Sequence[str]) -> Tuple[Optional[str], Optional[str], bool]:
    """(member, question, final) of a leader's reply: ``FINAL`` -> final; else the member named first (longest
    name on a tie of position) and the text after ``name:`` as the question (None: ask the task)."""
    stripped = text.strip()
    if re.match(r"^\W*final\b", stripped, flags=re.IGNORECASE):
        return None, None, True
    hits = [(m.start(), -len(n), n, m) for n in names for m in [_mentions(stripped, n)] if m]
    if not hits:
        return None, None, False
    _, _, name, match = min(hits)
    rest = stripped[match.end():]
    question = rest[1:].strip() if rest.startswith(":") and rest[1:].strip() else None
    return name, question, False


class Monarchy:
    """A leader chooses who speaks, reads the answers and writes the final one (see the module docstring)."""

    kind = "monarchy"

    def __init__(self, leader, chooser: Optional[Callable] = None):
        self.leader, self.chooser = leader, chooser

    def _preamble(self, agent, members) -> str:
        return (f"You are {agent.name} ({agent.description}), in a society led by {self.leader.name}. "
                f"Members:\n{roster(members)}")

    def run(self, task: str, members: Sequence, budget: Budget = Budget()) -> Transcript:
        members = _check_members(members)
        by_name = {m.name: m for m in members}
        t = Transcript(task, self.kind, [{"name": m.name, "description": m.description} for m in members],
                       meta={"leader": self.leader.name})
        asked = {m.name: 0 for m in members}
        leader_view = lambda request: view(self.leader.name, task, t.entries, request,
                                           self._preamble(self.leader, members))
        t.stopped = "rounds"
        for r in range(1, budget.rounds + 1):
            if budget.messages - t.messages < 3:  # a choice, an answer, and the final answer
                t.stopped = "messages"
                break
            t.rounds = r
            if self.chooser is not None:
                name = self.chooser(task, members, t)
                question, final = None, name is None
                t.entries.append(Entry(r, f"{self.leader.name}", "choose", "FINAL" if final else name, to=name))
            else:
                request = Message("user", f"Task: {task}\nMembers:\n{roster(members)}\nReply with the name of the "
                                  "member who should speak next, optionally followed by ': ' and the question to "
                                  "ask them, or FINAL when the answers suffice.", name="organiser", intent="choose")
                said = self.leader.respond(leader_view(request)).content
                name, question, final = parse_choice(said, list(by_name))
                if not final and name is None:  # the member asked least so far
                    name = min(by_name, key=lambda n: asked[n])
                t.entries.append(Entry(r, self.leader.name, "choose", said, to=name))
            if final:
                t.stopped = "final"
                break
            member = by_name[name]
            asked[name] += 1
            request = Message("user", question or task, name=self.leader.name, intent="answer")
            said = member.respond(view(name, task, t.entries, request, self._preamble(member, members))).content
            t.entries.append(Entry(r, name, "answer", said, to=question or task))
        request = Message("user", f"Task: {task}\nWrite the final answer to the task from the answers above.",
                          name="organiser", intent="final")
        t.answer = self.leader.respond(leader_view(request)).content
        t.entries.append(Entry(0, self.leader.name, "final", t.answer))
        return t


_NUMBER = re.compile(r"\b(\d+)\b")


TIE_BREAKS = ("roster", "random", "chair:<member>")


class Democracy:
    """Every member proposes, every member votes; ties by the abstainers' proposals, then proposers, then
    ``tie_break`` (module docstring)."""

    kind = "democracy"

    def __init__(self, tie_break: str = "roster", seed: int = 0, abstainers: bool = True):
        if tie_break not in ("roster", "random") and not (tie_break.startswith("chair:") and tie_break[6:]):
            raise ConfigError(f"tie_break={tie_break!r} is not valid; choose one of: {', '.join(TIE_BREAKS)}")
        self.tie_break, self.seed = tie_break, int(seed)
        self.abstainers = abstainers  # False: skip step (1) of the tie rule (the rule before it, for comparison)

    def winner(self, candidates: Sequence[Tuple[str, List[str]]], votes: Sequence[int], abstained: Sequence[str],
               names: Sequence[str], round_: int) -> Tuple[int, Optional[str]]:
        """(index of the winning candidate, the step that broke a tie or None): most votes, then the abstainers'
        proposals, then proposers, then ``tie_break``."""
        best = max(votes)
        tied = [i for i, v in enumerate(votes) if v == best]
        if len(tied) == 1:
            return tied[0], None
        steps = [("abstainers", lambda i: sum(p in abstained for p in candidates[i][1]))] if self.abstainers else []
        for step, key in steps + [("proposers", lambda i: len(candidates[i][1]))]:
            top = max(key(i) for i in tied)
            tied = [i for i in tied if key(i) == top]
            if len(tied) == 1:
                return tied[0], step
        first = lambda i: names.index(candidates[i][1][0])  # noqa: E731 (roster position of its first proposer)
        if self.tie_break == "random":
            return random.Random(f"{self.seed}/{round_}").choice(sorted(tied, key=first)), "random"
        if self.tie_break.startswith("chair:"):
            chair = [i for i in tied if self.tie_break[6:] in candidates[i][1]]
            if chair:
                return chair[0], "chair"
        return min(tied, key=first), "roster"

    def run(self, task: str, members: Sequence, budget: Budget = Budget()) -> Transcript:
        members = _check_members(members)
        names = [m.name for m in members]
        t = Transcript(task, self.kind, [{"name": m.name, "description": m.description} for m in members])
        preamble = lambda m: f"You are {m.name} ({m.description}), one of the equal members of a society:\n" \
                             f"{roster(members)}"
        t.stopped = "rounds"
        for r in range(1, budget.rounds + 1):
            if t.messages >= budget.messages:
                t.stopped = "messages"
                break
            t.rounds = r
            proposals = []  # (member, text)
            before = list(t.entries)  # proposals are independent: each sees the earlier rounds only
            for m in members:
                if t.messages >= budget.messages:
                    break
                request = Message("user", f"Task: {task}\nPropose your answer.", name="organiser", intent="propose")
                said = m.respond(view(m.name, task, before, request, preamble(m))).content
                t.entries.append(Entry(r, m.name, "propose", said))
                if normalise(said) not in ("", ABSTAIN, normalise(UNKNOWN)):
                    proposals.append((m.name, said))
            candidates: List[Tuple[str, List[str]]] = []  # (text, proposers) in order of first proposal
            for who, text in proposals:
                for c in candidates:
                    if normalise(c[0]) == normalise(text):
                        c[1].append(who)
                        break
                else:
                    candidates.append((text.strip(), [who]))
            if not candidates:
                continue
            listing = "\n".join(f"{i}. {text} (proposed by {', '.join(by)})"
                                for i, (text, by) in enumerate(candidates, 1))
            votes = [0] * len(candidates)
            abstained = []  # members who replied "abstain" (a reply naming no candidate is a spoiled ballot)
            before = list(t.entries)  # a secret ballot: each voter sees the proposals, not the other votes
            for m in members:
                if t.messages >= budget.messages:
                    break
                request = Message("user", f"Task: {task}\nProposals:\n{listing}\nReply with the number of the "
                                  "best proposal.", name="organiser", intent="vote")
                said = m.respond(view(m.name, task, before, request, preamble(m))).content
                choice = self.parse_vote(said, candidates, names)
                t.entries.append(Entry(r, m.name, "vote", said, to=None if choice is None else candidates[choice][0]))
                if choice is not None:
                    votes[choice] += 1
                elif normalise(said) == ABSTAIN:  # a declared abstention, not a spoiled ballot
                    abstained.append(m.name)
            winner, broken = self.winner(candidates, votes, abstained, names, r)
            if broken:
                t.meta.setdefault("ties", []).append(
                    {"round": r, "tied": [c[0] for c, v in zip(candidates, votes) if v == max(votes)],
                     "decided_by": broken})
            t.answer = candidates[winner][0]
            t.tallies.append({text: votes[i] for i, (text, _) in enumerate(candidates)})
            if len(candidates) == 1:
                t.stopped = "consensus"
                break
            if 2 * votes[winner] > sum(votes):
                t.stopped = "majority"
                break
        return t

    @staticmethod
    def parse_vote(text: str, candidates, names) -> Optional[int]:
        """The candidate a vote names: its number (the first number in range), else its proposer's name."""
        if normalise(text) == ABSTAIN:
            return None
        for m in _NUMBER.finditer(text):
            if 1 <= int(m.group(1)) <= len(candidates):
                return int(m.group(1)) - 1
        for i, (_, proposers) in enumerate(candidates):
            if any(_mentions(text, p) for p in proposers):
                return i
        return None


ORGANISERS = {"monarchy": Monarchy, "democracy": Democracy}


def mindstorm(task: str, members: Sequence, organiser, budget: Budget = Budget(), run_dir=None) -> Transcript:
    """Run one mindstorm; with ``run_dir`` the transcript is saved there (JSON and Markdown)."""
    transcript = organiser.run(task, members, budget)
    if run_dir is not None:
        transcript.save(run_dir)
    return transcript
