"""Mindstorms with deterministic members: monarchical and democratic outcomes, budgets, saved transcripts."""
from __future__ import annotations

import json
import re

import pytest

from metarl.errors import ConfigError, MissingPathError
from metarl.society import (Budget, Calculator, CallableAgent, ChatAgent, Democracy, Lookup, Monarchy, Transcript,
                            mindstorm, parse_choice)
from metarl.society.messages import last_request
from metarl.society.mindstorm import normalise

TASK = "What is 17 * 3, and what is the capital of France?"


def scripted_leader():
    """Asks the calculator, then the atlas, then stops; the final answer joins what they said."""
    def lead(conv):
        request = last_request(conv)
        if request.intent == "choose":
            chosen = sum(1 for m in conv if m.name == "leader" and m.role == "assistant")  # its earlier choices
            return ["calculator: What is 17 * 3?", "Let us ask atlas.", "FINAL"][min(chosen, 2)]
        answers = {m.name: m.content for m in conv if m.name in ("calculator", "atlas")}
        return f"{answers.get('calculator')} and {answers.get('atlas')}"
    return CallableAgent("leader", lead, "reads everything, decides")


def members():
    noisy = CallableAgent("guesser", lambda conv: "I think 50 and Lyon", "guesses")
    return [noisy, Calculator(), Lookup({"France": "Paris", "Japan": "Tokyo"}, name="atlas")]


def test_monarchy_leader_chooses_reads_and_answers(tmp_path):
    t = mindstorm(TASK, members(), Monarchy(scripted_leader()), Budget(rounds=5), run_dir=tmp_path)
    assert t.answer == "51 and Paris"
    assert t.stopped == "final" and t.rounds == 3
    assert [(e.speaker, e.intent) for e in t.entries] == [
        ("leader", "choose"), ("calculator", "answer"), ("leader", "choose"), ("atlas", "answer"),
        ("leader", "choose"), ("leader", "final")]
    assert t.entries[1].to == "What is 17 * 3?" and t.entries[3].to == TASK  # a question, or the task
    assert t.speakers() == ["calculator", "atlas"]
    back = Transcript.load(tmp_path)
    assert back.to_dict() == t.to_dict()
    assert json.loads((tmp_path / "transcript.json").read_text())["messages"] == 6
    md = (tmp_path / "transcript.md").read_text()
    assert "# Mindstorm (monarchy)" in md and "## Round 2" in md and "**Answer:** 51 and Paris" in md
    assert "- **calculator** (answer): 51" in md


def test_monarchy_budgets_and_fallback():
    # a leader that never names a member: the member asked least speaks (roster order among equals)
    vague = CallableAgent("leader", lambda conv: "someone, please" if last_request(conv).intent == "choose"
                          else conv[-2].content)
    t = Monarchy(vague).run(TASK, members(), Budget(rounds=3))
    assert [e.speaker for e in t.entries if e.intent == "answer"] == ["guesser", "calculator", "atlas"]
    assert t.stopped == "rounds" and t.answer == "Paris"
    t = Monarchy(vague).run(TASK, members(), Budget(rounds=10, messages=6))  # 2 rounds + final fit in 6 messages
    assert t.messages == 5 and t.rounds == 2 and t.stopped == "messages"
    assert parse_choice("ask Atlas: capital of Japan?", ["atlas", "calculator"]) == ("atlas", "capital of Japan?", False)
    assert parse_choice("final: done", ["atlas"]) == (None, None, True)


def voter(name, proposal, vote=None, follow=False):
    """Proposes ``proposal`` (with follow: after round 1, the first proposal it saw from another member) and
    votes for its own proposal, or for the candidate text ``vote``."""
    def act(conv):
        request = last_request(conv)
        if request.intent == "vote":
            listing = dict(re.findall(r"^(\d+)\. (.*?) \(proposed by", request.content, flags=re.M))
            wanted = vote or mine[-1]
            return next((f"I vote {i}" for i, text in listing.items() if normalise(text) == normalise(wanted)),
                        "abstain")
        seen = [m.content for m in conv if m.role == "user" and m.name not in (None, name, "task", "organiser")]
        mine.append(seen[0] if follow and seen else proposal)
        return mine[-1]
    mine = []
    return CallableAgent(name, act, f"always says {proposal}")


def test_democracy_majority_wins():
    t = Democracy().run("6 * 7?", [voter("a", "42"), voter("b", "41"), voter("c", "42.")], Budget(rounds=3))
    assert t.answer == "42" and t.stopped == "majority" and t.rounds == 1
    assert t.tallies == [{"42": 2, "41": 1}]  # "42." and "42" are one candidate
    assert [e.to for e in t.entries if e.intent == "vote"] == ["42", "41", "42"]


def test_democracy_tie_rules():
    # 1 : 1 : 0 -> a tie; "y" has two proposers, so it beats "x" (proposed first)
    t = Democracy().run("?", [voter("a", "x"), voter("b", "y"), voter("c", "y", vote="none")], Budget(rounds=1))
    assert t.tallies == [{"x": 1, "y": 1}] and t.answer == "y" and t.stopped == "rounds"
    # 1 : 1 with one proposer each -> the candidate proposed first in roster order
    t = Democracy().run("?", [voter("b", "q"), voter("a", "p")], Budget(rounds=1))
    assert t.tallies == [{"q": 1, "p": 1}] and t.answer == "q"


def test_democracy_rounds_let_members_revise(tmp_path):
    t = mindstorm("?", [voter("a", "5"), voter("b", "6", follow=True)], Democracy(), Budget(rounds=3),
                  run_dir=tmp_path)
    assert t.rounds == 2 and t.stopped == "consensus" and t.answer == "5"
    assert [e.content for e in t.entries if e.intent == "propose"] == ["5", "6", "5", "5"]
    assert Transcript.load(tmp_path / "transcript.json").tallies == [{"5": 1, "6": 1}, {"5": 2}]
    t = Democracy().run("?", [voter("a", "5"), voter("b", "6"), voter("c", "7")], Budget(rounds=3, messages=5))
    assert t.messages == 5 and [e.intent for e in t.entries].count("vote") == 2 and t.stopped == "messages"


def test_tools_and_remote_member_in_a_democracy(chat_server):
    chat_server.answer = lambda messages: ("2" if "Proposals" in messages[-1]["content"] else "42")
    remote = ChatAgent("remote", chat_server.base_url, "m", timeout=5)
    t = Democracy().run("What is 6 * 7?", [Calculator(), Lookup({"France": "Paris"}), remote], Budget(rounds=2))
    assert t.answer == "42" and t.stopped == "consensus"  # the calculator and the remote model agree


def test_bad_inputs():
    with pytest.raises(ConfigError, match="unique"):
        Democracy().run("?", [Calculator(), Calculator()])
    with pytest.raises(ConfigError):
        Budget(rounds=0)
    with pytest.raises(MissingPathError):
        Transcript.load("/nonexistent/transcript.json")


def test_democracy_tie_goes_to_the_abstainers_proposal_then_the_declared_rule():
    # the tool abstains; "g" votes for its own guess, "s" for the tool's answer: 1 : 1, and the tool's wins
    tool = Calculator()
    guess, scribe = voter("g", "5"), voter("s", "I don't know.", vote="42")
    for seats in ([guess, scribe, tool], [tool, scribe, guess]):
        t = Democracy().run("What is 6 * 7?", seats, Budget(rounds=1))
        assert t.tallies == [{"5": 1, "42": 1}] or t.tallies == [{"42": 1, "5": 1}]
        assert t.answer == "42" and t.meta["ties"] == [{"round": 1, "tied": t.meta["ties"][0]["tied"],
                                                       "decided_by": "abstainers"}]
    # the old rule (no abstainers' step) gives it to whoever sits first
    t = Democracy(abstainers=False).run("What is 6 * 7?", [guess, scribe, tool], Budget(rounds=1))
    assert t.answer == "5" and t.meta["ties"][0]["decided_by"] == "roster"
    # equal on votes, abstainers and proposers: the declared rule
    two = lambda: [voter("b", "q"), voter("a", "p")]  # noqa: E731
    assert Democracy(tie_break="chair:a").run("?", two(), Budget(rounds=1)).answer == "p"
    assert Democracy(tie_break="chair:z").run("?", two(), Budget(rounds=1)).answer == "q"  # no such proposal: roster
    drawn = {Democracy(tie_break="random", seed=s).run("?", two(), Budget(rounds=1)).answer for s in range(8)}
    assert drawn == {"p", "q"}  # seeded draws, both sides
    again = [Democracy(tie_break="random", seed=3).run("?", two(), Budget(rounds=1)).answer for _ in range(2)]
    assert again[0] == again[1]
    with pytest.raises(ConfigError, match="tie_break"):
        Democracy(tie_break="loudest")


def test_calculator_reads_the_talk_when_asked_nothing():
    from metarl.society import Message

    calc = Calculator(read_talk=True)
    talk = [Message("user", "What is the sum?", name="task", intent="task"), Message("user", "3 + 5", name="scribe"),
            Message("user", "It is 7.", name="guesser"), Message("user", "Propose.", name="organiser", intent="propose")]
    assert calc.respond(talk).content == "8"
    assert Calculator().respond(talk).content == "I don't know."  # without read_talk: the request only
    assert calc.respond(talk[:-1] + [Message("user", "2 * 4", name="organiser")]).content == "8"


def test_a_spoiled_ballot_is_not_an_abstention():
    # "g" replies something that names no proposal (spoiled), the tool declares "abstain": 0 : 0, the tool's wins
    spoiler = CallableAgent("g", lambda conv: "Paris" if last_request(conv).intent == "vote" else "400")
    for seats in ([spoiler, Calculator()], [Calculator(), spoiler]):
        t = Democracy().run("What is 17 * 23?", seats, Budget(rounds=1))
        assert t.answer == "391" and t.meta["ties"][0]["decided_by"] == "abstainers"
