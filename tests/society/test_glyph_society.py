"""The glyph questions: the members, the societies, and `python -m metarl.train env=society/glyph_sum`."""
from __future__ import annotations

import json

import pytest

from metarl.engine.logging import read_metrics
from metarl.errors import ConfigError
from metarl.society import BanditOrganiser, Budget, Democracy, Monarchy, run_economy
from metarl.society.describer import Gallery, ImageDescriber
from metarl.society.economy import STOP, talk_stage
from metarl.society.glyph_task import (alone, compose, echo_leader, glyph_society, make_tasks, router, task_kind)
from metarl.supervised.vision.data import glyphs
from metarl.train import compose_config, run


@pytest.fixture
def society(glyph_checkpoint):
    gallery = Gallery()
    describer = ImageDescriber.from_checkpoint(glyph_checkpoint, gallery, class_names=[str(k) for k in range(10)])
    test = glyphs(10, 100).test
    tasks = make_tasks(test.images, test.labels, 12, ["name", "sum", "product"], seed=1, gallery=gallery)
    return glyph_society(describer), tasks


def test_compose_and_task_kinds():
    task = "What is the class of image:left times the class of image:right?"
    assert compose(task, ["image:left shows class 3; image:right shows class 5."]) == "3 * 5"
    assert compose(task, ["image:left shows class 3."]) is None  # the right image is not described yet
    assert compose("What is the class of image:left?", ["image:left shows class 7."]) == "7"
    assert [task_kind(p) for p in (task, "What is the class of image:left?", "What is 2 + 2?")] == \
        ["product", "name", "other"]


def test_no_member_alone_but_the_societies_solve_glyph_questions(society):
    members, tasks = society
    solved = lambda ts: sum(task.reward(t.answer) for t, task in zip(ts, tasks)) / len(tasks)  # noqa: E731
    arithmetic = [i for i, t in enumerate(tasks) if t.kind != "name"]
    for m in members:
        answers = [alone(m, t) for t in tasks]
        assert sum(tasks[i].reward(answers[i].answer) for i in arithmetic) <= 2  # of 8 (a lucky guess or a match)
    monarchy = []
    for t in tasks:
        with t.context():
            monarchy.append(Monarchy(router(members)).run(t.prompt, members, Budget(rounds=3)))
    assert solved(monarchy) >= 0.6
    sum_task = monarchy[1]
    assert [e.speaker for e in sum_task.entries if e.intent == "answer"] == ["describer", "calculator"]
    assert sum_task.messages == 6
    democracy = []
    for t in tasks:
        with t.context():
            democracy.append(Democracy().run(t.prompt, members, Budget(rounds=3)))
    assert solved(democracy) >= 0.6
    assert [e.speaker for e in democracy[1].entries if e.intent == "propose" and e.content[:1].isdigit()][-1] \
        in ("scribe", "calculator")


def test_the_economy_learns_the_chain(society):
    members, _ = society
    train = make_tasks(*(lambda v: (v.images, v.labels))(glyphs(10, 100).val), 300, ["name", "sum"], seed=2,
                       gallery=members[0].gallery)
    bandit = BanditOrganiser([m.name for m in members], context=task_kind, stage=talk_stage, stop=True)
    run_economy(train, members, echo_leader(), bandit, Budget(rounds=3), credit="equal")
    policy = bandit.policy()
    assert policy["sum|-"] == "describer" and policy["sum|describer"] == "scribe"
    assert policy["sum|describer>scribe"] == "calculator"
    assert policy["name|-"] == "describer" and policy["name|describer"] == STOP  # the answer suffices: stop


def test_env_society_runs_through_the_train_command(glyph_checkpoint, tmp_path):
    cfg = compose_config("env=society/glyph_sum", f"env.describer={glyph_checkpoint}", "env.test_tasks=9",
                         "env.train_tasks=60", "env.eval_every=30", "env.val_tasks=6", "progress=false")
    assert cfg.env.kind == "society" and cfg.env.family == "glyphs" and cfg.env.kinds == ["name", "sum", "product"]
    metrics = run(cfg, tmp_path)
    assert metrics["test/monarchy/accuracy"] >= 0.5 and metrics["test/monarchy/messages"] < 7
    assert metrics["test/calculator_alone/accuracy"] == 0 and metrics["test/democracy/messages"] == 30
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows if "eval/economy/accuracy" in r] == [30, 60]
    assert "test/economy/accuracy" in rows[-1] and "test/describer_alone/accuracy_name" in rows[-1]
    saved = json.loads((tmp_path / "transcripts" / "monarchy.json").read_text())
    assert len(saved) == 9 and saved[0]["format"] == "metarl-society-transcript" and "truth" in saved[0]["meta"]
    assert (tmp_path / "transcripts" / "democracy.md").read_text().startswith("# democracy: 9 mindstorm(s)")
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["results"]) >= {"monarchy", "democracy", "economy", "guesser_alone"}
    assert (tmp_path / "curves.png").is_file()
    with pytest.raises(ConfigError, match="env.organisers"):
        run(compose_config("env=society/glyph_sum", "env.organisers=[anarchy]"), tmp_path / "bad")
    with pytest.raises(ConfigError, match="tie_break"):
        run(compose_config("env=society/glyph_sum", "env.tie_break=loudest"), tmp_path / "bad")
