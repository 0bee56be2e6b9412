"""scripts/sample_lm.py: generation streams through the carried state and equals re-reading the whole text."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from metarl.train import compose_config, run

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "sample_lm.py"


def load_script():
    spec = importlib.util.spec_from_file_location("sample_lm", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_greedy_streaming_equals_rereading_the_prefix(tmp_path, capsys):
    run(compose_config("env=lm", "agent=transformer", "agent.d_model=16", "agent.num_layers=1", "agent.num_heads=2",
                       "agent.d_ff=32", "env.batch_size=2", "env.unroll=16", "env.memory=64", "env.train_tokens=2000",
                       "env.eval_tokens=200", "optim.steps=2", "progress=false", "threads=1"), tmp_path)
    capsys.readouterr()
    script = load_script()
    model, tokenizer, _ = script.load(tmp_path / "checkpoint.pt", "cpu")
    prompt = script.prompt_ids(tokenizer, "def f(")
    streamed = script.sample(model, prompt, 12, temperature=0)
    ids = prompt.tolist()
    with torch.no_grad():
        for _ in range(12):  # the whole text so far, in one call from the initial state
            logits, _ = model(torch.tensor([ids]))
            ids.append(int(logits[0, -1].argmax()))
    assert streamed == ids[len(prompt):]
    assert script.main([str(tmp_path / "checkpoint.pt"), "--prompt", "x = ", "--tokens", "5", "--top-k", "3"]) == 0
    assert capsys.readouterr().out.startswith("x = ")
