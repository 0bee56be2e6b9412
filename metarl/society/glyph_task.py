"""The offline demonstration task: questions about generated glyph images that no single member answers.

A task shows one or two glyph images (``metarl.supervised.vision.data.glyphs``: 10 generated characters,
class ``k`` is called "class k") and asks, in text::

    name      What is the class of image:left?
    sum       What is the class of image:left plus the class of image:right?
    difference  ... minus ...            product   ... times ...

The images live in the task's side table (``GlyphTask.images``, shown to the describer's ``Gallery`` while
the society works: ``with task.context(): ...``). The reward is 1 when the last number of the final answer is
the truth (so an answer listing several numbers does not pass by containing the right one).

The members (``glyph_society``, in roster order):

- ``describer`` (``ImageDescriber``): a trained Conv-4 classifier; the only member that sees the images.
- ``scribe``: rewrites the task with what the others said: each "the class of image:x" becomes the class a
  member stated for it, "plus / minus / times" become ``+ - *`` ("3 + 5"). It cannot see and does not
  compute; it votes for the proposal of the member whose skill (by its description) the task still needs:
  the describer's while the classes are unknown or when its rewrite is already a number, the calculator's
  once there is arithmetic to do (else its own rewrite, else the describer's).
- ``calculator`` (``Calculator(read_talk=True)``): evaluates the expression of its request, or the latest one
  said in the talk.
- ``atlas`` (``Lookup`` of capitals): a distractor that knows unrelated facts (always "I don't know." here).
- ``guesser``: a distractor that answers every question with a confident random number and votes for its
  own proposal.

Organisers: ``router`` is the monarch (a keyword router, not a language model: it reads the members'
descriptions, asks the one that "describes images" about the images, writes the arithmetic from the answer
and asks the one that "computes arithmetic", then answers the calculator's value); ``echo_leader`` is the
leader of the learned economy (it only writes the last useful answer heard: the bandit chooses whom to ask).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

from .agents import ABSTAIN, UNKNOWN, Calculator, CallableAgent, Lookup, find_expression
from .describer import Gallery, image_refs
from .economy import SocietyTask
from .messages import Message, last_request
from .mindstorm import Entry, Transcript, normalise

KINDS = {"name": None, "sum": ("plus", "+"), "difference": ("minus", "-"), "product": ("times", "*")}
CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Peru": "Lima", "Kenya": "Nairobi", "Norway": "Oslo",
            "Canada": "Ottawa", "Egypt": "Cairo", "Chile": "Santiago"}
SEES, COMPUTES = "describes images", "computes arithmetic"  # what the router and the scribe look for
_DESCRIBED = re.compile(r"image:([A-Za-z0-9_\-]+) shows class (-?\d+)")
_LAST_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass
class GlyphTask(SocietyTask):
    """A question about glyph images; ``images`` is its side table (name -> uint8 [1, 28, 28])."""

    images: Dict[str, torch.Tensor] = field(default_factory=dict)
    labels: Dict[str, int] = field(default_factory=dict)  # the true class of each image
    gallery: Optional[Gallery] = None  # the describer's gallery that shows ``images`` during a mindstorm

    def reward(self, answer: Optional[str]) -> float:
        numbers = _LAST_NUMBER.findall(answer or "")
        return 1.0 if numbers and normalise(numbers[-1]) == normalise(self.truth) else 0.0

    def context(self):
        return self.gallery.showing(self.images) if self.gallery is not None else super().context()


def task_kind(prompt: str) -> str:
    """The kind of a glyph question, read from its words (the economy's context)."""
    for kind, op in KINDS.items():
        if op and f" {op[0]} " in prompt:
            return kind
    return "name" if image_refs(prompt) else "other"


def make_tasks(images: torch.Tensor, labels: torch.Tensor, n: int, kinds: Sequence[str], seed: int,
               gallery: Optional[Gallery] = None) -> List[GlyphTask]:
    """``n`` questions (kinds in turn) about images drawn from ``images`` [N, 1, H, W] with ``labels`` [N]."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        from ..errors import ConfigError

        raise ConfigError(f"env.kinds={list(kinds)} is not valid; choose among: {', '.join(KINDS)}")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        names = ["left"] if kind == "name" else ["left", "right"]
        picks = {name: rng.randrange(len(images)) for name in names}
        classes = {name: int(labels[j]) for name, j in picks.items()}
        if kind == "name":
            prompt, truth = "What is the class of image:left?", classes["left"]
        else:
            word, op = KINDS[kind]
            prompt = f"What is the class of image:left {word} the class of image:right?"
            truth = eval_op(op, classes["left"], classes["right"])
        out.append(GlyphTask(prompt, str(truth), kind, {name: images[j] for name, j in picks.items()}, classes,
                             gallery))
    return out


def eval_op(op: str, a: int, b: int) -> int:
    return {"+": a + b, "-": a - b, "*": a * b}[op]


# ----------------------------------------------------------------------------------------------- reading the talk
def stated_classes(texts: Sequence[str]) -> Dict[str, str]:
    """{image name: class} from every "image:x shows class k" in ``texts`` (later statements win)."""
    out: Dict[str, str] = {}
    for text in texts:
        for name, cls in _DESCRIBED.findall(text):
            out[name] = cls
    return out


def compose(task: str, texts: Sequence[str]) -> Optional[str]:
    """The task rewritten with the classes stated in ``texts``: "3 + 5" (or "3" for a name question); None
    while an image of the task has no stated class or the words do not become arithmetic."""
    classes = stated_classes(texts)
    if any(name not in classes for name in image_refs(task)):
        return None
    body = re.sub(r"^\s*what is\s+", "", task, flags=re.IGNORECASE).strip().rstrip("?.").strip()
    body = re.sub(r"the class of image:([A-Za-z0-9_\-]+)", lambda m: classes[m.group(1)], body, flags=re.IGNORECASE)
    for word, op in filter(None, KINDS.values()):
        body = re.sub(rf"\s+{word}\s+", f" {op} ", body)
    return body if re.fullmatch(r"[-+*/() \d.]+", body) else None


def heard(conversation: Sequence[Message], me: str) -> List[str]:
    """What the other members said in ``conversation`` (not the task, the organiser or ``me``)."""
    return [m.content for m in conversation if m.role != "system" and m.name not in (None, me, "task", "organiser")
            and normalise(m.content) not in (normalise(UNKNOWN), ABSTAIN)]


def task_text(conversation: Sequence[Message]) -> str:
    return next((m.content for m in conversation if m.name == "task"), last_request(conversation).content)


def roster_of(conversation: Sequence[Message]) -> Dict[str, str]:
    """{member: description} from the roster in the system message ("- name: description" lines)."""
    system = next((m.content for m in conversation if m.role == "system"), "")
    return dict(re.findall(r"^- ([\w\-]+): (.*)$", system, flags=re.MULTILINE))


def member_with(descriptions: Dict[str, str], skill: str) -> Optional[str]:
    return next((n for n, d in descriptions.items() if skill in d), None)


def proposals_of(request: str) -> List[tuple]:
    """[(number, text, [proposers])] of a democracy's ballot."""
    return [(int(i), text, [p.strip() for p in by.split(",")])
            for i, text, by in re.findall(r"^(\d+)\. (.*) \(proposed by ([^)]*)\)$", request, flags=re.MULTILINE)]


# --------------------------------------------------------------------------------------------------- members
def scribe(name: str = "scribe") -> CallableAgent:
    """The member that rewrites the task as arithmetic from what the others said (module docstring)."""

    def act(conversation):
        request = last_request(conversation)
        task = task_text(conversation)
        expression = compose(task, heard(conversation, name))
        if request.intent == "choose":
            return ABSTAIN
        if request.intent != "vote":
            return expression or UNKNOWN
        ballot = proposals_of(request.content)
        who = roster_of(conversation)
        seer, computer = member_with(who, SEES), member_with(who, COMPUTES)
        arithmetic = expression is not None and find_expression(expression) is not None
        wanted = [computer, name, seer] if arithmetic else [seer]
        for member in wanted:
            for number, _, proposers in ballot:
                if member in proposers:
                    return f"I vote {number}"
        return ABSTAIN

    return CallableAgent(name, act, "rewrites the question with the facts others stated, as an arithmetic "
                                    "expression (cannot see images, does not compute)")


def guesser(seed: int = 0, high: int = 18, name: str = "guesser") -> CallableAgent:
    """A distractor: a confident random number for every question; votes for its own last proposal."""
    rng = random.Random(seed)
    mine: List[str] = []

    def act(conversation):
        request = last_request(conversation)
        if request.intent == "choose":
            return ABSTAIN
        if request.intent == "vote":
            return next((f"I vote {number}" for number, text, _ in proposals_of(request.content)
                         if mine and normalise(text) == normalise(mine[-1])), ABSTAIN)
        mine.append(f"It is {rng.randint(0, high)}.")
        return mine[-1]

    return CallableAgent(name, act, "answers every question with confidence")


def glyph_society(describer, seed: int = 0, high: int = 18, extra: Sequence = ()) -> List:
    """The members of the glyph task: describer, scribe, calculator, atlas, guesser (then ``extra``)."""
    return [describer, scribe(), Calculator(description="computes arithmetic expressions exactly (+ - * / ...)",
                                            read_talk=True),
            Lookup(CAPITALS, name="atlas"), guesser(seed, high)] + list(extra)


def router(members: Sequence) -> CallableAgent:
    """The monarch of the glyph task: a keyword router over the members' descriptions (module docstring)."""
    descriptions = {m.name: m.description for m in members}
    seer, computer = member_with(descriptions, SEES), member_with(descriptions, COMPUTES)

    def lead(conversation):
        request = last_request(conversation)
        task = task_text(conversation)
        asked = [m.content.split(":")[0].strip() for m in conversation
                 if m.name == "leader" and m.role == "assistant"]
        said = {m.name: m.content for m in conversation if m.role == "user" and m.name in descriptions}
        expression = compose(task, heard(conversation, "leader"))
        if request.intent == "final":
            if computer in said and normalise(said[computer]) != normalise(UNKNOWN):
                return said[computer]
            return expression if expression and find_expression(expression) is None else UNKNOWN
        refs = image_refs(task)
        if refs and seer and seer not in asked:
            return f"{seer}: What does each of {', '.join('image:' + r for r in refs)} show?"
        if expression and find_expression(expression) and computer and computer not in asked:
            return f"{computer}: {expression}"
        return "FINAL"

    return CallableAgent("leader", lead, "routes questions by the members' descriptions")


def echo_leader() -> CallableAgent:
    """The economy's leader: it does not choose (the bandit does); its final answer is the last useful one heard."""

    def lead(conversation):
        said = [m.content for m in conversation if m.role == "user" and m.name not in (None, "task", "organiser")
                and normalise(m.content) not in (normalise(UNKNOWN), ABSTAIN) and m.name != "leader"]
        return said[-1] if said else UNKNOWN

    return CallableAgent("leader", lead, "writes the last useful answer heard")


def alone(member, task: SocietyTask) -> Transcript:
    """One member answers the task by itself (one message): the baseline of every society."""
    conversation = [Message("system", f"You are {member.name} ({member.description}). Answer the task."),
                    Message("user", task.prompt, name="task", intent="task"),
                    Message("user", task.prompt, name="organiser", intent="answer")]
    with task.context():
        said = member.respond(conversation).content
    t = Transcript(task.prompt, "alone", [{"name": member.name, "description": member.description}],
                   [Entry(1, member.name, "answer", said, to=task.prompt)], answer=said, rounds=1, stopped="final")
    return t
