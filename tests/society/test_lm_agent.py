"""The LM agent: a tiny LSTM trained here in seconds answers through the carried state."""
from __future__ import annotations

import json

import pytest
import torch

from metarl.engine import save_checkpoint
from metarl.errors import CheckpointError, MissingPathError
from metarl.society import Budget, Calculator, Democracy, Message
from metarl.society.lm_agent import LMAgent, load_language_model, render_lines
from metarl.supervised.lm import ByteTokenizer, build_language_model

TEXT = "task: greet\nparrot: hello world\n" * 40
AGENT = {"name": "lstm", "d_model": 48, "num_layers": 1, "num_heads": 1, "ff": "none"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    tokenizer = ByteTokenizer()
    model = build_language_model(AGENT, tokenizer.vocab_size, memory=16)
    data = tokenizer.encode(TEXT.encode())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(150):  # a few seconds on one thread
        start = (step * 17) % (len(data) - 65)
        x, y = data[start:start + 64][None], data[start + 1:start + 65][None]
        logits, _ = model(x)
        loss = torch.nn.functional.cross_entropy(logits[0], y[0])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.3
    run = tmp_path_factory.mktemp("lm_run")
    config = {"env": {"family": "lm", "memory": 16, "tie_embeddings": False}, "agent": AGENT}
    path = save_checkpoint(run / "checkpoint.pt", model, counters={"step": 150}, config=config)
    (run / "tokenizer.json").write_text(json.dumps(tokenizer.to_dict()))
    return path


def test_lm_agent_replies_what_it_learned(checkpoint):
    agent = LMAgent.from_checkpoint(checkpoint, name="parrot", description="repeats its training text")
    conversation = [Message("user", "greet", name="task")]
    assert render_lines(conversation, "parrot") == "task: greet\nparrot: "
    out = agent.respond(conversation)
    assert (out.role, out.name, out.content) == ("assistant", "parrot", "hello world")
    # streaming with the carried state equals re-reading the whole text at every step
    prompt = render_lines(conversation, "parrot")
    ids = list(prompt.encode())
    with torch.no_grad():
        for _ in range(11):
            logits, _ = agent.model(torch.tensor([ids]))
            ids.append(int(logits[0, -1].argmax()))
    assert bytes(ids[len(prompt):]).decode() == "hello world"
    sampled = LMAgent("p", agent.model, agent.tokenizer, temperature=1.0, top_k=3, seed=1, max_tokens=8)
    assert sampled.generate(prompt) == sampled.generate(prompt)  # seeded
    t = Democracy().run("greet", [agent, Calculator()], Budget(rounds=1))
    assert t.answer == "hello world"


def test_lm_agent_errors(checkpoint, tmp_path):
    with pytest.raises(MissingPathError):
        load_language_model(tmp_path / "none.pt")
    other = save_checkpoint(tmp_path / "rl.pt", torch.nn.Linear(1, 1), counters={}, config={"env": {"family": "x"}})
    with pytest.raises(CheckpointError, match="env=lm"):
        load_language_model(other)
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "checkpoint.pt").write_bytes(checkpoint.read_bytes())
    with pytest.raises(MissingPathError, match="tokenizer.json"):
        load_language_model(lone / "checkpoint.pt")


def test_lm_agent_as_a_distractor_of_the_glyph_society(checkpoint, glyph_checkpoint, tmp_path):
    from metarl.train import compose_config, run

    cfg = compose_config("env=society/glyph_sum", f"env.describer={glyph_checkpoint}", f"env.lm_checkpoint={checkpoint}",
                         "env.organisers=[alone,democracy]", "env.test_tasks=6", "progress=false")
    metrics = run(cfg, tmp_path)
    assert metrics["members"][-1] == "lm" and "lm_alone" in metrics["results"]
    assert metrics["test/lm_alone/accuracy"] <= 0.5 and metrics["test/democracy/accuracy"] >= 0.5
