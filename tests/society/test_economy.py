"""The economy: credit rules, Shapley values, and an organiser that learns whom to ask."""
from __future__ import annotations

import random

import pytest

from metarl.society import (BanditOrganiser, Budget, Calculator, CallableAgent, Lookup, Monarchy, SocietyTask,
                            agreement_credit, equal_credit, product_or_capital_tasks, run_economy, shapley)
from metarl.society.messages import last_request

CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Peru": "Lima", "Kenya": "Nairobi", "Chile": "Santiago",
            "Egypt": "Cairo", "Norway": "Oslo", "Canada": "Ottawa"}


def tasks(n, seed):
    return product_or_capital_tasks(n, seed, CAPITALS)


def kind(task):
    return "capital" if "capital" in task else "arithmetic"


def society():
    rng = random.Random(0)
    guesser = CallableAgent("guesser", lambda conv: rng.choice(["Paris", "1234", "Lima", "42"]), "guesses boldly")
    return [guesser, Calculator(), Lookup(CAPITALS, name="atlas")]


def echo_leader():
    """Writes the last answer it heard as the final one."""
    def lead(conv):
        assert last_request(conv).intent == "final"  # the bandit chooses; the leader only writes the answer
        heard = [m.content for m in conv if m.role == "user" and m.name in ("guesser", "calculator", "atlas")]
        return heard[-1] if heard else "no idea"
    return CallableAgent("leader", lead)


def test_credit_rules():
    def lead(conv):
        if last_request(conv).intent == "final":
            return "The answer is 391."
        said = sum(m.name == "leader" for m in conv)  # its earlier choices
        return ["calculator", "guesser", "FINAL"][min(said, 2)]

    t = Monarchy(CallableAgent("leader", lead)).run("What is 17 * 23?", society(), Budget(rounds=4))
    assert t.speakers() == ["calculator", "guesser"]
    assert equal_credit(t, 1.0) == {"guesser": 0.5, "calculator": 0.5, "atlas": 0.0}
    assert agreement_credit(t, 1.0) == {"guesser": 0.0, "calculator": 1.0, "atlas": 0.0}


def test_shapley():
    phi = shapley(["calc", "atlas", "noise"], lambda s: float("calc" in s))
    assert phi == pytest.approx({"calc": 1.0, "atlas": 0.0, "noise": 0.0})
    phi = shapley(["a", "b", "c"], lambda s: float({"a", "b"} <= s) + 0.3 * ("c" in s))
    assert phi == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.3})
    assert sum(shapley(list("abcd"), lambda s: len(s) ** 2).values()) == pytest.approx(16)  # efficiency


def test_organiser_learns_whom_to_ask():
    members, leader = society(), echo_leader()
    organiser = BanditOrganiser([m.name for m in members], context=kind, c=0.5)
    trained = run_economy(tasks(40, seed=1), members, leader, organiser, Budget(rounds=1))
    assert all(t.messages == 3 for t in trained)  # a choice, an answer, the final answer
    table = organiser.table()
    assert max(table["arithmetic"], key=table["arithmetic"].get) == "calculator"
    assert max(table["capital"], key=table["capital"].get) == "atlas"
    organiser.explore = False
    test = run_economy(tasks(30, seed=2), members, leader, organiser, Budget(rounds=1), learn=False)
    accuracy = sum(t.meta["reward"] for t in test) / len(test)
    assert accuracy == 1.0
    # untrained, a greedy organiser asks the same member for everything: about half the tasks
    fixed = BanditOrganiser([m.name for m in members], context=kind, explore=False)
    baseline = run_economy(tasks(30, seed=2), members, leader, fixed, Budget(rounds=1), learn=False)
    assert sum(t.meta["reward"] for t in baseline) / len(baseline) < 0.3  # always the guesser
    assert test[0].meta["credits"][test[0].entries[1].speaker] == 1.0


def test_organiser_with_stages_and_a_stop_arm_learns_to_stop():
    # one useful answer suffices: the bandit learns to ask the right member, then to stop (saving messages)
    from metarl.society.economy import talk_stage
    from metarl.society.glyph_task import echo_leader as last_useful  # the last answer that is not "I don't know."

    members, leader = society(), last_useful()
    organiser = BanditOrganiser([m.name for m in members], context=kind, c=0.5, stage=talk_stage, stop=True)
    run_economy(tasks(120, seed=1), members, leader, organiser, Budget(rounds=3), credit="agreement")
    policy = organiser.policy()
    assert policy["arithmetic|-"] == "calculator" and policy["capital|-"] == "atlas"
    assert policy["arithmetic|calculator"] == "FINAL" and policy["capital|atlas"] == "FINAL"
    organiser.explore = False
    test = run_economy(tasks(20, seed=2), members, leader, organiser, Budget(rounds=3), learn=False)
    assert all(t.meta["reward"] == 1.0 for t in test)
    assert all(t.messages == 4 for t in test)  # choose, answer, choose FINAL, final
    assert test[0].meta["bandit"][-1][1] == "FINAL"
