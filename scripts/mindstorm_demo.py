"""A small society of minds, offline: a calculator, an atlas (a lookup table), a guesser that is usually
wrong, and optionally a local chat-completions model; monarchical and democratic mindstorms on a few tasks,
then an economy whose organiser learns whom to ask.

    python scripts/mindstorm_demo.py [--run-dir runs/society-demo] [--rounds 3]
        [--base-url http://127.0.0.1:8000/v1 --model <name> [--api-key-env OPENAI_API_KEY] [--timeout 60]]

Every mindstorm's transcript.json and transcript.md go to <run-dir>/<task>-<organiser>/; a summary table is
printed and written to <run-dir>/summary.json. A server that cannot be reached stops the demo with one
message naming the URL (exit status 2).
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

from metarl.errors import UserError
from metarl.society import (UNKNOWN, BanditOrganiser, Budget, Calculator, CallableAgent, ChatAgent, Democracy,
                            Lookup, Monarchy, SocietyTask, find_expression, last_request, mindstorm,
                            product_or_capital_tasks, run_economy)

CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Peru": "Lima", "Kenya": "Nairobi", "Norway": "Oslo",
            "Canada": "Ottawa", "Egypt": "Cairo", "Chile": "Santiago"}
TASKS = [SocietyTask("What is 17 * 23?", "391", "arithmetic"),
         SocietyTask("What is the capital of Kenya?", "Nairobi", "capital"),
         SocietyTask("What is the capital of Peru, and what is (12 + 8) * 3?", "Lima", "both")]


def router(members):
    """A keyword leader: asks the calculator when the task holds arithmetic, the atlas when it names a
    country, any other member (a remote model) once, then FINAL; the final answer joins what was learned."""
    names = [m.name for m in members]

    def lead(conversation):
        request = last_request(conversation)
        task = next(m.content for m in conversation if m.name == "task")
        asked = [m.content.split(":")[0] for m in conversation if m.name == "leader" and m.role == "assistant"]
        heard = [m.content for m in conversation if m.role == "user" and m.name in names
                 and m.content != UNKNOWN]
        if request.intent == "final":
            return "; ".join(dict.fromkeys(heard)) or "I don't know."
        wanted = []
        if find_expression(task):
            wanted.append("calculator")
        if any(re.search(rf"\b{c}\b", task) for c in CAPITALS):
            wanted.append("atlas")
        wanted += [n for n in names if n not in ("calculator", "atlas", "guesser")]
        todo = [n for n in wanted if n in names and n not in asked]
        return todo[0] if todo else "FINAL"

    return CallableAgent("leader", lead, "routes questions by keyword")


def economy_tasks(n, seed):
    return product_or_capital_tasks(n, seed, CAPITALS)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs") / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}-society-demo",
                        help="where transcripts and the summary go")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mindstorm")
    parser.add_argument("--messages", type=int, default=40, help="messages per mindstorm")
    parser.add_argument("--base-url", default=None, help="an OpenAI-compatible endpoint to add as a member (…/v1)")
    parser.add_argument("--model", default="local", help="the model name the endpoint serves")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request to the endpoint")
    parser.add_argument("--economy-tasks", type=int, default=40, help="training tasks of the economy")
    args = parser.parse_args(argv)
    rng = random.Random(0)
    members = [CallableAgent("guesser", lambda conv: rng.choice(["42", "Paris", "I am sure it is 400"]),
                             "answers anything with confidence"),
               Calculator(), Lookup(CAPITALS, name="atlas")]
    try:
        if args.base_url:
            members.append(ChatAgent("model", args.base_url, args.model, api_key_env=args.api_key_env,
                                     timeout=args.timeout, description="a general language model",
                                     system="Answer in a few words."))
        budget = Budget(rounds=args.rounds, messages=args.messages)
        rows = []
        for i, task in enumerate(TASKS):
            for organiser in (Monarchy(router(members)), Democracy()):
                t = mindstorm(task.prompt, members, organiser, budget,
                              run_dir=args.run_dir / f"task{i}-{organiser.kind}")
                rows.append({"task": task.prompt, "organiser": organiser.kind, "answer": t.answer,
                             "correct": task.reward(t.answer), "rounds": t.rounds, "messages": t.messages})
        organiser = BanditOrganiser([m.name for m in members],
                                    context=lambda p: "capital" if "capital" in p else "arithmetic")
        echo = CallableAgent("leader", lambda conv: next((m.content for m in reversed(conv) if m.role == "user"
                                                          and m.name != "organiser"), "?"))
        run_economy(economy_tasks(args.economy_tasks, 1), members, echo, organiser, Budget(rounds=1))
        organiser.explore = False
        test = run_economy(economy_tasks(40, 2), members, echo, organiser, Budget(rounds=1), learn=False)
    except UserError as err:
        print(f"[mindstorm_demo] error: {err}", file=sys.stderr)
        return 2
    print(f"{'organiser':<10} {'ok':>3} {'msgs':>5}  task -> answer")
    for r in rows:
        print(f"{r['organiser']:<10} {int(r['correct']):>3} {r['messages']:>5}  {r['task']} -> {r['answer']}")
    accuracy = sum(t.meta["reward"] for t in test) / len(test)
    print(f"economy: learned {json.dumps(organiser.table())}; greedy accuracy on 40 new tasks {accuracy:.2f}")
    summary = {"mindstorms": rows, "economy": {"table": organiser.table(), "test_accuracy": accuracy}}
    args.run_dir.mkdir(parents=True, exist_ok=True)
    (args.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"transcripts and summary.json in {args.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
